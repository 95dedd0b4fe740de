// Drive failure, degraded service, replacement with rebuild, silent corruption and scrub, on pools
// of simulated drives (seed 004 [0044]-[0046]): the whole stack (cache, thin volume, RStores,
// checksum filter) is real; only the drives are MemoryDrives, which fail (EIO on everything),
// flip bits at rest, and lose or tear unflushed writes in a power cut.
//
// - RAID-1 and RAID-5: a drive that fails under load loses nothing (reads reconstruct, writes go
//   on), the failure is durable, the pool reopens degraded without the drive and refuses once a
//   second drive of the set is gone; a replacement is rebuilt while the LUN is written, after
//   which another drive can fail without loss; metadata copies are back to three.
// - Bit flips in drive data are detected by the checksums, repaired from redundancy on read and
//   by scrub (counted); on RAID-0 they are EIO, never wrong bytes.
// - The write-intent record: a crash during RAID-5 writes followed by the loss of a drive never
//   makes a degraded read return data that was never written; RStores idle and flushed are
//   clean, and only dirty ones are resynchronised.

import { describe, expect, it } from 'vitest';
import type { Drive } from '../../src/drive/drive.js';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { MissingDrive } from '../../src/drive/missing-drive.js';
import type { RaidLevel } from '../../src/meta/pool-metadata.js';
import { SeededRandom } from '../../src/util/clock.js';
import { isLunfsError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import { Pool } from '../../src/pool/pool.js';
import { patternBytes } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import { FaultOnCueDrive } from '../support/fault-on-cue-drive.js';
import {
  formatMemoryPool,
  formatPoolOn,
  makeMemoryDrives,
  powerCut,
  sessionViews,
} from '../support/memory-pool.js';
import type { SessionDrive } from '../support/session-drive.js';

const lunBytes = 2 * MiB;

function controllerFor(pool: Pool, clock: FakeClock, newDrives: Drive[] = []): Controller {
  return new Controller(pool, {
    cacheBytes: MiB,
    clock,
    log: silentLogger(),
    random: () => 0.5,
    driveSettings: { openDrive: async () => newDrives.shift()! },
  });
}

async function writeLun(controller: Controller, seed: number): Promise<Buffer> {
  const data = patternBytes(lunBytes, seed);
  await controller.stack('db').cache.write(0, data);
  await controller.flushAll();
  return data;
}

/** Reads the LUN below its cache (so the RStores and drives are really read). */
async function readBelowCache(controller: Controller): Promise<Buffer> {
  const target = Buffer.alloc(lunBytes);
  await controller.stack('db').thin.read(0, target);
  return target;
}

describe.each([1, 5] as RaidLevel[])('RAID-%i with a failed drive', (raidLevel) => {
  it('serves every byte, takes writes, records the failure, reopens degraded, and refuses a second loss in the set', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel,
      driveCount: 4,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const controller = controllerFor(memory.pool, clock);
    await controller.createLun('db', lunBytes);
    const first = await writeLun(controller, 1);
    memory.drives[1]!.fail();
    expect(Buffer.compare(await readBelowCache(controller), first)).toBe(0);
    const second = await writeLun(controller, 2); // writes go on, degraded
    expect(Buffer.compare(await readBelowCache(controller), second)).toBe(0);
    // Thin allocation goes on too: new RStores are made degraded, with their member on the failed
    // drive.
    await controller.createLun('new', lunBytes);
    const fresh = patternBytes(lunBytes, 22);
    await controller.stack('new').cache.write(0, fresh);
    await controller.flushAll();
    const readNew = Buffer.alloc(lunBytes);
    await controller.stack('new').thin.read(0, readNew);
    expect(Buffer.compare(readNew, fresh)).toBe(0);
    const status = controller.status();
    expect(status.pool.state).toBe('degraded');
    expect(status.drives[1]!.state).toBe('failed');
    expect(status.drives[1]!.failedReason).toMatch(/simulated drive failure/);
    expect(status.pool.atRiskLuns).toContain('db');
    expect(status.luns[0]!.atRisk).toBe(true);
    await controller.close();

    // Reopen with drive 1 missing altogether: degraded, same data; the failure was durable.
    const drives: Drive[] = memory.drives.map((drive, index) =>
      index === 1 ? new MissingDrive('mem1', 'gone') : (drive.reopen(), drive),
    );
    const reopened = await Pool.open(drives, { clock, log: silentLogger() });
    expect(reopened.metadata.drives[1]!.state).toBe('failed');
    const again = controllerFor(reopened, clock);
    expect(Buffer.compare(await readBelowCache(again), second)).toBe(0);
    await again.stack('new').thin.read(0, readNew);
    expect(Buffer.compare(readNew, fresh)).toBe(0);
    // Three metadata copies again, none on the failed drive.
    await again.drives.start();
    expect(reopened.metadataCopyDrives.sort()).toEqual([0, 2, 3]);
    await again.close();

    // A second drive of the set missing: RAID-1 pairs on drives 1 and 2 lose both copies, RAID-5
    // rows two members.
    const worse: Drive[] = memory.drives.map((drive, index) =>
      index === 1 || index === 2
        ? new MissingDrive(`mem${index}`, 'gone')
        : (drive.reopen(), drive),
    );
    const refused = await Pool.open(worse, { clock, log: silentLogger() }).then(
      () => 'opened',
      (error: unknown) => error,
    );
    if (raidLevel === 5) {
      expect(isLunfsError(refused, 'ENOENT')).toBe(true);
      expect((refused as Error).message).toMatch(/cannot do without drive/);
    }
  });

  it('rebuilds a replacement while the LUN is written, then survives another failure in the set', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel,
      driveCount: 4,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const replacement = new MemoryDrive('new1', 8 * MiB);
    const controller = controllerFor(memory.pool, clock, [replacement]);
    await controller.createLun('db', lunBytes);
    await writeLun(controller, 3);
    memory.drives[1]!.fail();
    await controller.stack('db').cache.write(0, patternBytes(64 * KiB, 4)); // degraded write
    await controller.flushAll(); // the flush meets the failed drive
    expect(controller.status().drives[1]!.state).toBe('failed');
    // its RStores are made while drive 1 is out
    await controller.createLun('born-degraded', lunBytes);
    const degradedData = patternBytes(lunBytes, 23);
    await controller.stack('born-degraded').cache.write(0, degradedData);
    await controller.flushAll();
    const job = await controller.drives.replace('1', 'new1');
    // Writes during the rebuild.
    const during = patternBytes(lunBytes, 5);
    await controller.stack('db').cache.write(0, during);
    await controller.flushAll();
    const done = await controller.drives.jobs.wait(job.id);
    expect(done.state, done.error).toBe('done');
    expect(done.progress).toBe(1);
    expect(controller.status().drives[1]!.state).toBe('online');
    expect(controller.status().pool.state).toBe('online');
    expect(memory.pool.metadataCopyDrives.length).toBe(3);
    expect(Buffer.compare(await readBelowCache(controller), during)).toBe(0);
    // Every RAID-5 row consistent again, and the rebuilt drive's data is right: lose another drive.
    for (const record of memory.pool.metadata.rstores.values())
      expect(await memory.pool.rstore(record.id).firstInconsistentRow()).toBeUndefined();
    memory.drives[2]!.fail();
    expect(Buffer.compare(await readBelowCache(controller), during)).toBe(0);
    const readBack = Buffer.alloc(lunBytes);
    await controller.stack('born-degraded').thin.read(0, readBack);
    expect(Buffer.compare(readBack, degradedData)).toBe(0);
    await controller.close();
  });
  it('rebuilds the RStores made while the rebuild runs, so a second failure loses nothing', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel,
      driveCount: 3,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const replacement = new MemoryDrive('new1', 8 * MiB);
    const controller = controllerFor(memory.pool, clock, [replacement]);
    await controller.createLun('db', lunBytes);
    await writeLun(controller, 6);
    memory.drives[1]!.fail();
    await controller.flushAll(); // the flush meets the failed drive
    const before = new Set(memory.pool.metadata.rstores.keys());
    const job = await controller.drives.replace('1', 'new1');
    // New RStores, with a member on the drive being rebuilt, written before the rebuild ends.
    await controller.createLun('born-rebuilding', lunBytes);
    const data = patternBytes(lunBytes, 24);
    for (let offset = 0; offset < lunBytes; offset += 12 * KiB)
      await controller
        .stack('born-rebuilding')
        .cache.write(offset, data.subarray(offset, offset + 12 * KiB));
    await controller.flushAll();
    expect([...memory.pool.metadata.rstores.keys()].some((id) => !before.has(id))).toBe(true);
    const done = await controller.drives.jobs.wait(job.id);
    expect(done.state, done.error).toBe('done');
    for (const record of memory.pool.metadata.rstores.values())
      expect(await memory.pool.rstore(record.id).firstInconsistentRow()).toBeUndefined();
    memory.drives[2]!.fail();
    const readBack = Buffer.alloc(lunBytes);
    await controller.stack('born-rebuilding').thin.read(0, readBack);
    expect(Buffer.compare(readBack, data)).toBe(0);
    await controller.close();
  });
});

describe('silent corruption', () => {
  it.each([1, 5] as RaidLevel[])(
    'RAID-%i: flipped bits are caught by the checksums and repaired on read and by scrub',
    async (raidLevel) => {
      const clock = new FakeClock();
      const memory = await formatMemoryPool({
        raidLevel,
        driveCount: 3,
        driveSizeBytes: 8 * MiB,
        clock,
      });
      const controller = controllerFor(memory.pool, clock);
      await controller.createLun('db', lunBytes);
      const data = await writeLun(controller, 6);
      const psegArea = memory.pool.layoutHeader.psegAreaOffsetBytes;
      const random = new SeededRandom(42);
      // Flips on one drive at a time, in the first PSEGs (which hold the LUN): redundancy always
      // has a good copy.
      const flip = (driveIndex: number): void =>
        memory.drives[driveIndex]!.flipBit(
          psegArea + random.integer(3 * 256 * KiB),
          random.integer(8),
        );
      for (let index = 0; index < 40; index += 1) flip(0);
      expect(Buffer.compare(await readBelowCache(controller), data)).toBe(0);
      const afterRead = controller.status().integrity;
      expect(afterRead.checksumMismatches).toBeGreaterThan(0);
      expect(afterRead.repairs).toBeGreaterThan(0);
      expect(afterRead.unrepairable).toBe(0);
      // Flip more, then scrub: everything found is repaired; a second scrub finds nothing.
      // drive 0 again: flips the read did not meet are still there
      for (let index = 0; index < 20; index += 1) flip(0);
      const scrub = await controller.drives.jobs.wait(controller.drives.scrub().id);
      expect(scrub.state, scrub.error).toBe('done');
      const report = scrub.result as { checksumRepairs: number; unrepairable: number };
      expect(report.checksumRepairs).toBeGreaterThan(0);
      expect(report.unrepairable).toBe(0);
      const clean = await controller.drives.jobs.wait(controller.drives.scrub().id);
      expect(clean.result).toMatchObject({ checksumRepairs: 0, parityRepairs: 0, unrepairable: 0 });
      expect(Buffer.compare(await readBelowCache(controller), data)).toBe(0);
      await controller.close();
    },
  );

  it('RAID-0: a flipped bit is EIO, never wrong bytes', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel: 0,
      driveCount: 3,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const controller = controllerFor(memory.pool, clock);
    await controller.createLun('db', lunBytes);
    await writeLun(controller, 7);
    memory.drives[0]!.flipBit(memory.pool.layoutHeader.psegAreaOffsetBytes + 100, 3);
    const outcome = await readBelowCache(controller).then(
      () => 'read',
      (error: unknown) => error,
    );
    expect(isLunfsError(outcome, 'EIO')).toBe(true);
    expect(controller.status().integrity.unrepairable).toBeGreaterThan(0);
    await controller.close();
  });

  it('RAID-0: a failed drive is EIO for its data, and the pool will not open without it', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel: 0,
      driveCount: 3,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const controller = controllerFor(memory.pool, clock);
    await controller.createLun('db', lunBytes);
    await writeLun(controller, 8);
    await controller.close();
    const drives: Drive[] = memory.drives.map((drive, index) =>
      index === 2 ? new MissingDrive('mem2', 'gone') : (drive.reopen(), drive),
    );
    const refused = await Pool.open(drives, { clock, log: silentLogger() }).then(
      () => 'opened',
      (error: unknown) => error,
    );
    expect(isLunfsError(refused, 'ENOENT')).toBe(true);
    expect((refused as Error).message).toMatch(/RAID-0 cannot do without drive/);
    expect((refused as Error).message).toMatch(/db/);
  });
});

describe('RAID-0: a failed drive that comes back (issue 17)', () => {
  /**
   * A RAID-0 pool on two MemoryDrives with LUN db written whole; drive 1 then fails as told, and
   * the pool is closed.
   */
  async function failedRaid0(
    fail: (pool: Pool, controller: Controller) => Promise<void>,
  ): Promise<{ drives: MemoryDrive[]; clock: FakeClock; data: Buffer }> {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel: 0,
      driveCount: 2,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const controller = controllerFor(memory.pool, clock);
    await controller.createLun('db', lunBytes);
    const data = await writeLun(controller, 21);
    await fail(memory.pool, controller);
    await memory.pool.commit();
    expect(memory.pool.metadata.drives[1]!.state).toBe('failed');
    await controller.close({ dropUnwritable: true });
    for (const drive of memory.drives) drive.reopen();
    return { drives: memory.drives, clock, data };
  }

  async function openAndRead(
    drives: MemoryDrive[],
    clock: FakeClock,
    forceDegraded = false,
  ): Promise<Buffer> {
    const pool = await Pool.open(drives, { clock, log: silentLogger(), forceDegraded });
    const controller = controllerFor(pool, clock);
    expect(pool.health.failedDrives()).toEqual([]);
    const seen = await readBelowCache(controller);
    await controller.close();
    return seen;
  }

  it('absent and no write missed: back in service at the next open, every byte there, and at the open after', async () => {
    const { drives, clock, data } = await failedRaid0(async (pool) =>
      pool.health.fail(1, new Error('drive file moved away'), { absent: true }),
    );
    expect((await openAndRead(drives, clock)).equals(data)).toBe(true);
    for (const drive of drives) drive.reopen();
    expect((await openAndRead(drives, clock)).equals(data)).toBe(true);
  });

  it('absent with a missed write: refused naming the LUN; forced, it returns and the LUN reads (older data where the write missed)', async () => {
    const { drives, clock, data } = await failedRaid0(async (pool, controller) => {
      pool.health.fail(1, new Error('drive file moved away'), { absent: true });
      await controller.stack('db').cache.write(0, patternBytes(64 * KiB, 99));
      await expect(controller.flushAll()).rejects.toThrow(/out of service/);
      expect(pool.metadata.drives[1]!.missedWriteRStores!.length).toBeGreaterThan(0);
    });
    const refused = await Pool.open(drives, { clock, log: silentLogger() }).then(
      () => 'opened',
      (error: unknown) => error,
    );
    expect(isLunfsError(refused, 'EIO'), String(refused)).toBe(true);
    expect((refused as Error).message).toMatch(
      /drive 1 \(mem1\) is back with its own label, but writes meant for it were missed .*LUN\(s\) db.*--force-degraded/,
    );
    for (const drive of drives) drive.reopen();
    const seen = await openAndRead(drives, clock, true);
    expect(seen.subarray(64 * KiB).equals(data.subarray(64 * KiB))).toBe(true);
  });

  it('failed with an I/O error: refused even with no write missed; forced, it returns', async () => {
    const { drives, clock, data } = await failedRaid0(async (pool) =>
      pool.health.fail(1, new Error('EIO on read')),
    );
    const refused = await Pool.open(drives, { clock, log: silentLogger() }).then(
      () => 'opened',
      (error: unknown) => error,
    );
    expect((refused as Error).message).toMatch(
      /drive 1 \(mem1\) is back with its own label, but it left service after an I\/O error \(EIO on read\)/,
    );
    for (const drive of drives) drive.reopen();
    expect((await openAndRead(drives, clock, true)).equals(data)).toBe(true);
  });
});

/**
 * A RAID-5 pool on three MemoryDrives (with their session views) holding a LUN written whole with
 * old data.
 */
async function raid5PoolWithOldData(
  name: string,
  clock: FakeClock,
  seed: number,
): Promise<{
  inner: MemoryDrive[];
  views: SessionDrive[];
  pool: Pool;
  controller: Controller;
  old: Buffer;
}> {
  const inner = [0, 1, 2].map((index) => new MemoryDrive(`${name}${index}`, 8 * MiB));
  const views = sessionViews(inner);
  const pool = await formatPoolOn(views, { raidLevel: 5 }, clock);
  const controller = controllerFor(pool, clock);
  await controller.createLun('db', lunBytes);
  const old = await writeLun(controller, seed);
  return { inner, views, pool, controller, old };
}

/** Every sector of the LUN, read below the cache, holds its old or its fresh data. */
async function expectOldOrFresh(
  controller: Controller,
  old: Buffer,
  fresh: Buffer,
  what: string,
): Promise<void> {
  const seen = await readBelowCache(controller);
  for (let sector = 0; sector < lunBytes; sector += 512) {
    const got = seen.subarray(sector, sector + 512);
    const ok =
      got.equals(old.subarray(sector, sector + 512)) ||
      got.equals(fresh.subarray(sector, sector + 512));
    expect(ok, `${what}: sector ${sector / 512} holds data never written there`).toBe(true);
  }
}

describe('write intent (RAID-5 write hole)', () => {
  it('a power cut during writes, then a lost drive: every degraded read returns data that was written there', async () => {
    for (let seed = 1; seed <= 12; seed += 1) {
      const random = new SeededRandom(seed);
      const clock = new FakeClock();
      const setup = await raid5PoolWithOldData('hole', clock, 100 + seed);
      const { inner, old } = setup;
      // Small writes (read-modify-write of parity), in flight when the power goes.
      const fresh = patternBytes(lunBytes, 200 + seed);
      const pending: Promise<unknown>[] = [];
      for (let index = 0; index < 24; index += 1) {
        const offset = random.integer(lunBytes / 4096) * 4096;
        pending.push(
          setup.controller
            .stack('db')
            .thin.write(offset, fresh.subarray(offset, offset + 4096))
            .catch(() => undefined),
        );
      }
      for (let turn = 0; turn < random.integer(40); turn += 1) await Promise.resolve();
      const views = powerCut(setup.views, random);
      await Promise.allSettled(pending);
      const pool = await Pool.open(views, { clock, log: silentLogger() });
      for (const record of pool.metadata.rstores.values())
        expect(await pool.rstore(record.id).firstInconsistentRow()).toBeUndefined();
      const lost = random.integer(3);
      inner[lost]!.fail();
      await expectOldOrFresh(
        controllerFor(pool, clock),
        old,
        fresh,
        `seed ${seed}, after losing drive ${lost}`,
      );
      await pool.abandonSession();
    }
  });

  it("a power cut during writes while a drive is out: the degraded-row log keeps the missing drive's data as it was written", async () => {
    let replayedInAll = 0;
    for (let seed = 1; seed <= 12; seed += 1) {
      const random = new SeededRandom(seed);
      const clock = new FakeClock();
      const setup = await raid5PoolWithOldData('logged', clock, 300 + seed);
      const { inner, old } = setup;
      const lost = random.integer(3);
      inner[lost]!.fail();
      await setup.pool.commit(); // the flush finds the failure
      await setup.pool.commit(); // and this records it
      expect(setup.pool.health.state(lost)).toBe('failed');
      // Writes of every size, in flight or unflushed when the power goes: each changes data and
      // parity of rows whose third unit lives only as their XOR now.
      const fresh = patternBytes(lunBytes, 400 + seed);
      const pending: Promise<unknown>[] = [];
      for (let index = 0; index < 24; index += 1) {
        const length = [4096, 8192, 65536, 131072][random.integer(4)]!;
        const offset = random.integer((lunBytes - length) / 4096) * 4096;
        pending.push(
          setup.controller
            .stack('db')
            .thin.write(offset, fresh.subarray(offset, offset + length))
            .catch(() => undefined),
        );
      }
      for (let turn = 0; turn < 20 + random.integer(200); turn += 1) await Promise.resolve();
      const views = powerCut(setup.views, random);
      await Promise.allSettled(pending);
      const pool = await Pool.open(views, { clock, log: silentLogger() });
      replayedInAll += pool.rowLogCounters!.replayed;
      await expectOldOrFresh(
        controllerFor(pool, clock),
        old,
        fresh,
        `seed ${seed}, drive ${lost} out`,
      );
      await pool.abandonSession();
    }
    expect(replayedInAll).toBeGreaterThan(0); // the power cuts did leave records to replay
  });

  it('a drive found missing only after an unclean shutdown with RAID-5 writes in flight: refused, naming it; opens with it back, or when forced', async () => {
    const clock = new FakeClock();
    const setup = await raid5PoolWithOldData('dirty', clock, 21);
    const { inner, controller, old: data } = setup;
    let views = setup.views;
    // in flight at the power cut
    await controller.stack('db').thin.write(0, patternBytes(65536, 22));
    views = powerCut(views, new SeededRandom(5));
    const without = views.map((view, index) =>
      index === 2 ? new MissingDrive('dirty2', 'gone') : view,
    );
    const refused = await Pool.open(without, { clock, log: silentLogger() }).catch(
      (error: unknown) => error,
    );
    expect(isLunfsError(refused) && refused.code).toBe('ENOENT');
    expect((refused as Error).message).toMatch(
      /not shut down cleanly.*drive\(s\) 2 \(dirty2\).*missing now.*--force-degraded/,
    );
    // Refused means unchanged: the same drives, the drive back, open as after any crash.
    const back = await Pool.open(views, { clock, log: silentLogger() });
    const after = controllerFor(back, clock);
    const seen = await readBelowCache(after);
    expect(seen.subarray(65536).equals(data.subarray(65536))).toBe(true);
    await after.close();
    // A clean shutdown since: the drive's absence is no risk, the pool opens degraded.
    const reopened = sessionViews(inner).map((view, index) =>
      index === 2 ? new MissingDrive('dirty2', 'gone') : view,
    );
    const degraded = await Pool.open(reopened, { clock, log: silentLogger() });
    expect(degraded.health.state(2)).toBe('failed');
    await degraded.abandonSession();
    // Forced: opens degraded although dirty.
    const dirty = powerCut(sessionViews(inner), new SeededRandom(6));
    const forcedPool = await Pool.open(
      dirty.map((view, index) => (index === 1 ? new MissingDrive('dirty1', 'gone') : view)),
      { clock, log: silentLogger(), forceDegraded: true },
    );
    expect(forcedPool.health.state(1)).toBe('failed');
    await forcedPool.abandonSession();
  });

  it('RStores idle and flushed are marked clean; only dirty ones are resynchronised after a crash', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel: 5,
      driveCount: 3,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const controller = controllerFor(memory.pool, clock);
    await controller.createLun('db', lunBytes);
    await writeLun(controller, 9);
    expect(controller.status().writeIntent.dirtyRStores).toBeGreaterThan(0);
    clock.advance(6000);
    await memory.pool.commit();
    expect(controller.status().writeIntent.dirtyRStores).toBe(0);
    expect([...memory.pool.metadata.rstores.values()].some((record) => record.dirty)).toBe(false);
    // One more write dirties exactly the RStore it lands in.
    await controller.stack('db').thin.write(0, patternBytes(4096, 10));
    expect([...memory.pool.metadata.rstores.values()].filter((record) => record.dirty).length).toBe(
      1,
    );
    await controller.close();
  });
});

describe('a redundancy set with more drives out than its RAID level covers', () => {
  it('is refused even when it holds no data yet (RAID-5, two of three drives missing)', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel: 5,
      driveCount: 3,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    await memory.pool.close();
    const drives: Drive[] = memory.drives.map((drive, index) =>
      index === 1 ? (drive.reopen(), drive) : new MissingDrive(`mem${index}`, 'gone'),
    );
    const refused = await Pool.open(drives, { clock, log: silentLogger() }).then(
      () => 'opened',
      (error: unknown) => error,
    );
    expect(isLunfsError(refused, 'ENOENT')).toBe(true);
    expect((refused as Error).message).toMatch(/RAID-5 cannot do without drive\(s\) 0 .*2 /);
  });
});

describe('several redundancy sets', () => {
  it('a failure in one set leaves the LUNs of the other at no risk, and each set keeps its data', async () => {
    const clock = new FakeClock();
    const memory = await formatMemoryPool({
      raidLevel: 5,
      driveCount: 6,
      rssSize: 3,
      driveSizeBytes: 8 * MiB,
      clock,
    });
    const controller = controllerFor(memory.pool, clock);
    // Fill the first set's capacity with one LUN, so the second LUN lands in the other set.
    const perSetBytes = memory.pool.capacityBytes() / 2;
    await controller.createLun('first', perSetBytes);
    await controller.stack('first').cache.write(0, patternBytes(perSetBytes, 30));
    await controller.flushAll();
    await controller.createLun('second', lunBytes);
    const second = patternBytes(lunBytes, 31);
    await controller.stack('second').cache.write(0, second);
    await controller.flushAll();
    const setOf = (lun: string): Set<number> => {
      const sets = new Set<number>();
      memory.pool
        .lunByName(lun)
        .map.forEachMapped((_, entry) =>
          sets.add(memory.pool.metadata.rstores.get(entry.rstoreId)!.rssId),
        );
      return sets;
    };
    expect([...setOf('first')]).toEqual([0]);
    expect([...setOf('second')]).toEqual([1]);
    memory.drives[0]!.fail(); // set 0
    const readFirst = Buffer.alloc(perSetBytes);
    await controller.stack('first').thin.read(0, readFirst);
    expect(Buffer.compare(readFirst, patternBytes(perSetBytes, 30))).toBe(0);
    const status = controller.status();
    expect(status.pool.state).toBe('degraded');
    expect(status.pool.atRiskLuns).toEqual(['first']);
    expect(status.luns.find((lun) => lun.name === 'second')!.atRisk).toBe(false);
    memory.drives[4]!.fail(); // set 1: one failure per set is still no loss
    const readSecond = Buffer.alloc(lunBytes);
    await controller.stack('second').thin.read(0, readSecond);
    expect(Buffer.compare(readSecond, second)).toBe(0);
    await controller.close();
  });
});

describe('RAID-5 on drives that held old data', () => {
  it("computes each new RStore's parity over the old bytes before its first write, so a degraded read is right", async () => {
    const clock = new FakeClock();
    const drives = [0, 1, 2].map((index) => new MemoryDrive(`old${index}`, 8 * MiB));
    for (const [index, drive] of drives.entries()) {
      // an earlier life: nothing here is zero
      await drive.write(0, patternBytes(8 * MiB, 500 + index));
      await drive.flush();
    }
    const random = new SeededRandom(5);
    const pool = await Pool.format(drives, {
      raidLevel: 5,
      psegSizeBytes: 256 * KiB,
      allocationUnitBytes: 64 * KiB,
      stripeUnitBytes: 16 * KiB,
      drivesZeroed: false,
      clock,
      random: () => random.next(),
      log: silentLogger(),
    });
    const controller = controllerFor(pool, clock);
    await controller.createLun('db', lunBytes);
    // Small writes (read-modify-write) scattered over the LUN.
    const expected = Buffer.alloc(lunBytes);
    for (let index = 0; index < 64; index += 1) {
      const offset = random.integer(lunBytes / 4096) * 4096;
      const data = patternBytes(4096, 600 + index);
      data.copy(expected, offset);
      await controller.stack('db').cache.write(offset, data);
    }
    await controller.flushAll();
    expect([...pool.metadata.rstores.values()].some((record) => record.parityUnset)).toBe(false);
    for (const record of pool.metadata.rstores.values())
      expect(await pool.rstore(record.id).firstInconsistentRow()).toBeUndefined();
    drives[1]!.fail();
    expect(Buffer.compare(await readBelowCache(controller), expected)).toBe(0);
    await controller.close();
  });
});

/**
 * A RAID-5 pool on four MemoryDrives seen through FaultOnCueDrives (16 KiB stripe units, rows of
 * three data units), a LUN written whole (seed) and committed, and the RStore holding its first
 * unit: nothing held back or pending in it.
 */
async function raid5WithParkableDrives(seed: number): Promise<{
  memoryDrives: MemoryDrive[];
  views: FaultOnCueDrive[];
  controller: Controller;
  rstore: ReturnType<Pool['rstore']>;
}> {
  const clock = new FakeClock();
  const memoryDrives = makeMemoryDrives(4, 8 * MiB);
  const views = memoryDrives.map((drive) => new FaultOnCueDrive(drive));
  const pool = await formatPoolOn(views, { raidLevel: 5, clock });
  const controller = controllerFor(pool, clock);
  await controller.createLun('db', lunBytes);
  const thin = controller.stack('db').thin;
  thin.prepareWrite(0, lunBytes);
  await thin.write(0, patternBytes(lunBytes, seed));
  await pool.commit();
  return { memoryDrives, views, controller, rstore: pool.rstore(thin.lun.map.get(0)!.rstoreId) };
}

/** Whether work has not settled after 20 turns of the event loop (time for any I/O not parked). */
async function stillWaiting(work: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void work.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let turn = 0; turn < 20; turn += 1) await new Promise(setImmediate);
  return !settled;
}

describe('RAID-5 sequential unit writes', () => {
  // Found by the snapclone kill -9 end-to-end test (RAID-5): a clone read zeros for the last
  // 128 KiB of a unit BGCOPY had just copied. The copy held them back in its row; a commit's flush
  // then wrote them to the members by read-modify-write. The row had left the held rows before
  // that write's reads, and a read meanwhile went to the members, which did not hold them yet.
  it("a read waits while a flush writes a held row's units back: it sees the units it held", async () => {
    const { views, controller, rstore } = await raid5WithParkableDrives(40);
    // 16 KiB stripe units, rows of three data units: row 5, which the LUN's write left on the
    // members (a row kept in memory after a read-modify-write is not held back).
    const rowStart = 5 * 48 * KiB;
    const held = patternBytes(16 * KiB, 41);
    await rstore.write(rowStart, held); // the row's first data unit alone: held back
    // The write-back reads the old unit and parity first: the first of those reads waits.
    const parked = Promise.race(views.map((view) => view.parkRead(() => true)));
    const flushing = rstore.writeBackParity();
    await parked;
    for (const view of views) view.disarmRead();
    const seen = Buffer.alloc(16 * KiB);
    const reading = rstore.read(rowStart, seen);
    expect(
      await stillWaiting(reading),
      'the read waits for the held unit to reach its member',
    ).toBe(true);
    for (const view of views) if (view.hasParkedRead) view.releaseParkedRead();
    await Promise.all([flushing, reading]);
    expect(Buffer.compare(seen, held), 'the read sees the unit it held, not older bytes').toBe(0);
    await controller.close();
  });

  it('a flush waits while a write settles a held row: it returns once the held units are on the members', async () => {
    const { memoryDrives, views, controller, rstore } = await raid5WithParkableDrives(44);
    const rowStart = 5 * 48 * KiB; // as above: a row on the members, not in memory
    const held = patternBytes(16 * KiB, 45);
    await rstore.write(rowStart, held); // acknowledged, held back in memory
    // A 4 KiB write into the row settles it (read-modify-write of the held unit): its first read
    // waits.
    const parked = Promise.race(views.map((view) => view.parkRead(() => true)));
    const small = rstore.write(rowStart + 20 * KiB, patternBytes(4096, 46));
    await parked;
    for (const view of views) view.disarmRead();
    const flushing = rstore.flush();
    expect(
      await stillWaiting(flushing),
      'the flush waits for the held unit to reach its member',
    ).toBe(true);
    for (const view of views) if (view.hasParkedRead) view.releaseParkedRead();
    await Promise.all([small, flushing]);
    // What the flush covered survives a power cut that loses everything after it.
    for (const drive of memoryDrives) drive.crash(new SeededRandom(1));
    const member = Buffer.alloc(16 * KiB);
    let found = false;
    for (const drive of memoryDrives) {
      for (let offset = 0; offset + member.length <= drive.sizeBytes; offset += 4096) {
        await drive.read(offset, member);
        if (member.equals(held)) found = true;
      }
    }
    expect(found, 'the held unit is on a member after the flush').toBe(true);
    await controller.close().catch(() => undefined);
  });

  it('a flush waits while another writes a pending parity back: it returns once the parity is on its member', async () => {
    const { views, controller, rstore } = await raid5WithParkableDrives(47);
    // A read-modify-write of the row's second data unit: the row is kept in memory with its new
    // parity pending.
    await rstore.write(5 * 48 * KiB + 16 * KiB, patternBytes(16 * KiB, 48));
    // The first flush writes the parity back (a whole 16 KiB unit): that write waits.
    const parked = Promise.race(
      views.map((view) => view.parkWrite((_offset, data) => data.length === 16 * KiB)),
    );
    const first = rstore.flush();
    await parked;
    const second = rstore.flush();
    expect(
      await stillWaiting(second),
      'the second flush waits for the parity to reach its member',
    ).toBe(true);
    for (const view of views) if (view.hasParked) view.releaseParked();
    await Promise.all([first, second]);
    expect(await rstore.firstInconsistentRow()).toBeUndefined();
    await controller.close();
  });

  it('hold a row back until it is complete: reads see it at once, a flush writes it with its parity, a drive lost meanwhile loses nothing', async () => {
    for (const loseDrive of [false, true]) {
      const clock = new FakeClock();
      const memory = await formatMemoryPool({
        raidLevel: 5,
        driveCount: 4,
        driveSizeBytes: 8 * MiB,
        clock,
      });
      const controller = controllerFor(memory.pool, clock);
      await controller.createLun('db', lunBytes);
      const thin = controller.stack('db').thin;
      const expected = patternBytes(lunBytes, 700);
      thin.prepareWrite(0, lunBytes);
      await thin.write(0, expected);
      await memory.pool.commit();
      // 16 KiB stripe units, rows of three: a stream of unit-sized writes over 400 KiB, then one
      // more unit that leaves a row incomplete (held back), and a 4 KiB write into a held row.
      for (let offset = 64 * KiB; offset < 464 * KiB; offset += 16 * KiB) {
        const data = patternBytes(16 * KiB, 800 + offset / KiB);
        data.copy(expected, offset);
        await thin.write(offset, data);
      }
      const small = patternBytes(4096, 900);
      small.copy(expected, 448 * KiB + 4096);
      await thin.write(448 * KiB + 4096, small);
      const early = Buffer.alloc(lunBytes);
      await thin.read(0, early);
      expect(Buffer.compare(early, expected)).toBe(0);
      if (loseDrive) memory.drives[2]!.fail();
      expect(Buffer.compare(await readBelowCache(controller), expected)).toBe(0);
      await memory.pool.commit();
      if (!loseDrive)
        for (const record of memory.pool.metadata.rstores.values())
          expect(await memory.pool.rstore(record.id).firstInconsistentRow()).toBeUndefined();
      // the parity written with the rows rebuilds drive 1's units
      if (!loseDrive) memory.drives[1]!.fail();
      expect(Buffer.compare(await readBelowCache(controller), expected)).toBe(0);
      await controller.close();
    }
  });
});
