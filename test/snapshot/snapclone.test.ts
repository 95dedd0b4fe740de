// Snapclones and BGCOPY (issue 15, seed 004 [0100]-[0104]) through the controller on simulated
// drives (64 KiB allocation units and chunks). What it proves:
// - a clone reads its source (a LUN, a snapshot, another clone) as it stood at the instant, at
//   once, while BGCOPY runs; writes to the clone and to the source do not reach each other;
// - when BGCOPY ends the clone is an ordinary LUN: its base snapshot is gone, the source and its
//   snapshots can be deleted and the clone does not change, also after a reopen;
// - a power cut at any moment of BGCOPY is resumed at the next mount (resumeClones), and the clone
//   is exact; a clone removed during BGCOPY takes its base with it and gives back its space;
// - the space BGCOPY needs is reserved or the clone is refused (ENOSPC), and bad input changes
//   nothing.

import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import { Pool } from '../../src/pool/pool.js';
import { firstDifference, patternBytes, readAll } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import {
  formatMemoryPool,
  formatPoolOn,
  makeMemoryDrives,
  powerCut,
  sessionViews,
} from '../support/memory-pool.js';
import { controllerFor, errorCode, reopen } from '../support/controllers.js';

function written(image: Buffer, offset: number, data: Buffer): Buffer {
  const copy = Buffer.from(image);
  data.copy(copy, offset);
  return copy;
}

async function expectLun(controller: Controller, name: string, image: Buffer): Promise<void> {
  const difference = firstDifference(await readAll(controller.stack(name).cache), image);
  expect(difference, `${name}: ${difference}`).toBeUndefined();
}

describe('snapclones', () => {
  it('read their source at the instant, then become independent LUNs', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 1, driveSizeBytes: 24 * MiB });
    let controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', 2 * MiB);
    const db = () => controller.stack('db').cache;
    await db().write(0, patternBytes(1536 * KiB, 1)); // the last 512 KiB never written
    await db().write(700 * KiB, patternBytes(3000, 2)); // still in the cache
    await controller.createSnapshot('db@s1');
    const dbAtClone = await readAll(db());
    const job = await controller.createClone('db', 'c1');
    expect(job.kind).toBe('bgcopy');
    expect(controller.status().luns.find((lun) => lun.name === 'c1')?.clone?.source).toBe('db');
    // both written while BGCOPY runs
    const intoClone = patternBytes(70 * KiB, 3);
    const clone = () => controller.stack('c1').cache;
    await clone().write(60 * KiB, intoClone);
    await db().write(0, patternBytes(2 * MiB, 4));
    await controller.createSnapshot('c1@cs'); // a snapshot of the clone under BGCOPY
    const cloneImage = written(dbAtClone, 60 * KiB, intoClone);
    await expectLun(controller, 'c1', cloneImage);
    const done = await controller.drives.jobs.wait(job.id);
    expect(done.state, done.error).toBe('done');
    const status = controller.status();
    expect(status.luns.find((lun) => lun.name === 'c1')?.clone).toBeNull();
    expect(status.snapshots.map((snapshot) => snapshot.name).sort()).toEqual(['c1@cs', 'db@s1']);
    await expectLun(controller, 'c1', cloneImage);
    expect(
      firstDifference(await readAll(controller.snapshotVolume('c1@cs')), cloneImage),
    ).toBeUndefined();

    // the source and its snapshot go; the clone does not change
    const dbImage = await readAll(db());
    await controller.removeSnapshot('db@s1');
    await controller.removeLun('db');
    controller = await reopen(memoryPool, controller);
    await expectLun(controller, 'c1', cloneImage);
    await controller.removeSnapshot('c1@cs');
    await controller.removeLun('c1');
    expect(controller.status().pool.allocatedBytes).toBe(0);
    expect(dbImage.length).toBe(2 * MiB);
    await controller.close();
  });

  it('of a snapshot and of a clone under BGCOPY hold their source', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 5, driveSizeBytes: 24 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    const db = () => controller.stack('db').cache;
    await db().write(0, patternBytes(MiB, 1));
    await controller.createSnapshot('db@s1');
    const atS1 = await readAll(db());
    await db().write(100 * KiB, patternBytes(400 * KiB, 2));
    await db().flush();
    const fromSnapshot = await controller.createClone('db@s1', 'c1');
    const ofClone = await controller.createClone('c1', 'c2'); // c1's BGCOPY is under way
    await controller.stack('c1').cache.write(0, patternBytes(MiB, 3)); // c2 keeps c1's instant
    await controller.snapshotVolume('db@s1').write(0, patternBytes(8192, 4)); // c1 keeps s1's
    for (const job of [fromSnapshot, ofClone]) {
      const done = await controller.drives.jobs.wait(job.id);
      expect(done.state, done.error).toBe('done');
    }
    await expectLun(controller, 'c2', atS1);
    await expectLun(controller, 'c1', patternBytes(MiB, 3));
    expect(controller.listSnapshots().map((snapshot) => snapshot.name)).toEqual(['db@s1']);
    await controller.close();
  });

  it('resume BGCOPY after a power cut at any moment, and are exact', async () => {
    const outcomes = new Set<string>();
    for (let seed = 1; seed <= 12; seed += 1) {
      const drives = makeMemoryDrives(3, 24 * MiB);
      let views = sessionViews(drives);
      const pool = await formatPoolOn(views, { raidLevel: seed % 2 === 0 ? 5 : 0 });
      let controller = await controllerFor(pool);
      await controller.createLun('db', 2 * MiB);
      await controller.stack('db').cache.write(0, patternBytes(2 * MiB, seed));
      await controller.createClone('db', 'c');
      const image = await readAll(controller.stack('db').cache);
      await controller.stack('db').cache.write(0, patternBytes(2 * MiB, seed + 50));
      const random = new SeededRandom(seed);
      const ticks = random.integer(300);
      for (let tick = 0; tick < ticks; tick += 1)
        await new Promise((resolve) => setImmediate(resolve));
      views = powerCut(views, random);
      const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
      controller = await controllerFor(reopened);
      const pending = reopened.lunByName('c').cloneOf !== undefined;
      outcomes.add(pending ? 'resumed' : 'had ended');
      await expectLun(controller, 'c', image);
      await controller.resumeClones();
      for (const job of controller.drives.jobs.list())
        expect((await controller.drives.jobs.wait(job.id)).state).toBe('done');
      expect(reopened.lunByName('c').cloneOf).toBeUndefined();
      await expectLun(controller, 'c', image);
      expect(controller.snapshotSet('db').all()).toEqual([]); // the base is gone
      await controller.close();
    }
    expect(outcomes.has('resumed')).toBe(true);
  });

  // BGCOPY commits every 64 units: with 192 units of 64 KiB it commits twice before its end, so
  // the source's writes meet units the clone holds durably (their originals go to no base then).
  it('resume BGCOPY exact after a power cut while the source is written', async () => {
    const outcomes = new Set<string>();
    for (let seed = 1; seed <= 10; seed += 1) {
      const random = new SeededRandom(seed);
      const drives = makeMemoryDrives(3, 48 * MiB);
      let views = sessionViews(drives);
      const pool = await formatPoolOn(views, { raidLevel: seed % 2 === 0 ? 5 : 0 });
      let controller = await controllerFor(pool);
      const lunBytes = 12 * MiB;
      await controller.createLun('db', lunBytes);
      const db = () => controller.stack('db').cache;
      await db().write(0, patternBytes(lunBytes, seed));
      await db().flush();
      const image = patternBytes(lunBytes, seed);
      const job = await controller.createClone('db', 'c');
      // the cut comes past a random share of the copy, or after it
      const cutAtBytes = random.integer(job.totalBytes * 1.1);
      for (let tick = 0; tick < 10_000; tick += 1) {
        const status = controller.drives.jobs.list().find((each) => each.id === job.id)!;
        if (status.doneBytes >= cutAtBytes || status.state !== 'running') break;
        if (random.chance(0.3)) {
          const lengthBytes = (1 + random.integer(32)) * 4 * KiB;
          const offsetBytes = random.integer((lunBytes - lengthBytes) / 4096) * 4096;
          await db().write(offsetBytes, patternBytes(lengthBytes, seed * 1000 + tick));
        }
        if (random.chance(0.05)) await db().flush();
        if (random.chance(0.05)) await expectLun(controller, 'c', image);
        await new Promise((resolve) => setImmediate(resolve));
      }
      views = powerCut(views, random);
      const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
      controller = await controllerFor(reopened);
      const clone = reopened.lunByName('c');
      outcomes.add(clone.cloneOf === undefined ? 'had ended' : `resumed`);
      if (clone.cloneOf !== undefined && clone.map.mappedCount >= 64) outcomes.add('committed');
      await expectLun(controller, 'c', image);
      await controller.resumeClones();
      for (const job of controller.drives.jobs.list())
        expect((await controller.drives.jobs.wait(job.id)).state).toBe('done');
      await expectLun(controller, 'c', image);
      await controller.close();
    }
    expect([...outcomes].sort()).toEqual(['committed', 'had ended', 'resumed']);
  });

  // A read of the clone that chose its base waits for the chunk's lock behind a destage of the
  // source; meanwhile the clone's unit becomes its own and durable. The destage must still
  // preserve the original: the read reads the base after it.
  it('keep the base for a read of it under way when the unit becomes the clone own', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 24 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', 2 * MiB);
    const db = () => controller.stack('db').cache;
    const image = patternBytes(2 * MiB, 1);
    await db().write(0, image);
    await db().flush();
    const locks = controller.stack('db').snapshots.locks;
    const holdBgcopy = await locks.acquire(0); // BGCOPY waits at its first unit
    const job = await controller.createClone('db', 'c');
    const unitBytes = memoryPool.pool.allocationUnitBytes;
    const unitIndex = 5;
    const chunkIndex = (unitIndex * unitBytes) / controller.stack('db').snapshots.chunkBytes;
    const hold = await locks.acquire(chunkIndex);
    const ticks = async (count: number) => {
      for (let tick = 0; tick < count; tick += 1)
        await new Promise((resolve) => setImmediate(resolve));
    };
    // the source's destage of the unit's first chunk waits for the lock
    void db().write(unitIndex * unitBytes, patternBytes(4 * KiB, 2));
    const sourceFlushed = db().flush();
    await ticks(20);
    // a read of the clone's unit, from the base, waits behind it
    const cloneThin = controller.stack('c').thin;
    const read = Buffer.alloc(unitBytes);
    const reading = cloneThin.read(unitIndex * unitBytes, read);
    await ticks(20);
    // the unit becomes the clone's own (a whole-unit write: no read of the base) and durable
    const intoClone = patternBytes(unitBytes, 3);
    await cloneThin.write(unitIndex * unitBytes, intoClone);
    await cloneThin.flush();
    hold();
    await sourceFlushed;
    await reading;
    const atInstant = image.subarray(unitIndex * unitBytes, (unitIndex + 1) * unitBytes);
    expect(read.equals(atInstant) || read.equals(intoClone), 'the read: instant or new').toBe(true);
    holdBgcopy();
    expect((await controller.drives.jobs.wait(job.id)).state).toBe('done');
    await expectLun(controller, 'c', written(image, unitIndex * unitBytes, intoClone));
    await controller.close();
  });

  it('removed during BGCOPY take their base along and give back their space', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 24 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', 4 * MiB);
    await controller.stack('db').cache.write(0, patternBytes(4 * MiB, 1));
    await controller.stack('db').cache.flush();
    const before = controller.status().pool.allocatedBytes;
    await controller.createClone('db', 'c');
    expect(await errorCode(() => controller.removeLun('db'))).toBe('EBUSY'); // c reads db
    await controller.removeLun('c');
    expect(controller.snapshotSet('db').all()).toEqual([]);
    expect(controller.status().pool.allocatedBytes).toBe(before);
    await controller.removeLun('db');
    await controller.close();
  });

  it('refuse what the pool cannot hold, and bad input, changing nothing', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 8 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    const free = controller.status().pool.freeBytes;
    const size = Math.floor((free * 0.6) / (64 * KiB)) * 64 * KiB;
    await controller.createLun('big', size);
    await controller.stack('big').cache.write(0, patternBytes(size, 1));
    await controller.stack('big').cache.flush();
    const names = (): string[] => controller.status().luns.map((lun) => lun.name);
    expect(await errorCode(() => controller.createClone('big', 'c'))).toBe('ENOSPC');
    expect(names()).toEqual(['big']);
    expect(controller.snapshotSet('big').all()).toEqual([]);
    expect(await errorCode(() => controller.createClone('none', 'c'))).toBe('ENOENT');
    expect(await errorCode(() => controller.createClone('big@none', 'c'))).toBe('ENOENT');
    expect(await errorCode(() => controller.createClone('big', 'big'))).toBe('EEXIST');
    expect(await errorCode(() => controller.createClone('big', 'bad/name'))).toBe('EINVAL');
    expect(await errorCode(() => controller.createClone('big@', 'c'))).toBe('EINVAL');
    expect(names()).toEqual(['big']);
    await controller.close();
  });
});
