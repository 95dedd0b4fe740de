// Snap-point maps (issue 16, seed 003) through the controller on simulated drives. What it proves:
// - a map marks the grains written or discarded after its creation, and nothing before it; it
//   survives a reopen and goes with rm or with its LUN;
// - after a power cut at any moment of random writes, discards, flushes and snapshots, every grain
//   whose content differs from the LUN's at the map's creation is marked (never less; more is
//   allowed), on RAID-0 and RAID-5;
// - bad names and requests are refused with a clear code and change nothing.

import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Pool } from '../../src/pool/pool.js';
import { snapPointGrainBytes } from '../../src/volume/snap-points.js';
import { quietCommits } from '../../src/pool/snap-point-intents.js';
import { patternBytes, readAll } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import {
  formatMemoryPool,
  formatPoolOn,
  makeMemoryDrives,
  powerCut,
  sessionViews,
} from '../support/memory-pool.js';
import { controllerFor, errorCode, reopen } from '../support/controllers.js';
import { ScriptedCrash } from '../support/scripted-crash.js';

const grain = snapPointGrainBytes;

function ignore(promise: Promise<unknown>): void {
  promise.catch(() => {});
}

describe('snap-point maps', () => {
  it('mark what changes after their creation, survive a reopen, and go with rm', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 1, driveSizeBytes: 24 * MiB });
    let controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', 4 * MiB);
    const db = () => controller.stack('db').cache;
    await db().write(0, patternBytes(4 * MiB, 1)); // before the map: not marked
    await controller.snapPoints.create('db@p1');
    expect(controller.snapPoints.extents('db@p1')).toEqual([]);
    await db().write(grain + 4 * KiB, patternBytes(4 * KiB, 2)); // one grain
    await db().write(3 * grain - 1, patternBytes(2, 3)); // two grains (2 and 3)
    await db().discard(2 * MiB, 2 * grain);
    await db().flush();
    const expected: Array<[number, number]> = [
      [grain, 3 * grain],
      [2 * MiB, 2 * grain],
    ];
    expect(controller.snapPoints.extents('db@p1')).toEqual(expected);
    await controller.snapPoints.create('db@p2'); // a second map starts empty
    await db().write(0, patternBytes(4 * KiB, 4));
    await db().flush();
    expect(controller.snapPoints.extents('db@p2')).toEqual([[0, grain]]);
    expect(controller.snapPoints.extents('db@p1')).toEqual([[0, 4 * grain], expected[1]]);
    const listed = controller.status().snapPoints;
    expect(listed.map((entry) => [entry.name, entry.changedBytes])).toEqual([
      ['db@p1', 6 * grain],
      ['db@p2', grain],
    ]);

    controller = await reopen(memoryPool, controller);
    expect(controller.snapPoints.extents('db@p1')).toEqual([[0, 4 * grain], expected[1]]);
    expect(controller.snapPoints.extents('db@p2')).toEqual([[0, grain]]);
    await controller.snapPoints.remove('db@p1');
    expect(controller.snapPoints.has('db@p1')).toBe(false);
    controller = await reopen(memoryPool, controller);
    expect(controller.snapPoints.list().map((entry) => entry.name)).toEqual(['db@p2']);
    // the LUN's removal takes its maps
    await controller.removeLun('db');
    expect(controller.snapPoints.list()).toEqual([]);
    controller = await reopen(memoryPool, controller);
    expect(controller.snapPoints.list()).toEqual([]);
    await controller.close();
  });

  it('refuse bad requests and change nothing', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 24 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    await controller.snapPoints.create('db@p1');
    const before = JSON.stringify(controller.status().snapPoints);
    expect(await errorCode(() => controller.snapPoints.create('db@p1'))).toBe('EEXIST');
    expect(await errorCode(() => controller.snapPoints.create('nolun@p'))).toBe('ENOENT');
    expect(await errorCode(() => controller.snapPoints.create('db'))).toBe('EINVAL');
    expect(await errorCode(() => controller.snapPoints.create('db@bad/name'))).toBe('EINVAL');
    expect(await errorCode(() => controller.snapPoints.create('db@a@b'))).toBe('EINVAL');
    expect(await errorCode(() => controller.snapPoints.remove('db@nope'))).toBe('ENOENT');
    expect(await errorCode(() => controller.snapPoints.remove('x@p1'))).toBe('ENOENT');
    expect(JSON.stringify(controller.status().snapPoints)).toBe(before);
    await controller.close();
  });

  it('are durable before the change they mark reaches the drives (a cut at every third turn)', async () => {
    let cuts = 0;
    for (let turns = 0; ; turns += 3) {
      const drives = makeMemoryDrives(2, 8 * MiB);
      let views = sessionViews(drives);
      const pool = await formatPoolOn(views, { raidLevel: 0 });
      let controller = await controllerFor(pool);
      await controller.createLun('db', MiB);
      const db = () => controller.stack('db').cache;
      await db().write(0, patternBytes(MiB, 1));
      await db().flush();
      await controller.snapPoints.create('db@p');
      let flushed = false;
      void db()
        .write(3 * grain, patternBytes(4 * KiB, 2))
        .then(() => db().flush())
        .then(
          () => (flushed = true),
          () => {},
        );
      // microtask turns: a memory drive's operations complete within them
      for (let turn = 0; turn < turns; turn += 1) await Promise.resolve();
      const ended = flushed;
      // every write not flushed is lost: what a flush made durable survives alone
      views = powerCut(views, new ScriptedCrash(0));
      const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
      controller = await controllerFor(reopened);
      const changed = !(await readAll(db()))
        .subarray(3 * grain, 4 * grain)
        .equals(patternBytes(MiB, 1).subarray(3 * grain, 4 * grain));
      if (changed) cuts += 1;
      expect(
        !changed || controller.snapPoints.byName('db@p').marks.get(3),
        `a cut after ${turns} turns: the change is on the drives, its mark is not`,
      ).toBe(true);
      await controller.close();
      if (ended) break;
    }
    expect(cuts).toBeGreaterThan(0);
  });

  it("cover with their region's intent a mark a power cut loses (a cut at every other turn)", async () => {
    // A 32 MiB LUN: intents of 128 KiB, 2 grains. Grain 0 sets region 0's intent; grain 1's mark
    // then rides on the flush's commit, whose drive flush can make the data durable before the
    // journal record holding the mark: only the intent, recovered, marks it then. (Without the
    // recovery, a cut after 5 turns finds the change unmarked.)
    let cuts = 0;
    for (let turns = 1; ; turns += 2) {
      const drives = makeMemoryDrives(2, 24 * MiB);
      let views = sessionViews(drives);
      const pool = await formatPoolOn(views, { raidLevel: 0 });
      let controller = await controllerFor(pool);
      await controller.createLun('db', 32 * MiB);
      const db = () => controller.stack('db').cache;
      await db().write(0, patternBytes(MiB, 1));
      await db().flush();
      await controller.snapPoints.create('db@p');
      expect(controller.snapPoints.byName('db@p').intentBytes).toBe(2 * grain);
      await db().write(0, patternBytes(4 * KiB, 2));
      await db().flush(); // region 0's intent, and grain 0's mark, durable
      let flushed = false;
      void db()
        .write(grain, patternBytes(4 * KiB, 3))
        .then(() => db().flush())
        .then(
          () => (flushed = true),
          () => {},
        );
      for (let turn = 0; turn < turns; turn += 1) await Promise.resolve();
      const ended = flushed;
      views = powerCut(views, new ScriptedCrash(0));
      const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
      controller = await controllerFor(reopened);
      const changed = !(await readAll(db()))
        .subarray(grain, 2 * grain)
        .equals(patternBytes(MiB, 1).subarray(grain, 2 * grain));
      if (changed) cuts += 1;
      const record = controller.snapPoints.byName('db@p');
      expect(
        !changed || record.marks.get(1),
        `a cut after ${turns} turns: the change is on the drives, its mark is not`,
      ).toBe(true);
      expect(record.intents.size).toBe(0); // recovered: the region marked whole
      await controller.close();
      if (ended) break;
    }
    expect(cuts).toBeGreaterThan(0);
  });

  it('commit an intent per region, not a mark per change, and clear it once quiet', async () => {
    const drives = makeMemoryDrives(2, 48 * MiB);
    let views = sessionViews(drives);
    const pool = await formatPoolOn(views, { raidLevel: 0 });
    let controller = await controllerFor(pool);
    await controller.createLun('db', 64 * MiB);
    await controller.snapPoints.create('db@p');
    const record = controller.snapPoints.byName('db@p');
    expect(record.intentBytes).toBe(4 * grain);
    let commits = 0;
    const commit = pool.commit.bind(pool);
    pool.commit = () => {
      commits += 1;
      return commit();
    };
    const intents = pool.snapPointIntents;
    // one change at a time: grains 0-15, 4 regions
    for (let index = 0; index < 16; index += 1)
      await intents.mark([record], index * grain, 4 * KiB);
    expect(commits).toBe(4);
    // changes at once: grains 16-31, 4 more regions, one commit
    await Promise.all(
      [...Array(16).keys()].map((index) => intents.mark([record], (16 + index) * grain, 4 * KiB)),
    );
    expect(commits).toBe(5);
    // marked again: nothing to commit
    await intents.mark([record], 0, 32 * grain);
    expect(commits).toBe(5);
    expect([...record.intents].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (let index = 0; index < quietCommits / 2; index += 1) await pool.commit();
    expect(record.intents.size).toBe(8); // not quiet for long enough yet
    for (let index = 0; index < quietCommits / 2 + 2; index += 1) await pool.commit();
    expect(record.intents.size).toBe(0);
    await pool.commit(); // the clear is durable
    // a power cut now: the marks as they are, no region marked whole
    views = powerCut(views, new ScriptedCrash(0));
    const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
    controller = await controllerFor(reopened);
    expect(controller.snapPoints.extents('db@p')).toEqual([[0, 32 * grain]]);
    await controller.close();
  });

  it('never miss a change that reached the drives, whatever a power cut loses', async () => {
    const outcomes = { marked: 0, changed: 0 };
    for (let seed = 1; seed <= 16; seed += 1) {
      const random = new SeededRandom(seed * 7919);
      const drives = makeMemoryDrives(3, 24 * MiB);
      let views = sessionViews(drives);
      const pool = await formatPoolOn(views, { raidLevel: seed % 2 === 0 ? 5 : 0 });
      let controller = await controllerFor(pool);
      const sizeBytes = 3 * MiB;
      await controller.createLun('db', sizeBytes);
      const db = () => controller.stack('db').cache;
      await db().write(0, patternBytes(sizeBytes, seed));
      if (seed % 3 === 0) await controller.createSnapshot('db@s0');
      await db().flush(); // the baseline is durable: any difference later is a change
      const baseline = await readAll(db());
      await controller.snapPoints.create('db@p');
      // random changes, not awaited in order, cut short by the power cut
      const work = (async () => {
        for (let step = 0; step < 60; step += 1) {
          const offset = random.integer(sizeBytes - 1);
          const length = 1 + random.integer(Math.min(200 * KiB, sizeBytes - offset) - 1);
          const choice = random.integer(10);
          // the power cut fails what is on its way: those failures are expected
          if (choice < 6) ignore(db().write(offset, patternBytes(length, seed * 100 + step)));
          else if (choice < 7) ignore(db().discard(offset, length));
          else if (choice < 8) ignore(db().flush());
          else if (choice < 9 && seed % 3 === 0) ignore(controller.createSnapshot(`db@s${step}`));
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      const ticks = random.integer(400);
      for (let tick = 0; tick < ticks; tick += 1)
        await new Promise((resolve) => setImmediate(resolve));
      views = powerCut(views, random);
      ignore(work);
      const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
      controller = await controllerFor(reopened);
      const after = await readAll(controller.stack('db').cache);
      const record = controller.snapPoints.byName('db@p');
      for (let index = 0; index * grain < sizeBytes; index += 1) {
        const changed = !after
          .subarray(index * grain, (index + 1) * grain)
          .equals(baseline.subarray(index * grain, (index + 1) * grain));
        if (changed) {
          outcomes.changed += 1;
          expect(record.marks.get(index), `seed ${seed}: grain ${index} changed, not marked`).toBe(
            true,
          );
        }
        if (record.marks.get(index)) outcomes.marked += 1;
      }
      await controller.close();
    }
    // the cuts fell where changes had reached the drives
    expect(outcomes.changed).toBeGreaterThan(0);
  });
});
