// Snapshots of snapshots (issue 15: seed 004's sharing tree) through the controller on simulated
// drives (64 KiB chunks). What it proves:
// - a snapshot of a snapshot reads its source as it stood at the instant, its source's own
//   writes included; from then on each member changes alone (writes to either, and to the LUN);
// - deleting any member keeps every other member exact, also 16 levels deep, and after a reopen;
//   deleting them all gives back every byte the target held;
// - taken while the LUN's originals are being preserved for its source, it gets them too;
// - a power cut at any moment of its creation leaves it absent or exact, never wrong;
// - status shows the tree (source, depth, the snapshots taken of each) and bad input is refused;
// - a rollback makes the LUN read its snapshot (zeros past the snapshot's size), older and newer
//   snapshots stay exact, the LUN is not served meanwhile, and a power cut at any moment of it
//   is resumed at the next open.

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

async function expectImage(controller: Controller, name: string, image: Buffer): Promise<void> {
  const difference = firstDifference(await readAll(controller.snapshotVolume(name)), image);
  expect(difference, `${name}: ${difference}`).toBeUndefined();
}

function written(image: Buffer, offset: number, data: Buffer): Buffer {
  const copy = Buffer.from(image);
  data.copy(copy, offset);
  return copy;
}

describe('snapshots of snapshots', () => {
  it('hold their source at the instant, then each member changes alone', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 1, driveSizeBytes: 16 * MiB });
    let controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    const lun = () => controller.stack('db').cache;
    await lun().write(0, patternBytes(MiB, 1));
    await controller.createSnapshot('db@s1');
    const lunAtS1 = await readAll(lun());
    await lun().write(100 * KiB, patternBytes(200 * KiB, 2)); // the LUN moves on: s1 preserved
    await lun().flush();
    // s1's own write: a slot s1 alone holds, written in place until something shares it
    const own = patternBytes(3000, 3);
    await controller.snapshotVolume('db@s1').write(500 * KiB, own);
    const s1Image = written(lunAtS1, 500 * KiB, own);
    await controller.snapshotVolume('db@s1').write(500 * KiB + 3000, Buffer.from('more')); // in place
    const s1Before = written(s1Image, 500 * KiB + 3000, Buffer.from('more'));

    await controller.createSnapshot('db@s1b', { source: 's1' });
    await expectImage(controller, 'db@s1b', s1Before);
    // s1 writes over the slot it now shares with s1b: s1 gets a new copy, s1b keeps the old one
    const again = patternBytes(5000, 4);
    await controller.snapshotVolume('db@s1').write(499 * KiB, again);
    const s1After = written(s1Before, 499 * KiB, again);
    await expectImage(controller, 'db@s1', s1After);
    await expectImage(controller, 'db@s1b', s1Before);
    // s1b's own write leaves s1 alone
    const mine = patternBytes(7000, 5);
    await controller.snapshotVolume('db@s1b').write(10 * KiB, mine);
    const s1bImage = written(s1Before, 10 * KiB, mine);
    // the LUN changes where neither has a copy: the original is preserved for both, once
    await lun().write(700 * KiB, patternBytes(200 * KiB, 6));
    await lun().flush();
    await expectImage(controller, 'db@s1', s1After);
    await expectImage(controller, 'db@s1b', s1bImage);

    // a chain 16 deep under s1b, each member with a write of its own
    const images = new Map<string, Buffer>([['db@s1b', s1bImage]]);
    let parent = 's1b';
    for (let depth = 2; depth <= 17; depth += 1) {
      const name = `d${depth}`;
      await controller.createSnapshot(`db@${parent}@${name}`);
      const data = patternBytes(1000, 100 + depth);
      await controller.snapshotVolume(`db@${name}`).write(depth * 40 * KiB, data);
      images.set(`db@${name}`, written(images.get(`db@${parent}`)!, depth * 40 * KiB, data));
      parent = name;
    }
    await lun().write(0, patternBytes(MiB, 7)); // every chunk of the LUN changes
    await lun().flush();
    const lunImage = await readAll(lun());
    const deepest = controller.listSnapshots().find((entry) => entry.name === 'db@d17')!;
    expect(deepest).toMatchObject({ source: 'db@d16', depth: 18, successor: 'db@d16' });
    const s1Status = controller.listSnapshots().find((entry) => entry.name === 'db@s1')!;
    expect(s1Status).toMatchObject({ source: 'lun:db', depth: 1, snapshotsOf: ['db@s1b'] });
    expect(controller.status().luns[0]!.snapshotNames).toHaveLength(18);
    for (const [name, image] of images) await expectImage(controller, name, image);

    // deleting members in the middle keeps every other exact; their children move up the tree
    await controller.removeSnapshot('db@s1');
    await controller.removeSnapshot('db@d9');
    images.delete('db@d9');
    expect(controller.listSnapshots().find((entry) => entry.name === 'db@d10')).toMatchObject({
      source: 'db@d8',
    });
    expect(controller.listSnapshots().find((entry) => entry.name === 'db@s1b')).toMatchObject({
      source: 'lun:db',
    });
    controller = await reopen(memoryPool, controller);
    for (const [name, image] of images) await expectImage(controller, name, image);
    expect(firstDifference(await readAll(controller.stack('db').cache), lunImage)).toBeUndefined();
    expect(controller.listSnapshots().find((entry) => entry.name === 'db@d10')).toMatchObject({
      source: 'db@d8',
    });

    // all gone: the target's space goes back to the pool
    const lunBytes = controller.status().luns[0]!.allocatedBytes;
    for (const name of images.keys()) await controller.removeSnapshot(name);
    const status = controller.status();
    expect(status.pool.allocatedBytes).toBe(lunBytes);
    await controller.close();
  });

  it('taken while originals are preserved for its source, get them too', async () => {
    // The copy of the source's image happens while batches for the source are on their way:
    // each such preservation must serve the new snapshot as well (expandPending).
    for (let ticks = 0; ticks < 40; ticks += 3) {
      const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 16 * MiB });
      const controller = await controllerFor(memoryPool.pool);
      await controller.createLun('db', 2 * MiB);
      const lun = () => controller.stack('db').cache;
      await lun().write(0, patternBytes(2 * MiB, ticks + 1));
      await lun().flush();
      await controller.createSnapshot('db@s1');
      const image = await readAll(lun());
      for (let chunk = 0; chunk < 32; chunk += 1)
        await lun().write(chunk * 64 * KiB + 1000, patternBytes(4096, 1000 + chunk));
      const flushing = lun().flush();
      for (let tick = 0; tick < ticks; tick += 1)
        await new Promise((resolve) => setImmediate(resolve));
      await controller.createSnapshot('db@s1@copy');
      await flushing;
      await expectImage(controller, 'db@s1', image);
      await expectImage(controller, 'db@copy', image);
      await lun().write(0, patternBytes(2 * MiB, 99));
      await lun().flush();
      await expectImage(controller, 'db@copy', image);
      await controller.close();
    }
  });

  it('survive a power cut at any moment of their creation, absent or exact', async () => {
    const seen = new Set<string>();
    for (let seed = 1; seed <= 24; seed += 1) {
      const drives = makeMemoryDrives(3, 16 * MiB);
      let views = sessionViews(drives);
      const pool = await formatPoolOn(views, { raidLevel: seed % 2 === 0 ? 5 : 1 });
      let controller = await controllerFor(pool);
      await controller.createLun('db', MiB);
      const lun = () => controller.stack('db').cache;
      await lun().write(0, patternBytes(MiB, seed));
      await controller.createSnapshot('db@s1');
      const image = await readAll(lun());
      await lun().write(300 * KiB, patternBytes(100 * KiB, seed + 1));
      await lun().flush();
      const own = patternBytes(2000, seed + 2);
      await controller.snapshotVolume('db@s1').write(64 * KiB, own);
      const s1Image = written(image, 64 * KiB, own);
      const allocatedBefore = controller.status().pool.allocatedBytes;
      const creating = controller.createSnapshot('db@s1@c').then(
        () => 'made',
        () => 'failed',
      );
      const random = new SeededRandom(seed);
      const ticks = random.integer(60);
      for (let tick = 0; tick < ticks; tick += 1)
        await new Promise((resolve) => setImmediate(resolve));
      views = powerCut(views, random);
      void creating;
      const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
      controller = await controllerFor(reopened);
      await expectImage(controller, 'db@s1', s1Image);
      const exists = controller.hasSnapshot('db@c');
      seen.add(exists ? 'exists' : 'absent');
      if (exists) await expectImage(controller, 'db@c', s1Image);
      await controller.removeSnapshot('db@c').catch(() => undefined);
      expect(controller.status().pool.allocatedBytes, `seed ${seed}`).toBeLessThanOrEqual(
        allocatedBefore,
      );
      await controller.close();
    }
    expect([...seen].sort()).toEqual(['absent', 'exists']);
  });

  it('hold hundreds of members in one tree, each exact', async () => {
    // 256 members: snapshots of the LUN between its writes, and snapshots of members picked at
    // random, some written; a sample read whole, every one read where it changed.
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 32 * MiB });
    let controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    const lun = () => controller.stack('db').cache;
    await lun().write(0, patternBytes(MiB, 1));
    const random = new SeededRandom(256);
    const images = new Map<string, Buffer>();
    let lunImage = await readAll(lun());
    for (let index = 0; index < 256; index += 1) {
      const name = `m${index}`;
      const members = [...images.keys()];
      if (members.length === 0 || random.chance(0.5)) {
        await controller.createSnapshot(`db@${name}`);
        images.set(`db@${name}`, lunImage);
        const offset = random.integer(MiB - 8192);
        const data = patternBytes(1 + random.integer(8192), index);
        await lun().write(offset, data);
        lunImage = written(lunImage, offset, data);
      } else {
        const source = members[random.integer(members.length)]!;
        await controller.createSnapshot(`${source}@${name}`);
        let image = images.get(source)!;
        if (random.chance(0.3)) {
          const offset = random.integer(MiB - 4096);
          const data = patternBytes(4096, 1000 + index);
          await controller.snapshotVolume(`db@${name}`).write(offset, data);
          image = written(image, offset, data);
        }
        images.set(`db@${name}`, image);
      }
    }
    await lun().flush();
    const depths = controller.listSnapshots().map((entry) => entry.depth);
    expect(depths).toHaveLength(256);
    expect(Math.max(...depths)).toBeGreaterThan(3);
    let checked = 0;
    for (const [name, image] of images)
      if (random.chance(0.25)) {
        await expectImage(controller, name, image);
        checked += 1;
      }
    expect(checked).toBeGreaterThan(30);
    controller = await reopen(memoryPool, controller);
    const allocatedLun = controller.status().luns[0]!.allocatedBytes;
    for (const name of [...images.keys()].reverse()) {
      if (random.chance(0.1)) await expectImage(controller, name, images.get(name)!);
      await controller.removeSnapshot(name);
    }
    expect(controller.status().pool.allocatedBytes).toBe(allocatedLun);
    expect(firstDifference(await readAll(lun()), lunImage)).toBeUndefined();
    await controller.close();
  });

  it('refuse bad input with a code and change nothing', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 8 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    await controller.createLun('vm', MiB);
    await controller.createSnapshot('db@one');
    await controller.createSnapshot('vm@x');
    expect(await errorCode(() => controller.createSnapshot('db@none@two'))).toBe('ENOENT');
    expect(await errorCode(() => controller.createSnapshot('db@one@one'))).toBe('EEXIST');
    expect(await errorCode(() => controller.createSnapshot('db@one@x@y'))).toBe('EINVAL');
    expect(await errorCode(() => controller.createSnapshot('db@one@'))).toBe('EINVAL');
    expect(await errorCode(() => controller.createSnapshot('db@one@bad/n'))).toBe('EINVAL');
    // a snapshot of another LUN's snapshot is not a member of this LUN's tree
    expect(await errorCode(() => controller.createSnapshot('db@two', { source: 'x' }))).toBe(
      'ENOENT',
    );
    expect(controller.listSnapshots().map((snapshot) => snapshot.name)).toEqual(['db@one', 'vm@x']);
    await controller.close();
  });
});

describe('rollback', () => {
  it('makes the LUN its snapshot again; every snapshot stays exact', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 5, driveSizeBytes: 16 * MiB });
    let controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    const lun = () => controller.stack('db').cache;
    await lun().write(0, patternBytes(MiB, 1));
    await controller.createSnapshot('db@old');
    const oldImage = await readAll(lun());
    await lun().write(200 * KiB, patternBytes(300 * KiB, 2));
    await lun().discard(600 * KiB, 128 * KiB); // zeros in the LUN, data in the snapshot
    await controller.createSnapshot('db@s');
    const sImage = await readAll(lun());
    const own = patternBytes(5000, 3);
    await controller.snapshotVolume('db@s').write(900 * KiB, own); // s's own write
    const sAfter = written(sImage, 900 * KiB, own);
    await lun().write(0, patternBytes(MiB, 4)); // the LUN moves on, partly still in the cache
    await lun().discard(100 * KiB, 64 * KiB);
    await controller.createSnapshot('db@newer');
    const newerImage = await readAll(lun());
    await lun().write(64 * KiB, patternBytes(400 * KiB, 5));
    await controller.resizeLun('db', 2 * MiB); // grown since s: the rest reads zeros after
    await lun().write(MiB + 4096, patternBytes(8192, 6));

    controller.opened('db');
    expect(await errorCode(() => controller.rollback('db@s'))).toBe('EBUSY');
    controller.released('db');
    const result = await controller.rollback('db@s');
    expect(result.chunks).toBeGreaterThan(0);
    const expected = Buffer.alloc(2 * MiB);
    sAfter.copy(expected);
    expect(firstDifference(await readAll(lun()), expected)).toBeUndefined();
    await expectImage(controller, 'db@s', sAfter);
    await expectImage(controller, 'db@old', oldImage);
    await expectImage(controller, 'db@newer', newerImage);
    // a second rollback to the same snapshot copies nothing it need not (its chunks only)
    await lun().write(300 * KiB, patternBytes(4096, 7));
    await controller.rollback('db@s');
    expect(firstDifference(await readAll(lun()), expected)).toBeUndefined();
    controller = await reopen(memoryPool, controller);
    expect(firstDifference(await readAll(controller.stack('db').cache), expected)).toBeUndefined();
    await expectImage(controller, 'db@old', oldImage);
    await expectImage(controller, 'db@newer', newerImage);
    await expectImage(controller, 'db@s', sAfter);
    // to a snapshot of a snapshot as well
    await controller.createSnapshot('db@old@oldcopy');
    await controller.rollback('db@oldcopy');
    const oldExpected = Buffer.alloc(2 * MiB);
    oldImage.copy(oldExpected);
    expect(
      firstDifference(await readAll(controller.stack('db').cache), oldExpected),
    ).toBeUndefined();
    await expectImage(controller, 'db@newer', newerImage);
    expect(await errorCode(() => controller.rollback('db@none'))).toBe('ENOENT');
    expect(await errorCode(() => controller.rollback('db'))).toBe('EINVAL');
    await controller.close();
  });

  it('interrupted by a power cut, is resumed at the next open', async () => {
    const seen = new Set<string>();
    for (let seed = 1; seed <= 16; seed += 1) {
      const drives = makeMemoryDrives(3, 16 * MiB);
      let views = sessionViews(drives);
      const pool = await formatPoolOn(views, { raidLevel: seed % 2 === 0 ? 5 : 0 });
      let controller = await controllerFor(pool);
      await controller.createLun('db', MiB);
      const lun = () => controller.stack('db').cache;
      await lun().write(0, patternBytes(MiB, seed));
      await controller.createSnapshot('db@s');
      const sImage = await readAll(lun());
      await lun().write(0, patternBytes(MiB, seed + 100));
      await controller.createSnapshot('db@later');
      const laterImage = await readAll(lun());
      await lun().write(128 * KiB, patternBytes(512 * KiB, seed + 200));
      const beforeImage = await readAll(lun());
      await lun().flush();
      const rolling = controller.rollback('db@s').then(
        () => 'done',
        () => 'failed',
      );
      const random = new SeededRandom(seed);
      let outcome = 'running';
      void rolling.then((value) => (outcome = value));
      const turn = () => new Promise((resolve) => setImmediate(resolve));
      // Every fourth seed cuts soon after the rollback is recorded (in memory): a cut after a
      // number of turns alone lands before the record whenever the thread pool is slow (under a
      // loaded machine all 16 did).
      if (seed % 4 === 0) {
        const lunId = pool.lunByName('db').id;
        while (outcome === 'running' && pool.metadata.luns.get(lunId)!.rollingBackTo === undefined)
          await turn();
      }
      const ticks = random.integer(seed % 4 === 0 ? 40 : 400);
      for (let tick = 0; tick < ticks && outcome === 'running'; tick += 1) await turn();
      views = powerCut(views, random);
      const reopened = await Pool.open(views, { clock: new FakeClock(), log: silentLogger() });
      const pending = reopened.metadata.luns.get(reopened.lunByName('db').id)!.rollingBackTo;
      seen.add(pending === undefined ? 'not pending at the cut' : 'resumed');
      controller = await controllerFor(reopened); // resumes a pending rollback
      const now = await readAll(controller.stack('db').cache);
      // Unless the cut came before the rollback was recorded, the LUN is its snapshot now.
      if (firstDifference(now, sImage) !== undefined) {
        expect(pending, `seed ${seed}`).toBeUndefined();
        expect(firstDifference(now, beforeImage), `seed ${seed}`).toBeUndefined();
      }
      await expectImage(controller, 'db@s', sImage);
      await expectImage(controller, 'db@later', laterImage);
      expect(reopened.metadata.luns.get(reopened.lunByName('db').id)!.rollingBackTo).toBe(
        undefined,
      );
      await controller.close();
    }
    expect(seen.has('resumed'), [...seen].join(', ')).toBe(true);
  });
});
