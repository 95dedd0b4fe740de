// No single damaged drive takes a pool down (lunfs issue 11). Each metadata region of one drive
// in turn (the head label, the tail label, both, the checkpoint slots, the journal, the
// degraded-row log, the checksum table, one sector in every 64 KiB of the drive, the whole drive)
// is overwritten with other bytes on a closed pool with a LUN and a snapshot of it; then the pool
// is opened through Pool.open and the Controller, as a mount does. What it proves:
// - RAID-1 and RAID-5: the pool opens; the LUN and the snapshot read back byte for byte; a
//   drive with no good label is failed (status names it and why), is replaced and rebuilt, and
//   the pool is clean after; a damaged label is rewritten from the good one and counted;
// - RAID-0: a drive with no good label refuses the pool, naming the drive, the reason and the
//   LUNs; any other damage opens it, and every 4 KiB block of the LUN and snapshot reads either
//   exactly or EIO, never other bytes (or, where the snapshot metadata itself lay on a block that
//   no longer verifies, the open fails with EIO naming the drive);
// - a damaged checksum table page after an unclean shutdown (RAID-0, and RAID-5 running degraded,
//   where no redundancy could rebuild its blocks) is taken for a torn one: every byte reads;
// - which drive is which is never guessed: a drive of another pool and the old drive of a
//   replaced index are failed with the reason, not read;
// - a format-4 pool (one label) opens as it is, says so in status, and stays format 4.

import { describe, expect, it } from 'vitest';
import type { Drive } from '../../src/drive/drive.js';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { MissingDrive } from '../../src/drive/missing-drive.js';
import {
  decodeDriveHeader,
  driveHeaderBytes,
  encodeDriveHeader,
  tailLabelOffsetBytes,
  type DriveHeader,
} from '../../src/meta/drive-header.js';
import type { RaidLevel } from '../../src/meta/pool-metadata.js';
import type { BlockDevice } from '../../src/block/block-device.js';
import { isLunfsError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import { Pool } from '../../src/pool/pool.js';
import { firstDifference, patternBytes, readAll } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import { formatMemoryPool } from '../support/memory-pool.js';

const lunBytes = MiB;
const driveSizeBytes = 6 * MiB + 4096;

interface Built {
  drives: MemoryDrive[];
  /** What the LUN and its snapshot hold. */
  lun: Buffer;
  snapshot: Buffer;
  layout: DriveHeader;
}

/** A closed pool with LUN db (written whole), snapshot db@s, then part of db overwritten. */
async function build(raidLevel: RaidLevel, name: string, seed = 1): Promise<Built> {
  const memoryPool = await formatMemoryPool({
    raidLevel,
    driveCount: 3,
    driveSizeBytes,
    name,
    seed,
  });
  const controller = new Controller(memoryPool.pool, {
    cacheBytes: MiB,
    clock: memoryPool.clock,
    log: silentLogger(),
  });
  await controller.createLun('db', lunBytes);
  const snapshot = patternBytes(lunBytes, 1);
  await controller.stack('db').cache.write(0, snapshot);
  await controller.createSnapshot('db@s');
  const overwrite = patternBytes(384 * KiB, 2);
  await controller.stack('db').cache.write(128 * KiB + 512, overwrite);
  const lun = Buffer.from(snapshot);
  overwrite.copy(lun, 128 * KiB + 512);
  const layout = memoryPool.pool.layoutHeader;
  await controller.close();
  return { drives: memoryPool.drives, lun, snapshot, layout };
}

async function open(
  drives: MemoryDrive[],
  openDrive?: () => Promise<MemoryDrive>,
): Promise<Controller> {
  for (const drive of drives) drive.reopen();
  const clock = new FakeClock();
  const pool = await Pool.open(drives, { clock, log: silentLogger() });
  const controller = new Controller(pool, {
    cacheBytes: MiB,
    clock,
    log: silentLogger(),
    driveSettings: openDrive ? { openDrive } : undefined,
  });
  await controller.openSnapshots();
  await controller.drives.start();
  return controller;
}

async function expectExact(controller: Controller, built: Built, when: string): Promise<void> {
  expect(
    firstDifference(await readAll(controller.stack('db').cache), built.lun),
    `${when}: LUN db`,
  ).toBeUndefined();
  expect(
    firstDifference(await readAll(controller.snapshotVolume('db@s')), built.snapshot),
    `${when}: snapshot db@s`,
  ).toBeUndefined();
}

/** Reads every 4 KiB block: each is exact or fails with EIO. Returns how many failed. */
async function expectExactOrEio(
  device: BlockDevice,
  expected: Buffer,
  what: string,
): Promise<number> {
  let failed = 0;
  for (let offset = 0; offset < expected.length; offset += 4 * KiB) {
    const block = Buffer.alloc(4 * KiB);
    try {
      await device.read(offset, block);
    } catch (error) {
      expect(isLunfsError(error, 'EIO'), `${what} at ${offset}: ${String(error)}`).toBe(true);
      failed += 1;
      continue;
    }
    expect(
      firstDifference(block, expected.subarray(offset, offset + block.length), offset),
      `${what}: wrong bytes`,
    ).toBeUndefined();
  }
  return failed;
}

/** Writes other bytes over [offsetBytes, + lengthBytes) of a closed drive, durably. */
async function scribble(
  drive: MemoryDrive,
  offsetBytes: number,
  lengthBytes: number,
  seed: number,
): Promise<void> {
  drive.reopen();
  await drive.write(offsetBytes, patternBytes(lengthBytes, seed));
  await drive.flush();
  await drive.close();
}

type Region = {
  name: string;
  fails: boolean;
  damage: (drive: MemoryDrive, layout: DriveHeader) => Promise<void>;
};

const tail = (drive: MemoryDrive): number => tailLabelOffsetBytes(drive.sizeBytes);

const regions: Region[] = [
  {
    name: 'the head label',
    fails: false,
    damage: (drive) => scribble(drive, 0, driveHeaderBytes, 11),
  },
  {
    name: 'the tail label',
    fails: false,
    damage: (drive) => scribble(drive, tail(drive), driveHeaderBytes, 12),
  },
  {
    name: 'both labels (zeroed)',
    fails: true,
    damage: async (drive) => {
      drive.reopen();
      await drive.write(0, Buffer.alloc(driveHeaderBytes));
      await drive.write(tail(drive), Buffer.alloc(driveHeaderBytes));
      await drive.flush();
      await drive.close();
    },
  },
  {
    name: 'the checkpoint slots',
    fails: false,
    damage: (drive, layout) =>
      scribble(drive, layout.quorumOffsetBytes, 2 * layout.checkpointSlotBytes, 13),
  },
  {
    name: 'the journal',
    fails: false,
    damage: (drive, layout) =>
      scribble(
        drive,
        layout.quorumOffsetBytes + 2 * layout.checkpointSlotBytes,
        layout.journalBytes,
        14,
      ),
  },
  {
    name: 'the degraded-row log',
    fails: false,
    damage: (drive, layout) => scribble(drive, layout.rowLogOffsetBytes, layout.rowLogBytes, 15),
  },
  {
    name: 'the checksum table',
    fails: false,
    damage: (drive, layout) =>
      scribble(drive, layout.checksumTableOffsetBytes, layout.checksumTableBytes, 16),
  },
  {
    name: 'one sector in every 64 KiB',
    fails: false,
    damage: async (drive) => {
      drive.reopen();
      for (let offset = 0, index = 0; offset < drive.sizeBytes; offset += 64 * KiB, index += 1) {
        // Somewhere in the 64 KiB: the first sector of the drive too, but not the tail label (with
        // both labels gone the drive is another disk, the case below).
        const sector = Math.min(offset + ((index * 7919) % 128) * 512, tail(drive) - 512);
        await drive.write(sector, patternBytes(512, 100 + index));
      }
      await drive.flush();
      await drive.close();
    },
  },
  {
    name: 'the whole drive (another disk)',
    fails: true,
    damage: (drive) => scribble(drive, 0, drive.sizeBytes, 17),
  },
];

describe('one drive damaged, region by region, on a redundant pool', () => {
  for (const raidLevel of [1, 5] as const) {
    for (const region of regions) {
      it(`RAID-${raidLevel}, ${region.name}: opens ${region.fails ? 'degraded' : 'whole'}, every byte reads back${region.fails ? ', the drive is replaced and rebuilt' : ''}`, async () => {
        const built = await build(raidLevel, `r${raidLevel}-`);
        await region.damage(built.drives[1]!, built.layout);
        const replacement = new MemoryDrive('new1', driveSizeBytes);
        const controller = await open(built.drives, async () => replacement);
        const status = controller.status();
        if (region.fails) {
          expect(status.pool.state).toBe('degraded');
          expect(status.drives[1]).toMatchObject({
            state: 'failed',
            failedReason: expect.stringMatching(
              /unusable when the pool was opened: no good lunfs label \(head: .*; tail: .*\)/,
            ),
          });
        } else {
          expect(status.pool.state).toBe('online');
          expect(status.drives.map((drive) => drive.state)).toEqual(['online', 'online', 'online']);
        }
        if (region.name.endsWith('label')) {
          expect(status.drives[1]!.labelsDamagedAtOpen).toEqual([
            expect.stringMatching(new RegExp(`^${region.name.split(' ')[1]}: `)),
          ]);
          expect(status.integrity.labelRepairs).toBe(1);
        }
        await expectExact(controller, built, 'after open');
        if (region.name.includes('table') || region.name.includes('sector'))
          expect(controller.status().integrity.repairs).toBeGreaterThan(0);
        if (region.fails) {
          await controller.drives.replace('1', 'new1');
          await controller.drives.jobs.settle();
          expect(controller.status().pool.state).toBe('online');
          await expectExact(controller, built, 'after the rebuild');
          built.drives[1] = replacement;
        }
        await controller.close();
        const again = await open(built.drives);
        const clean = again.status();
        expect(clean.pool.state).toBe('online');
        expect(
          clean.drives.map((drive) => [drive.state, drive.labelsDamagedAtOpen, drive.metadataCopy]),
        ).toEqual([
          ['online', undefined, 'good'],
          ['online', undefined, 'good'],
          ['online', undefined, 'good'],
        ]);
        await expectExact(again, built, 'after reopen');
        await again.close();
      });
    }
  }
});

describe('one drive damaged on a RAID-0 pool', () => {
  for (const region of regions) {
    it(`${region.name}: ${region.fails ? 'refused, naming the drive, why and the LUNs' : 'every block reads exactly or EIO, never other bytes'}`, async () => {
      const built = await build(0, 'r0-');
      await region.damage(built.drives[1]!, built.layout);
      if (region.fails) {
        const writes = built.drives.map((drive) => drive.counters.writes);
        const outcome = await open(built.drives).then(
          () => 'opened',
          (error: unknown) => error,
        );
        expect(isLunfsError(outcome), String(outcome)).toBe(true);
        expect((outcome as Error).message).toMatch(
          /cannot be served: RAID-0 cannot do without drive\(s\) 1 \(r0-1: unusable when the pool was opened: no good lunfs label .*holding data of db, db \(snapshots\)/,
        );
        expect(
          built.drives.map((drive) => drive.counters.writes),
          'a refused open writes nothing',
        ).toEqual(writes);
        return;
      }
      const opened = await open(built.drives).then(
        (controller) => controller,
        (error: unknown) => error,
      );
      if (!(opened instanceof Controller)) {
        // Where a snapshot target's own metadata lay on a block that no longer verifies, the
        // open fails, naming the drive and why: EIO, never a guess.
        expect(region.name, String(opened)).toMatch(/table|sector/);
        expect(
          isLunfsError(opened, 'EIO') || isLunfsError(opened, 'ECORRUPT'),
          String(opened),
        ).toBe(true);
        expect((opened as Error).message).toMatch(
          /RAID-0.*checksum mismatch on drive r0-1.*no redundancy to repair from/,
        );
        return;
      }
      const controller = opened;
      expect(controller.status().pool.state).toBe('online');
      const failed =
        (await expectExactOrEio(controller.stack('db').cache, built.lun, 'LUN db')) +
        (await expectExactOrEio(
          controller.snapshotVolume('db@s'),
          built.snapshot,
          'snapshot db@s',
        ));
      if (region.name.includes('table'))
        expect(failed, 'blocks whose checksums were lost read EIO').toBeGreaterThan(0);
      if (!region.name.includes('table') && !region.name.includes('sector')) expect(failed).toBe(0);
      await controller.close();
    });
  }
});

describe('a damaged checksum table page after an unclean shutdown', () => {
  for (const raidLevel of [0, 5] as const) {
    const degraded = raidLevel === 5;
    it(`RAID-${raidLevel}${degraded ? ' running degraded' : ''}: taken for a page torn by the power cut: its checksums come from the data as it is, every byte reads`, async () => {
      const built = await build(raidLevel, `torn${raidLevel}-`);
      await scribble(
        built.drives[1]!,
        built.layout.checksumTableOffsetBytes,
        built.layout.checksumTableBytes,
        31,
      );
      // RAID-5 with drive 2 gone: nothing could rebuild drive 1's blocks from redundancy.
      const given = (): Drive[] =>
        built.drives.map((drive, index) =>
          degraded && index === 2 ? new MissingDrive(drive.path, 'pulled for the test') : drive,
        );
      for (const drive of built.drives) drive.reopen();
      const crashed = await Pool.open(given(), { clock: new FakeClock(), log: silentLogger() });
      await crashed.abandonSession(); // the session started (cleanShutdown false) and never closed
      for (const drive of built.drives) drive.reopen();
      const clock = new FakeClock();
      const pool = await Pool.open(given(), { clock, log: silentLogger() });
      const controller = new Controller(pool, { cacheBytes: MiB, clock, log: silentLogger() });
      await controller.openSnapshots();
      expect(controller.status().pool.state).toBe(degraded ? 'degraded' : 'online');
      await expectExact(controller, built, 'after the unclean shutdown');
      expect(controller.status().integrity.unrepairable).toBe(0);
      await controller.close();
    });
  }
});

describe('which drive is which', () => {
  it('a drive of another pool in the place of drive 1 is failed, not read', async () => {
    const built = await build(1, 'mine');
    const other = await build(1, 'other', 2);
    const drives = [built.drives[0]!, other.drives[1]!, built.drives[2]!];
    const controller = await open(drives);
    expect(controller.status().drives[1]).toMatchObject({
      state: 'failed',
      failedReason: expect.stringMatching(
        /unusable when the pool was opened: carries the label of another pool \(.*, drive 1\), not of pool/,
      ),
    });
    await expectExact(controller, built, 'degraded');
    await controller.close();
    // its own pool's writes only: compare with a fresh open below
    expect(other.drives[1]!.counters.writes).toBeGreaterThan(0);
    const otherAgain = await open(other.drives);
    expect(otherAgain.status().pool.state).toBe('online');
    await expectExact(otherAgain, other, 'the other pool, untouched');
    await otherAgain.close();
  });

  it('a drive with no good label is replaced by itself (the same file, rewritten) and rebuilt', async () => {
    const built = await build(1, 'inplace');
    const damaged = built.drives[1]!;
    await scribble(damaged, 0, damaged.sizeBytes, 41);
    const controller = await open(built.drives, async () => {
      damaged.reopen(); // closed when the pool stood a MissingDrive in for it
      return damaged;
    });
    expect(controller.status().drives[1]!.state).toBe('failed');
    await controller.drives.replace('1', damaged.path);
    await controller.drives.jobs.settle();
    expect(controller.status().drives[1]).toMatchObject({
      state: 'online',
      path: damaged.path,
      labelCopies: 2,
    });
    await expectExact(controller, built, 'after the rebuild in place');
    await controller.close();
    const again = await open(built.drives);
    expect(again.status().drives.map((drive) => drive.state)).toEqual([
      'online',
      'online',
      'online',
    ]);
    await expectExact(again, built, 'after reopen');
    await again.close();
  });

  it('the old drive of a replaced index, given again, is failed with the reason', async () => {
    const built = await build(5, 'old');
    const replacement = new MemoryDrive('new1', driveSizeBytes);
    const controller = await open(built.drives, async () => replacement);
    controller.pool.health.fail(1, new Error('pulled for the test'));
    await controller.drives.replace('1', 'new1');
    await controller.drives.jobs.settle();
    await controller.close();
    const again = await open(built.drives); // drive 1 is the old one again, label and all
    expect(again.status().drives[1]).toMatchObject({
      state: 'failed',
      failedReason: expect.stringMatching(
        /its label names drive .*, but the pool metadata has drive .* at index 1 \(an older label of this pool/,
      ),
    });
    await expectExact(again, built, 'with the old drive failed');
    await again.close();
  });
});

describe('a format-4 pool (one label per drive)', () => {
  /**
   * Makes a closed pool's drives look as format 4 made them: the head label at version 4, no tail
   * label.
   */
  async function toFormat4(drives: MemoryDrive[]): Promise<void> {
    for (const drive of drives) {
      drive.reopen();
      const head = Buffer.alloc(driveHeaderBytes);
      await drive.read(0, head);
      const decoded = decodeDriveHeader(head);
      if (!decoded.ok) throw new Error(decoded.reason);
      await drive.write(0, encodeDriveHeader({ ...decoded.header, formatVersion: 4 }));
      await drive.write(tailLabelOffsetBytes(drive.sizeBytes), Buffer.alloc(driveHeaderBytes));
      await drive.flush();
      await drive.close();
    }
  }

  it('opens as it is, says so in status, and stays format 4 (no tail label written)', async () => {
    const built = await build(1, 'v4-');
    await toFormat4(built.drives);
    const controller = await open(built.drives);
    const status = controller.status();
    expect(status.pool.formatVersion).toBe(4);
    expect(status.drives.map((drive) => [drive.labelCopies, drive.labelsDamagedAtOpen])).toEqual([
      [1, undefined],
      [1, undefined],
      [1, undefined],
    ]);
    await expectExact(controller, built, 'format 4');
    await controller.close();
    for (const drive of built.drives) {
      drive.reopen();
      const head = Buffer.alloc(driveHeaderBytes);
      const tailLabel = Buffer.alloc(driveHeaderBytes);
      await drive.read(0, head);
      await drive.read(tailLabelOffsetBytes(drive.sizeBytes), tailLabel);
      expect(head.readUInt32LE(8)).toBe(4);
      expect(tailLabel.every((byte) => byte === 0)).toBe(true);
      await drive.close();
    }
  });

  it('a damaged label of a format-4 drive fails the drive (it has no other); the pool opens degraded', async () => {
    const built = await build(1, 'v4d-');
    await toFormat4(built.drives);
    await scribble(built.drives[1]!, 0, driveHeaderBytes, 21);
    const controller = await open(built.drives);
    expect(controller.status().drives[1]).toMatchObject({
      state: 'failed',
      failedReason: expect.stringMatching(
        /no good lunfs label \(head: .*; tail: a format-4 label|no good lunfs label \(head: .*; tail: no lunfs drive header/,
      ),
    });
    await expectExact(controller, built, 'degraded format 4');
    await controller.close();
  });
});
