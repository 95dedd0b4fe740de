// Targeted tests of the write-back cache that the conformance suite cannot stage: a write that
// covers part of a 4 KiB cache sector must fetch the rest of the sector from below, and the cache
// must not let that fetched (possibly older) data override what another write put in the sector
// meanwhile, even when the page was destaged and evicted while the fetch was in flight. A sector
// cut short by the device end must hold zeros past the end, so that when the device grows (a LUN
// resize) neither a read nor a destage shows what a recycled page buffer held.

import { describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/block-device.js';
import { CacheBudget, WriteBackCache } from '../../src/cache/write-back-cache.js';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { silentLogger } from '../../src/util/logger.js';
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

  set sizeBytes(bytes: number) {
    this.size = bytes;
  }
}

function makeCache(below: BlockDevice, budget = new CacheBudget(2 * pageBytes, pageBytes)): WriteBackCache {
  return new WriteBackCache(below, {
    budget,
    pageBytes,
    dirtyLimitBytes: 2 * pageBytes,
    dirtyBackgroundBytes: 2 * pageBytes, // no destage unless a flush asks for it
    expireMs: 60_000,
    maxInflightDestages: 4,
    clock: new FakeClock(),
    log: silentLogger(),
  });
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
    expect(outsideA.equals(Buffer.alloc(4096 - 100, 0xbb)), `sector 0 after the race: ${sector.subarray(0, 16).toString('hex')}...${sector.subarray(110, 126).toString('hex')}`).toBe(true);
    const middle = sector.subarray(10, 110);
    expect(middle.every((byte) => byte === 0xaa) || middle.every((byte) => byte === 0xbb)).toBe(true);
    await cache.close();
  });

  it('a device whose size ends inside a 4 KiB sector takes writes of its last bytes', async () => {
    const sizeBytes = 64 * KiB + 1536;
    const cache = makeCache(new MemoryDrive('cache-short-end', sizeBytes));
    await cache.write(sizeBytes - 1, Buffer.from([0x7f]));
    await cache.write(64 * KiB, Buffer.alloc(512, 0x33));
    await cache.flush();
    expect((await readRange(cache, 64 * KiB, 1536)).toString('hex')).toBe(Buffer.concat([Buffer.alloc(512, 0x33), Buffer.alloc(1023), Buffer.from([0x7f])]).toString('hex'));
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
    expect(tail.every((byte) => byte === 0), `cache read past the old end: ${tail.subarray(0, 8).toString('hex')}`).toBe(true);
    await cache.flush(); // destages the whole sector now that the device holds all of it
    const below = await readRange(grown, 4096, 4096);
    expect(below.toString('hex')).toBe(Buffer.concat([Buffer.alloc(512, 0x22), Buffer.alloc(4096 - 512)]).toString('hex'));
    await cache.close();
  });
});
