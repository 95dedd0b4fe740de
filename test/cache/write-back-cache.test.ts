// Targeted tests of the write-back cache that the conformance suite cannot stage: a write that
// covers part of a 4 KiB cache sector must fetch the rest of the sector from below, and the cache
// must not let that fetched (possibly older) data override what another write put in the sector
// meanwhile, even when the page was destaged and evicted while the fetch was in flight. A sector
// cut short by the device end must hold zeros past the end, so that when the device grows (a LUN
// resize) neither a read nor a destage shows what a recycled page buffer held. A destage that
// fails while a write of a newer snapshot epoch comes for its page keeps its data under its own
// epoch: what a snapshot of the newer epoch sees in the cache, and the epoch the retry is sent
// with. A read that goes below while a page is dirty returns the page's data even when the page
// is destaged and evicted before the read ends.

import { describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/block-device.js';
import { CacheBudget } from '../../src/cache/cache-budget.js';
import { WriteBackCache } from '../../src/cache/write-back-cache.js';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { silentLogger } from '../../src/util/logger.js';
import { isLunfsError, LunfsError } from '../../src/util/errors.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { readRange } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';

const pageBytes = 128 * KiB;

/** Passes every request to the device below; the test devices override what they stage. */
class PassThrough implements BlockDevice {
  constructor(protected readonly below: BlockDevice) {}

  get sizeBytes(): number {
    return this.below.sizeBytes;
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    return this.below.read(offsetBytes, target);
  }

  write(offsetBytes: number, data: Buffer): Promise<void> {
    return this.below.write(offsetBytes, data);
  }

  flush(): Promise<void> {
    return this.below.flush();
  }

  discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.below.discard(offsetBytes, lengthBytes);
  }
}

/** A block device whose reads can be parked, to hold a cache fill in flight. */
class ParkedReads extends PassThrough {
  private parked: Array<() => void> | undefined;

  park(): void {
    this.parked ??= [];
  }

  get parkedCount(): number {
    return this.parked?.length ?? 0;
  }

  release(): void {
    const waiting = this.parked ?? [];
    this.parked = undefined;
    for (const resume of waiting) resume();
  }

  override async read(offsetBytes: number, target: Buffer): Promise<void> {
    const snapshot = Buffer.alloc(target.length);
    await this.below.read(offsetBytes, snapshot); // the data as it is now...
    if (this.parked) await new Promise<void>((resume) => this.parked!.push(resume));
    snapshot.copy(target); // ...arrives later
  }
}

/** A device that can grow, as a thin volume does when its LUN is resized. */
class GrowingDevice extends PassThrough {
  constructor(
    below: BlockDevice,
    private size: number,
  ) {
    super(below);
  }

  override get sizeBytes(): number {
    return this.size;
  }

  override set sizeBytes(bytes: number) {
    this.size = bytes;
  }
}

/**
 * Records the epoch of every write (what the destage pipeline preserves originals by), and fails
 * one write on cue: failNextWrite() holds the next write until failHeld() fails it with EIO.
 */
class EpochRecorder extends PassThrough {
  readonly writes: Array<{ offsetBytes: number; data: Buffer; epoch: number | undefined }> = [];
  private holding: { arrived: () => void } | undefined;
  private held: (() => void) | undefined;

  failNextWrite(): Promise<void> {
    return new Promise((arrived) => (this.holding = { arrived }));
  }

  failHeld(): void {
    const fail = this.held!;
    this.held = undefined;
    fail();
  }

  override async write(offsetBytes: number, data: Buffer, epoch?: number): Promise<void> {
    const holding = this.holding;
    if (holding) {
      this.holding = undefined;
      await new Promise<void>((fail) => {
        this.held = fail;
        holding.arrived();
      });
      throw new LunfsError(
        'EIO',
        `simulated I/O error writing ${data.length} bytes at ${offsetBytes}`,
      );
    }
    this.writes.push({ offsetBytes, data: Buffer.from(data), epoch });
    return this.below.write(offsetBytes, data);
  }
}

function makeCache(
  below: BlockDevice,
  budget = new CacheBudget(2 * pageBytes, pageBytes),
  epoch?: () => number,
): WriteBackCache {
  return new WriteBackCache(below, {
    budget,
    pageBytes,
    dirtyLimitBytes: 2 * pageBytes,
    dirtyBackgroundBytes: 2 * pageBytes, // no destage unless a flush asks for it
    expireMs: 60_000,
    maxInflightDestages: 4,
    clock: new FakeClock(),
    log: silentLogger(),
    epoch,
  });
}

async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    return isLunfsError(error) ? error.code : String(error);
  }
}

async function settle(): Promise<void> {
  for (let turn = 0; turn < 20; turn += 1) await Promise.resolve();
}

describe('WriteBackCache partial-sector writes', () => {
  it('a sector fill that was in flight while the page was destaged and evicted does not undo a later write', async () => {
    const below = new ParkedReads(new MemoryDrive('cache-below', MiB));
    const cache = makeCache(below);
    below.park();
    // A: 100 bytes inside sector 0 of page 0; it must read the rest of sector 0 from below first.
    const writeA = cache.write(10, Buffer.alloc(100, 0xaa));
    await settle();
    expect(below.parkedCount).toBe(1);
    // B: the whole of sector 0, acknowledged while A's fill is parked.
    await cache.write(0, Buffer.alloc(4096, 0xbb));
    // B reaches below, page 0 becomes clean, and two dirty pages push it out of the cache.
    const flushed = cache.flush();
    await settle();
    await flushed;
    await cache.write(pageBytes, Buffer.alloc(pageBytes, 0x01));
    await cache.write(2 * pageBytes, Buffer.alloc(pageBytes, 0x02));
    below.release();
    await writeA;
    await cache.flush();
    const sector = await readRange(cache, 0, 4096);
    // Bytes 10..110 were written by both (either value is fair for concurrent writes); every other
    // byte of the sector was written only by B and must hold B's value.
    const outsideA = Buffer.concat([sector.subarray(0, 10), sector.subarray(110)]);
    expect(
      outsideA.equals(Buffer.alloc(4096 - 100, 0xbb)),
      `sector 0 after the race: ${sector.subarray(0, 16).toString('hex')}...${sector.subarray(110, 126).toString('hex')}`,
    ).toBe(true);
    const middle = sector.subarray(10, 110);
    expect(middle.every((byte) => byte === 0xaa) || middle.every((byte) => byte === 0xbb)).toBe(
      true,
    );
    await cache.close();
  });

  it('a read that began while a page was dirty returns its data, though the page was destaged and evicted meanwhile', async () => {
    // Found by the model test (seed 109987790): the read of a page not wholly valid goes below;
    // the page's destage landed and the page left the cache during that read, and the read kept
    // what below held before the destage: zeros over a write acknowledged before the read began.
    const below = new ParkedReads(new MemoryDrive('cache-below', MiB));
    const cache = makeCache(below);
    await cache.write(4096, Buffer.alloc(4096, 0xcc)); // sector 1 of page 0, acknowledged
    below.park();
    const reading = readRange(cache, 0, pageBytes); // not wholly valid: it reads below
    await settle();
    expect(below.parkedCount).toBe(1);
    const flushed = cache.flush(); // the page's data reaches below, and the page is clean
    await settle();
    await flushed;
    await cache.write(pageBytes, Buffer.alloc(pageBytes, 0x01)); // two pages push page 0 out
    await cache.write(2 * pageBytes, Buffer.alloc(pageBytes, 0x02));
    below.release();
    const page = await reading;
    expect(
      page.subarray(4096, 8192).equals(Buffer.alloc(4096, 0xcc)),
      `sector 1 read ${page.subarray(4096, 4104).toString('hex')}`,
    ).toBe(true);
    expect(page.subarray(0, 4096).equals(Buffer.alloc(4096))).toBe(true);
    await cache.close();
  });

  it('a device whose size ends inside a 4 KiB sector takes writes of its last bytes', async () => {
    const sizeBytes = 64 * KiB + 1536;
    const cache = makeCache(new MemoryDrive('cache-short-end', sizeBytes));
    await cache.write(sizeBytes - 1, Buffer.from([0x7f]));
    await cache.write(64 * KiB, Buffer.alloc(512, 0x33));
    await cache.flush();
    expect((await readRange(cache, 64 * KiB, 1536)).toString('hex')).toBe(
      Buffer.concat([Buffer.alloc(512, 0x33), Buffer.alloc(1023), Buffer.from([0x7f])]).toString(
        'hex',
      ),
    );
    await cache.close();
  });

  it('a device that grows past a sector cut short by its end reads zeros there, not a recycled page buffer', async () => {
    // Another LUN's page leaves its buffer, full of its data, in the shared pool.
    const budget = new CacheBudget(2 * pageBytes, pageBytes);
    const other = makeCache(new MemoryDrive('cache-other-lun', MiB), budget);
    await other.write(0, Buffer.alloc(pageBytes, 0xee));
    await other.close();
    const grown = new GrowingDevice(new MemoryDrive('cache-growing', MiB), 4 * KiB + 512);
    const cache = makeCache(grown, budget);
    await cache.write(0, Buffer.alloc(4096, 0x11)); // page 0 takes the recycled buffer
    await cache.discard(4096, 512); // the short last sector becomes valid (zeros) in the cache
    await cache.write(4096, Buffer.alloc(512, 0x22)); // and dirty
    grown.sizeBytes = 64 * KiB; // the LUN grows; the new space reads zeros
    const tail = await readRange(cache, 4608, 8192 - 4608);
    expect(
      tail.every((byte) => byte === 0),
      `cache read past the old end: ${tail.subarray(0, 8).toString('hex')}`,
    ).toBe(true);
    await cache.flush(); // destages the whole sector now that the device holds all of it
    const below = await readRange(grown, 4096, 4096);
    expect(below.toString('hex')).toBe(
      Buffer.concat([Buffer.alloc(512, 0x22), Buffer.alloc(4096 - 512)]).toString('hex'),
    );
    await cache.close();
  });
});

describe('WriteBackCache destage failure and snapshot epochs', () => {
  for (const d1Sector of [1, 5]) {
    it(`a destage of epoch 0 that fails after the epoch rose keeps epoch 0 (newer write on sector ${d1Sector})`, async () => {
      let epoch = 0;
      const below = new EpochRecorder(new MemoryDrive('cache-epochs', MiB));
      const cache = makeCache(below, undefined, () => epoch);
      const d0 = Buffer.alloc(8 * KiB, 0xd0); // sectors 0 and 1, epoch 0
      await cache.write(0, d0);
      const held = below.failNextWrite();
      const fsync = outcome(cache.flush());
      await held; // D0's destage is on its way below
      epoch = 1; // a snapshot instant
      const d1 = Buffer.alloc(4 * KiB, 0xd1);
      const overwrite = outcome(cache.write(d1Sector * 4 * KiB, d1));
      await settle();
      below.failHeld();
      expect(await fsync).toBe('EIO');
      // A write of the newer epoch is refused rather than mixed with the failed older data.
      const overwritten = await overwrite;
      expect(['ok', 'EIO']).toContain(overwritten);
      // What a snapshot of epoch 1 sees: below (zeros) with the cached data of epoch 0 laid over.
      const seen = Buffer.alloc(pageBytes);
      cache.overlayBefore(0, seen, 1);
      expect(
        seen.subarray(0, 8 * KiB).equals(d0),
        `snapshot view of D0 after the failure: ${seen.subarray(0, 8).toString('hex')}...${seen.subarray(4096, 4104).toString('hex')}`,
      ).toBe(true);
      expect(
        seen.subarray(8 * KiB).every((byte) => byte === 0),
        'D1 (epoch 1) in the snapshot view',
      ).toBe(true);
      await cache.flush(); // the retry
      for (const { offsetBytes, data, epoch: sentEpoch } of below.writes) {
        for (let at = 0; at < data.length; at += 4 * KiB) {
          const byte = data[at]!;
          const where = `write at ${offsetBytes + at} sent with epoch ${sentEpoch}`;
          if (byte === 0xd0) expect(sentEpoch, `D0: ${where}`).toBe(0);
          if (byte === 0xd1) expect(sentEpoch, `D1: ${where}`).toBe(1);
        }
      }
      expect(
        below.writes.some(({ data }) => data[0] === 0xd0),
        'D0 never reached below',
      ).toBe(true);
      const expected = Buffer.alloc(pageBytes);
      d0.copy(expected);
      if (overwritten === 'ok') d1.copy(expected, d1Sector * 4 * KiB);
      expect((await readRange(below, 0, pageBytes)).equals(expected)).toBe(true);
      await cache.close();
    });
  }
});
