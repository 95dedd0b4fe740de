// A destage that fails with an I/O error while a snapshot is taken and the chunk is overwritten
// (issue 11), through the real stack: Controller, cache, destage pipeline, snapshot set, thin
// volume, RAID and checksum layers over MemoryDrives, one of them a FaultOnCueDrive that fails
// exactly one write. The order is forced, not timed:
//   1. data D0 is written (epoch 0) and an fsync sends it down; the drive holds that write;
//   2. a snapshot S is taken (the epoch rises; its creation flush waits for D0's destage);
//   3. D1 is written over part of D0's sectors, or over other sectors of the same page;
//   4. a read of S is issued (it waits below for the held write: the checksum filter's block
//      locks), then the held write fails.
// What lunfs does after such a failure (found here): a drive that returns an I/O error leaves
// service for good. On a plain single drive (RAID-0, one drive) the destage fails and cannot be
// retried: the fsync that was waiting reports EIO, the dirty data stays in the cache (the LUN
// reads it, later flushes keep reporting EIO), and S's creation fails, leaving no snapshot. On
// RAID-1 the other mirror takes the write: nothing fails above the RAID layer, S is created and
// the drive is marked failed. Either way:
// - a read of S returns exactly S's instant (D0 in, D1 out) or fails with EIO, never other data;
// - the LUN reads the newest data it acknowledged (D1 may be refused with EIO: a write of a newer
//   epoch waits for the destage of the older data of its page, and fails when that fails);
// - an older snapshot S0 (variant) reads its own instant, or EIO once its drive is gone.

import { describe, expect, it } from 'vitest';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { isLunfsError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import { firstDifference, patternBytes, readAll, readRange } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import { FaultOnCueDrive, writeContaining } from '../support/fault-on-cue-drive.js';
import { formatPoolOn, reopenMemoryPool } from '../support/memory-pool.js';

const lunBytes = MiB;
const sector = 4 * KiB;

/** 'ok', or the error's code (its message when it has none). */
async function settled(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    return isLunfsError(error) ? error.code : String(error);
  }
}

/** Lets every queued callback and promise run (memory drives finish within a few turns). */
async function drain(turns = 50): Promise<void> {
  for (let turn = 0; turn < turns; turn += 1) await new Promise((resolve) => setImmediate(resolve));
}

interface Race {
  raidLevel: 0 | 1;
  /** A snapshot S0 taken (and durable) before D0 is written. */
  olderSnapshot: boolean;
  /** Where D1 lands: over the second of D0's two sectors, or on other sectors of the page. */
  overwrite: 'failed sectors, in part' | 'other sectors of the page';
}

async function runRace(race: Race): Promise<void> {
  const driveCount = race.raidLevel === 1 ? 2 : 1;
  const memoryDrives = [...Array(driveCount).keys()].map(
    (index) => new MemoryDrive(`cue${index}`, 8 * MiB),
  );
  const drives = memoryDrives.map((drive) => new FaultOnCueDrive(drive));
  const pool = await formatPoolOn(drives, { raidLevel: race.raidLevel });
  let controller = new Controller(pool, {
    cacheBytes: MiB,
    clock: new FakeClock(),
    log: silentLogger(),
  });
  await controller.openSnapshots();
  await controller.createLun('db', lunBytes);
  const lun = () => controller.stack('db').cache;
  const set = controller.snapshotSet('db');
  const v = patternBytes(lunBytes, 1);
  await lun().write(0, v);
  await lun().flush();
  if (race.olderSnapshot) await controller.createSnapshot('db@s0');

  // 1. D0, two sectors at the start of chunk 0, on its way to the drive and held there.
  const d0 = patternBytes(2 * sector, 2);
  await lun().write(0, d0);
  const atS = Buffer.from(v);
  d0.copy(atS, 0);
  const held = drives[0]!.parkWrite(writeContaining(d0.subarray(0, 64)));
  const fsync = settled(lun().flush());
  await held;

  // 2. The snapshot instant.
  const epochBefore = set.epoch;
  const creating = settled(controller.createSnapshot('db@s'));
  for (let turn = 0; turn < 1000 && set.epoch === epochBefore; turn += 1)
    await new Promise((resolve) => setImmediate(resolve));
  expect(set.epoch, 'the snapshot instant did not come while the destage was held').toBe(
    epochBefore + 1,
  );

  // 3. D1, after the instant.
  const d1Offset = race.overwrite === 'failed sectors, in part' ? sector : 5 * sector;
  const d1 = patternBytes(sector, 3);
  const overwriting = settled(lun().write(d1Offset, d1));
  await drain();

  // 4. A read of S while D0's write is held: with no older snapshot the held destage holds no
  // chunk lock, so the read goes down and waits at the checksum filter for the held write; with
  // one, the destage holds chunk 0's lock and the read runs after the failure.
  const snapshotRead = settled(
    readRange(controller.snapshotVolume('db@s'), 0, 64 * KiB).then((bytes) => {
      const difference = firstDifference(bytes, atS.subarray(0, 64 * KiB));
      if (difference) throw new Error(`S read during the failure: ${difference}`);
    }),
  );
  await drain();
  drives[0]!.failParked();

  const overwritten = await overwriting;
  const newest = Buffer.from(atS);
  if (overwritten === 'ok') d1.copy(newest, d1Offset);
  else expect(overwritten, 'the write after the instant').toBe('EIO');
  const snapshotReadOutcome = await snapshotRead;
  expect(
    ['ok', 'EIO'],
    `S read issued while the destage was held: ${snapshotReadOutcome}`,
  ).toContain(snapshotReadOutcome);
  if (!race.olderSnapshot && race.raidLevel === 0) {
    // The read went down before the drive left service (else this race was not staged).
    expect(snapshotReadOutcome, 'the read of S did not reach the drive before the failure').toBe(
      'ok',
    );
  }
  expect(drives[0]!.failedWrites).toBe(1);
  expect(pool.health.failedDrives()).toEqual([0]);
  expect(
    firstDifference(await readRange(lun(), 0, 128 * KiB), newest.subarray(0, 128 * KiB)),
    'the LUN after the failure',
  ).toBeUndefined();

  if (race.raidLevel === 0) {
    // No redundancy: the destage fails and the drive is gone, so it cannot be retried.
    expect(await fsync).toBe('EIO');
    expect(await creating).toBe('EIO');
    expect(controller.listSnapshots().map((snapshot) => snapshot.name)).toEqual(
      race.olderSnapshot ? ['db@s0'] : [],
    );
    expect(
      controller.stack('db').cache.dirtyBytes,
      'the failed data was dropped from the cache',
    ).toBeGreaterThan(0);
    expect(await settled(lun().flush())).toBe('EIO');
    expect(await settled(lun().flush()), 'a second flush after the failure').toBe('EIO');
    expect(
      firstDifference(await readRange(lun(), 0, 128 * KiB), newest.subarray(0, 128 * KiB)),
      'the LUN after failed flushes',
    ).toBeUndefined();
    if (race.olderSnapshot) {
      const outcome = await settled(
        readAll(controller.snapshotVolume('db@s0')).then((bytes) =>
          expect(firstDifference(bytes, v), 'S0').toBeUndefined(),
        ),
      );
      expect(['ok', 'EIO']).toContain(outcome);
    }
    return;
  }

  // RAID-1: the other mirror took the write; nothing failed above the RAID layer.
  expect(await fsync).toBe('ok');
  expect(await creating).toBe('ok');
  expect(overwritten).toBe('ok');
  expect(
    firstDifference(await readAll(controller.snapshotVolume('db@s')), atS),
    'S after the failure',
  ).toBeUndefined();
  await lun().flush();
  expect(
    firstDifference(await readAll(controller.snapshotVolume('db@s')), atS),
    'S after the flush',
  ).toBeUndefined();
  // The chunk changes again: S keeps its instant, and so does S0.
  const d2 = patternBytes(3 * sector, 4);
  await lun().write(sector / 2, d2);
  d2.copy(newest, sector / 2);
  await lun().flush();
  const check = async (when: string): Promise<void> => {
    expect(
      firstDifference(await readAll(controller.snapshotVolume('db@s')), atS),
      `S ${when}`,
    ).toBeUndefined();
    if (race.olderSnapshot)
      expect(
        firstDifference(await readAll(controller.snapshotVolume('db@s0')), v),
        `S0 ${when}`,
      ).toBeUndefined();
    expect(
      firstDifference(await readAll(controller.stack('db').cache), newest),
      `the LUN ${when}`,
    ).toBeUndefined();
  };
  await check('after a later write');
  await controller.close();
  const reopened = await reopenMemoryPool(memoryDrives);
  controller = new Controller(reopened, {
    cacheBytes: MiB,
    clock: new FakeClock(),
    log: silentLogger(),
  });
  await controller.openSnapshots();
  expect(reopened.health.failedDrives()).toEqual([0]);
  await check('after a reopen');
  await controller.close();
}

describe('a destage that fails while a snapshot is taken and the chunk is overwritten', () => {
  for (const raidLevel of [0, 1] as const) {
    for (const olderSnapshot of [false, true]) {
      for (const overwrite of ['failed sectors, in part', 'other sectors of the page'] as const) {
        const drivesText = raidLevel === 0 ? 'one drive' : 'RAID-1';
        it(`${drivesText}, ${olderSnapshot ? 'a second snapshot' : 'one snapshot'}, D1 over ${overwrite}`, () =>
          runRace({ raidLevel, olderSnapshot, overwrite }));
      }
    }
  }
});
