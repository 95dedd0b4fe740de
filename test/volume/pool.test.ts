// The pool on simulated drives (3 drives of 6 MiB, 256 KiB PSEGs, 64 KiB allocation units).
// What it proves:
// - LUN create / resize / remove are durable and data survives a clean close and reopen;
// - every kind of bad input fails with its code (EINVAL, EFBIG, EEXIST, ENOENT) and changes
//   nothing: not the metadata in memory, not the journal, not the metadata after reopen;
// - a full pool fails the writer with ENOSPC at cache-write time, all or nothing; flush still
//   succeeds and every acknowledged byte of every LUN stays intact, also after reopen;
// - drives given in the wrong order, missing, half of another pool or none: EINVAL naming what
//   is wrong (one foreign drive among the pool's is a failed drive:
//   test/volume/label-damage.test.ts);
// - no space leak: once every LUN is removed, freeBytes is back to a fresh pool's, also after
//   reopen; while LUNs exist, free + allocated add up;
// - a LUN of the whole capacity fills the pool exactly (RAID-1 on an odd number of drives too),
//   and sequential allocation units get consecutive RSEGs;
// - a discard inside a dirty cache page never makes a later destage allocate (and fail ENOSPC);
// - a pool formatted on drives that held another pool opens as the new pool;
// - after a power cut with RAID-1 writes in flight, both mirrors read the same again.

import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/util/clock.js';
import { isLunfsError, type LunfsErrorCode } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { ThinVolume } from '../../src/map/thin-volume.js';
import { Controller } from '../../src/volume/controller.js';
import { Pool } from '../../src/pool/pool.js';
import { planRedundancySets } from '../../src/pool/pool-layout.js';
import { firstDifference, patternBytes, readAll, readRange } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import {
  cycleMemoryPool,
  describeMetadata,
  formatMemoryPool,
  formatPoolOn,
  makeMemoryDrives,
  reopenMemoryPool,
  sessionViews,
  type MemoryPool,
} from '../support/memory-pool.js';
import { ScriptedCrash } from '../support/scripted-crash.js';

const unitBytes = 64 * KiB;

function controllerFor(pool: Pool, clock = new FakeClock()): Controller {
  return new Controller(pool, { cacheBytes: MiB, clock, log: silentLogger() });
}

async function outcomeOf(action: () => Promise<unknown>): Promise<unknown> {
  try {
    await action();
    return 'resolved';
  } catch (error) {
    return error;
  }
}

describe('Pool LUN management', () => {
  it('creates, grows and removes LUNs durably; data survives close and reopen', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0 });
    let controller = controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    await controller.createLun('logs', 3 * MiB + 512);
    const data = patternBytes(MiB - 1000, 11);
    await controller.stack('db').cache.write(500, data);
    await controller.close();
    let pool = await reopenMemoryPool(memoryPool.drives);
    memoryPool.pool = pool;
    controller = controllerFor(pool);
    expect([...pool.metadata.luns.values()].map((lun) => [lun.name, lun.sizeBytes])).toEqual([
      ['db', MiB],
      ['logs', 3 * MiB + 512],
    ]);
    expect(
      firstDifference(await readRange(controller.stack('db').cache, 500, data.length), data, 500),
    ).toBeUndefined();
    await controller.resizeLun('db', 2 * MiB + 1536);
    expect(controller.stack('db').cache.sizeBytes).toBe(2 * MiB + 1536);
    await controller.stack('db').cache.write(2 * MiB + 1535, Buffer.from([0x42]));
    await controller.removeLun('logs');
    await controller.close();
    pool = await reopenMemoryPool(memoryPool.drives);
    controller = controllerFor(pool);
    expect([...pool.metadata.luns.values()].map((lun) => [lun.name, lun.sizeBytes])).toEqual([
      ['db', 2 * MiB + 1536],
    ]);
    const image = await readAll(controller.stack('db').cache);
    const expected = Buffer.alloc(2 * MiB + 1536);
    data.copy(expected, 500);
    expected[2 * MiB + 1535] = 0x42;
    expect(
      firstDifference(image, expected),
      'grown LUN: old data kept, new space zeros',
    ).toBeUndefined();
    await controller.createLun('logs', MiB); // the name is free again
    await controller.close();
  });

  it('takes a LUN of exactly the capacity, and a size of zero', async () => {
    const { pool } = await formatMemoryPool({ raidLevel: 1 });
    await pool.createLun('whole', pool.capacityBytes());
    await pool.createLun('empty', 0);
    expect(pool.lunByName('whole').sizeBytes).toBe(pool.capacityBytes());
    await pool.close();
  });

  for (const raidLevel of [0, 1] as const) {
    it(`RAID-${raidLevel}: bad input gets its error code and changes nothing, also after reopen`, async () => {
      const memoryPool = await formatMemoryPool({ raidLevel });
      const controller = controllerFor(memoryPool.pool);
      await controller.createLun('db', MiB);
      await controller.stack('db').cache.write(0, patternBytes(200 * KiB, 3));
      await controller.flushAll();
      const pool = memoryPool.pool;
      const capacity = pool.capacityBytes();
      const before = describeMetadata(pool.metadata);
      const freeBefore = pool.freeBytes();
      const journalBefore = pool.metadataJournalFillRatio;
      const cases: Array<[string, () => Promise<unknown>, LunfsErrorCode]> = [
        ['empty name', () => controller.createLun('', MiB), 'EINVAL'],
        ['name starting with a dash', () => controller.createLun('-x', MiB), 'EINVAL'],
        ['name starting with a dot', () => controller.createLun('.hidden', MiB), 'EINVAL'],
        ['name with a slash', () => controller.createLun('a/b', MiB), 'EINVAL'],
        ['name with a space', () => controller.createLun('a b', MiB), 'EINVAL'],
        ['name with a non-ASCII letter', () => controller.createLun('daten\u00fc', MiB), 'EINVAL'],
        ['name of 64 characters', () => controller.createLun('n'.repeat(64), MiB), 'EINVAL'],
        ['size not a multiple of 512', () => controller.createLun('odd', 1000), 'EINVAL'],
        ['negative size', () => controller.createLun('neg', -512), 'EINVAL'],
        ['fractional size', () => controller.createLun('frac', 1024.5), 'EINVAL'],
        ['NaN size', () => controller.createLun('nan', Number.NaN), 'EINVAL'],
        [
          'size one sector past the capacity',
          () => controller.createLun('huge', capacity + 512),
          'EFBIG',
        ],
        ['size of 1 PiB', () => controller.createLun('huger', 2 ** 50), 'EFBIG'],
        ['duplicate name', () => controller.createLun('db', MiB), 'EEXIST'],
        ['duplicate name with a bad size', () => controller.createLun('db', 1000), 'EEXIST'],
        ['remove an unknown LUN', () => controller.removeLun('nope'), 'ENOENT'],
        ['resize an unknown LUN', () => controller.resizeLun('nope', 2 * MiB), 'ENOENT'],
        ['stack of an unknown LUN', async () => controller.stack('nope'), 'ENOENT'],
        ['shrink', () => controller.resizeLun('db', MiB - 512), 'EINVAL'],
        [
          'resize to a size not a multiple of 512',
          () => controller.resizeLun('db', 2 * MiB + 1),
          'EINVAL',
        ],
        ['resize past the capacity', () => controller.resizeLun('db', capacity + 512), 'EFBIG'],
      ];
      for (const [label, action, code] of cases) {
        const outcome = await outcomeOf(action);
        expect(
          isLunfsError(outcome, code),
          `${label}: expected ${code}, got ${String(outcome)}`,
        ).toBe(true);
        expect(
          (outcome as Error).message.length,
          `${label}: the message says something`,
        ).toBeGreaterThan(10);
        expect(describeMetadata(pool.metadata), `${label} changed the metadata`).toEqual(before);
        expect(pool.freeBytes(), `${label} changed the free space`).toBe(freeBefore);
        expect(pool.metadataJournalFillRatio, `${label} committed something`).toBe(journalBefore);
      }
      await controller.close();
      const reopened = await reopenMemoryPool(memoryPool.drives);
      expect(describeMetadata(reopened.metadata)).toEqual(before);
      expect(reopened.freeBytes()).toBe(freeBefore);
      await reopened.close();
    });
  }
});

describe('a full pool', () => {
  for (const raidLevel of [0, 1] as const) {
    it(`RAID-${raidLevel}: the writer gets ENOSPC at write time, all or nothing, and no acknowledged data is harmed`, async () => {
      const memoryPool = await formatMemoryPool({ raidLevel });
      const controller = controllerFor(memoryPool.pool);
      const pool = memoryPool.pool;
      const capacity = pool.capacityBytes();
      const lunBytes = Math.floor((capacity * 2) / 3 / unitBytes) * unitBytes;
      await controller.createLun('first', lunBytes);
      await controller.createLun('second', lunBytes);
      const first = controller.stack('first').cache;
      const second = controller.stack('second').cache;
      const firstData = patternBytes(lunBytes, 21);
      await first.write(0, firstData);
      await first.flush();
      // Fill the second LUN in 4-unit chunks, each starting 100 bytes into a unit, until ENOSPC.
      const chunkBytes = 4 * unitBytes;
      const secondExpected = Buffer.alloc(lunBytes);
      let failedAt = -1;
      let failure: unknown;
      for (let offset = 100; offset + chunkBytes <= lunBytes; offset += chunkBytes) {
        const chunk = patternBytes(chunkBytes, offset);
        const freeBefore = pool.freeBytes();
        try {
          await second.write(offset, chunk);
        } catch (error) {
          failedAt = offset;
          failure = error;
          expect(pool.freeBytes(), 'a refused write takes no space (all or nothing)').toBe(
            freeBefore,
          );
          expect(freeBefore, 'ENOSPC only when the chunk does not fit').toBeLessThan(5 * unitBytes);
          break;
        }
        chunk.copy(secondExpected, offset);
      }
      expect(failedAt, 'the pool filled up').toBeGreaterThan(0);
      expect(
        isLunfsError(failure, 'ENOSPC'),
        `the writer sees ENOSPC, got ${String(failure)}`,
      ).toBe(true);
      // Flush works: nothing was acknowledged that cannot be destaged.
      await controller.flushAll();
      expect(
        firstDifference(await readAll(second), secondExpected),
        'second LUN after ENOSPC',
      ).toBeUndefined();
      expect(
        firstDifference(await readAll(first), firstData),
        'first LUN after ENOSPC',
      ).toBeUndefined();
      // Overwriting allocated space still works on a full pool.
      const overwrite = patternBytes(3 * unitBytes, 99);
      await first.write(unitBytes - 7, overwrite);
      overwrite.copy(firstData, unitBytes - 7);
      await controller.close();
      const reopened = await reopenMemoryPool(memoryPool.drives);
      const again = controllerFor(reopened);
      expect(
        firstDifference(await readAll(again.stack('first').cache), firstData),
        'first LUN after reopen',
      ).toBeUndefined();
      expect(
        firstDifference(await readAll(again.stack('second').cache), secondExpected),
        'second LUN after reopen',
      ).toBeUndefined();
      // Space comes back with the first LUN: the refused write now succeeds.
      await again.removeLun('first');
      const chunk = patternBytes(chunkBytes, failedAt);
      await again.stack('second').cache.write(failedAt, chunk);
      await again.flushAll();
      expect(
        firstDifference(await readRange(again.stack('second').cache, failedAt, chunkBytes), chunk),
      ).toBeUndefined();
      await again.close();
    });
  }
});

describe('a discard on a nearly full pool', () => {
  it('a discarded unit inside a dirty cache page is not allocated again by the destage of its zeros', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0 });
    const controller = controllerFor(memoryPool.pool);
    const pool = memoryPool.pool;
    await controller.createLun('a', MiB);
    await controller.createLun('filler', pool.capacityBytes());
    const a = controller.stack('a').cache;
    // One 128 KiB cache page over two allocation units, dirty; then the second unit is discarded
    // (a whole unit, but only half of the page).
    const data = patternBytes(2 * unitBytes, 8);
    await a.write(0, data);
    await a.discard(unitBytes, unitBytes);
    data.fill(0, unitBytes);
    // Another LUN takes every free RSEG that is left.
    const filler = controller.stack('filler').cache;
    const freeUnits = pool.freeBytes() / unitBytes;
    await filler.write(0, patternBytes(freeUnits * unitBytes, 9));
    expect(pool.freeBytes()).toBe(0);
    await expect(filler.write(freeUnits * unitBytes, Buffer.alloc(1))).rejects.toMatchObject({
      code: 'ENOSPC',
    });
    // Flushing the first LUN must not need space: its writes were all acknowledged with space
    // reserved.
    await a.flush();
    await controller.flushAll();
    expect(firstDifference(await readRange(a, 0, 2 * unitBytes), data)).toBeUndefined();
    await controller.close();
    const reopened = await reopenMemoryPool(memoryPool.drives);
    expect(
      firstDifference(
        await readRange(controllerFor(reopened).stack('a').cache, 0, 2 * unitBytes),
        data,
      ),
    ).toBeUndefined();
    await reopened.close();
  });
});

describe('Pool.open with the wrong drives', () => {
  async function closedPool(): Promise<MemoryPool> {
    const memoryPool = await formatMemoryPool({
      raidLevel: 1,
      driveCount: 4,
      driveSizeBytes: 5 * MiB,
      name: 'ord',
    });
    await memoryPool.pool.createLun('keep', MiB);
    await memoryPool.pool.close();
    return memoryPool;
  }

  it('refuses with EINVAL saying what is wrong, and writes nothing', async () => {
    const memoryPool = await closedPool();
    const [d0, d1, d2, d3] = memoryPool.drives as [
      (typeof memoryPool.drives)[0],
      (typeof memoryPool.drives)[0],
      (typeof memoryPool.drives)[0],
      (typeof memoryPool.drives)[0],
    ];
    const other = await formatMemoryPool({
      raidLevel: 1,
      driveCount: 4,
      driveSizeBytes: 5 * MiB,
      seed: 2,
      name: 'other',
    });
    const cases: Array<[string, typeof memoryPool.drives, RegExp]> = [
      [
        'two drives swapped',
        [d1, d0, d2, d3],
        /wrong order.*ord1 is drive 1 of the pool but was given as drive 0/,
      ],
      ['the last drive missing', [d0, d1, d2], /4 drives but 3 were given.*missing drive index 3/],
      ['the first drive missing', [d1, d2, d3], /4 drives but 3 were given.*missing drive index 0/],
      ['a middle drive missing', [d0, d1, d3], /4 drives but 3 were given.*missing drive index 2/],
      [
        'one drive given twice',
        [d0, d1, d1, d3],
        /ord1 is drive 1 of the pool but was given as drive 2/,
      ],
      [
        'half the drives of another pool',
        [d0, d1, other.drives[2]!, other.drives[3]!],
        /labels of different pools \(pool .* on ord0, ord1; pool .* on other2, other3\).*cannot tell/,
      ],
      ['no drives', [], /no drives given/],
    ];
    const writesBefore = memoryPool.drives.map((drive) => drive.counters.writes);
    for (const [label, drives, message] of cases) {
      for (const drive of memoryPool.drives) drive.reopen();
      const outcome = await outcomeOf(() =>
        Pool.open(drives, { clock: new FakeClock(), log: silentLogger() }),
      );
      expect(
        isLunfsError(outcome, 'EINVAL'),
        `${label}: expected EINVAL, got ${String(outcome)}`,
      ).toBe(true);
      expect((outcome as Error).message, label).toMatch(message);
    }
    expect(
      memoryPool.drives.map((drive) => drive.counters.writes),
      'a refused open writes nothing',
    ).toEqual(writesBefore);
    const pool = await reopenMemoryPool(memoryPool.drives);
    expect(pool.lunByName('keep').sizeBytes).toBe(MiB);
    await pool.close();
    await other.pool.close();
  });
});

describe('allocation', () => {
  for (const raidLevel of [0, 1] as const) {
    it(`RAID-${raidLevel} on three drives: a LUN of the whole capacity can be written end to end`, async () => {
      const memoryPool = await formatMemoryPool({ raidLevel });
      const controller = controllerFor(memoryPool.pool);
      const capacity = memoryPool.pool.capacityBytes();
      // 12 PSEGs per drive
      expect(capacity).toBe(raidLevel === 0 ? 3 * 12 * 256 * KiB : ((3 * 12) / 2) * 256 * KiB);
      await controller.createLun('all', capacity);
      const cache = controller.stack('all').cache;
      const chunkBytes = 256 * KiB;
      for (let offset = 0; offset < capacity; offset += chunkBytes)
        await cache.write(offset, patternBytes(chunkBytes, offset));
      await cache.flush();
      expect(memoryPool.pool.freeBytes()).toBe(0);
      for (let offset = 0; offset < capacity; offset += chunkBytes) {
        expect(
          firstDifference(
            await readRange(cache, offset, chunkBytes),
            patternBytes(chunkBytes, offset),
            offset,
          ),
        ).toBeUndefined();
      }
      await controller.close();
    });
  }

  it('binds sequential allocation units to consecutive RSEGs (seed 004 [0067])', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0 });
    const controller = controllerFor(memoryPool.pool);
    await controller.createLun('seq', 2 * MiB);
    await controller.createLun('other', MiB);
    // Another LUN takes a few RSEGs first, so the sequential LUN does not start at RSEG 0.
    await controller.stack('other').cache.write(0, patternBytes(3 * unitBytes, 1));
    await controller.flushAll();
    for (let unit = 0; unit < 16; unit += 1) {
      await controller.stack('seq').cache.write(unit * unitBytes, patternBytes(unitBytes, unit));
      if (unit % 5 === 0) await controller.flushAll();
    }
    await controller.flushAll();
    const entries: Array<[number, number]> = [];
    memoryPool.pool
      .lunByName('seq')
      .map.forEachMapped((_, entry) => entries.push([entry.rstoreId, entry.rsegIndex]));
    expect(entries).toHaveLength(16);
    let breaks = 0;
    for (let index = 1; index < entries.length; index += 1) {
      const [rstoreId, rsegIndex] = entries[index]!;
      const [previousRStore, previousRseg] = entries[index - 1]!;
      if (rstoreId === previousRStore && rsegIndex === previousRseg + 1) continue;
      breaks += 1;
      expect(previousRseg, `unit ${index} left RStore ${previousRStore} before it was full`).toBe(
        11,
      );
    }
    expect(breaks).toBeLessThanOrEqual(2);
    await controller.close();
  });
});

describe('space accounting', () => {
  for (const raidLevel of [0, 1] as const) {
    it(`RAID-${raidLevel}: no space leaks; free space returns to the fresh pool's after every LUN is removed, also after reopen`, async () => {
      const memoryPool = await formatMemoryPool({ raidLevel });
      const freshFreeBytes = memoryPool.pool.freeBytes();
      expect(freshFreeBytes).toBe(memoryPool.pool.capacityBytes());
      const random = new SeededRandom(raidLevel + 17);
      let controller = controllerFor(memoryPool.pool);
      const names = ['a', 'b', 'c'];
      for (const name of names) await controller.createLun(name, 2 * MiB + 1536);
      for (let step = 0; step < 60; step += 1) {
        const name = names[random.integer(names.length)]!;
        const cache = controller.stack(name).cache;
        const offset = random.integer(cache.sizeBytes - 1);
        const length = 1 + random.integer(Math.min(200 * KiB, cache.sizeBytes - offset));
        if (random.chance(0.25)) await cache.discard(offset, length);
        // ENOSPC is fine here
        else await outcomeOf(() => cache.write(offset, patternBytes(length, step)));
        if (random.chance(0.2)) await controller.flushAll();
      }
      await controller.flushAll();
      const allocated = names.reduce(
        (sum, name) => sum + controller.stack(name).thin.allocatedBytes,
        0,
      );
      expect(allocated).toBeGreaterThan(0);
      if (raidLevel === 0)
        expect(memoryPool.pool.freeBytes() + allocated, 'free + allocated = capacity').toBe(
          freshFreeBytes,
        );
      // A LUN removed with unflushed data in its cache, one removed after a flush, one after
      // reopen.
      await controller.stack('a').cache.write(MiB + 3, patternBytes(300 * KiB, 1));
      await controller.removeLun('a');
      await controller.removeLun('b');
      await controller.close();
      controller = controllerFor(await cycleMemoryPool(memoryPool));
      await controller.stack('c').cache.write(0, patternBytes(100 * KiB, 2));
      await controller.removeLun('c');
      expect(memoryPool.pool.freeBytes(), 'after removing every LUN').toBe(freshFreeBytes);
      await controller.close();
      const reopened = await cycleMemoryPool(memoryPool);
      expect(reopened.freeBytes(), 'after removing every LUN and reopening').toBe(freshFreeBytes);
      await reopened.close();
    });
  }

  it('discarding whole allocation units gives their space back once flushed', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0 });
    const controller = controllerFor(memoryPool.pool);
    const fresh = memoryPool.pool.freeBytes();
    await controller.createLun('d', 2 * MiB);
    const cache = controller.stack('d').cache;
    await cache.write(0, patternBytes(MiB, 4));
    await cache.flush();
    expect(memoryPool.pool.freeBytes()).toBe(fresh - MiB);
    await cache.discard(unitBytes, MiB - unitBytes);
    await cache.flush();
    expect(memoryPool.pool.freeBytes()).toBe(fresh - unitBytes);
    await controller.close();
    expect((await cycleMemoryPool(memoryPool)).freeBytes()).toBe(fresh - unitBytes);
    await memoryPool.pool.close();
  });
});

describe('Pool.format', () => {
  it('on drives that held another pool, opens as the new pool', async () => {
    const old = await formatMemoryPool({ raidLevel: 0, seed: 5, name: 'reused' });
    const controller = controllerFor(old.pool);
    await controller.createLun('old', MiB);
    for (let round = 0; round < 3; round += 1) {
      await controller.stack('old').cache.write(round * 100 * KiB, patternBytes(100 * KiB, round));
      await controller.flushAll();
    }
    await controller.close();
    for (const drive of old.drives) drive.reopen();
    const fresh = await formatPoolOn(old.drives, { raidLevel: 1, seed: 6 });
    const freshUuid = fresh.metadata.config.poolUuid;
    expect(fresh.metadata.luns.size).toBe(0);
    await fresh.createLun('new', MiB);
    await fresh.close();
    const reopened = await reopenMemoryPool(old.drives);
    expect(reopened.metadata.config.poolUuid).toBe(freshUuid);
    expect([...reopened.metadata.luns.values()].map((lun) => lun.name)).toEqual(['new']);
    expect(reopened.copyReports.map((report) => report.state)).toEqual(['good', 'good', 'good']);
    await reopened.close();
  });

  it('refuses drives too small for the layout, and RAID-1 on one drive, with EINVAL', async () => {
    await expect(
      formatMemoryPool({ raidLevel: 0, driveCount: 1, driveSizeBytes: MiB }),
    ).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/too small/) });
    await expect(formatMemoryPool({ raidLevel: 1, driveCount: 1 })).rejects.toMatchObject({
      code: 'EINVAL',
      message: expect.stringMatching(/RAID-1 needs at least 2 drives/),
    });
    await expect(formatMemoryPool({ raidLevel: 0, stripeUnitBytes: 3000 })).rejects.toMatchObject({
      code: 'EINVAL',
    });
  });
});

describe('redundancy sets (seed 004 [0059])', () => {
  it('splits the drives into even sets in drive order, each big enough for the RAID level', () => {
    expect(planRedundancySets(7, 3, 1)).toEqual([
      [0, 1, 2],
      [3, 4],
      [5, 6],
    ]);
    expect(planRedundancySets(9, 8, 2)).toEqual([
      [0, 1, 2, 3, 4],
      [5, 6, 7, 8],
    ]);
    expect(planRedundancySets(4, 8, 3)).toEqual([[0, 1, 2, 3]]);
    expect(() => planRedundancySets(3, 2, 2)).toThrow(/set of 1 drive/);
    expect(() => planRedundancySets(6, 0, 1)).toThrow(/RSS size 0/);
  });

  for (const raidLevel of [0, 1, 5] as const) {
    it(`RAID-${raidLevel}: every RStore stays inside one set; a LUN of the whole capacity fills every set`, async () => {
      const memoryPool = await formatMemoryPool({
        raidLevel,
        driveCount: 7,
        rssSize: 4,
        driveSizeBytes: 4 * MiB,
      });
      const pool = memoryPool.pool;
      expect(pool.metadata.rss.map((rss) => rss.driveIndexes)).toEqual([
        [0, 1, 2, 3],
        [4, 5, 6],
      ]);
      const controller = controllerFor(pool);
      const capacity = pool.capacityBytes();
      await controller.createLun('all', capacity);
      const data = patternBytes(capacity, 40 + raidLevel);
      await controller.stack('all').cache.write(0, data);
      await controller.stack('all').cache.flush();
      expect(pool.freeBytes()).toBe(0);
      const setOf = (driveIndex: number): number => pool.metadata.drives[driveIndex]!.rssId;
      for (const rstore of pool.metadata.rstores.values()) {
        const sets = new Set(rstore.members.map((member) => setOf(member.driveIndex)));
        expect(sets.size, `RStore ${rstore.id} spans sets ${[...sets].join(',')}`).toBe(1);
        const setSize = pool.metadata.rss[rstore.rssId]!.driveIndexes.length;
        expect(rstore.members.length).toBe(raidLevel === 1 ? 2 : setSize);
        expect(rstore.rssId).toBe([...sets][0]);
      }
      const used = new Set([...pool.metadata.rstores.values()].map((rstore) => rstore.rssId));
      expect([...used].sort()).toEqual([0, 1]);
      expect(firstDifference(await readAll(controller.stack('all').cache), data)).toBeUndefined();
      await controller.close();
    });
  }
});

describe('a power cut with RAID-1 writes in flight', () => {
  it('leaves every mirror reading the same bytes after recovery', async () => {
    const clock = new FakeClock();
    let views = sessionViews(makeMemoryDrives(3, 6 * MiB, 'mirror'));
    let pool = await formatPoolOn(views, { raidLevel: 1 }, clock);
    await pool.createLun('m', MiB);
    const before = patternBytes(4 * unitBytes, 1);
    const after = patternBytes(4 * unitBytes, 2);
    let thin = new ThinVolume(pool, pool.lunByName('m'));
    await thin.write(0, before);
    await thin.flush();
    await thin.write(0, after); // reaches both mirrors, flushed on neither
    // The power goes: drive 0 had written everything, drives 1 and 2 nothing.
    for (const view of views) view.fence();
    views.forEach((view, index) => view.inner.crash(new ScriptedCrash(index === 0 ? 1 : 0)));
    views = sessionViews(views.map((view) => view.inner));
    pool = await Pool.open(views, { clock, log: silentLogger() });
    thin = new ThinVolume(pool, pool.lunByName('m'));
    for (let unit = 0; unit < 4; unit += 1) {
      const range = [unit * unitBytes, (unit + 1) * unitBytes] as const;
      const reads = [
        await readRange(thin, range[0], unitBytes),
        await readRange(thin, range[0], unitBytes),
        await readRange(thin, range[0], unitBytes),
      ];
      for (const [index, read] of reads.entries()) {
        expect(
          read.equals(before.subarray(...range)) || read.equals(after.subarray(...range)),
          `unit ${unit}, read ${index}: data never written there`,
        ).toBe(true);
        expect(
          firstDifference(read, reads[0]!),
          `unit ${unit}: read ${index} differs from read 0, the mirrors disagree`,
        ).toBeUndefined();
      }
    }
    await pool.close();
  });
});
