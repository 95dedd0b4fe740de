// Races between snapshot deletion and copy-on-write, each forced with a gate at the racy moment
// (simulated drives, small geometry). What it proves:
// - a slot written for a preservation whose record is not committed yet is in use: a snapshot
//   drop that commits first does not give its unit back (the pointer would name freed space);
// - removing a LUN's last snapshot while a preservation for it is between reading the original
//   and writing it waits for that preservation; the target volume goes away afterwards, nothing
//   is written for it later, and the pool commits and reopens;
// - a discard of the LUN and a snapshot's creation, started in the same turn and then a few
//   microtasks apart (every count from 0 to 15, so the snapshot instant falls at every step of
//   the discard, including between the cache dropping its pages and the discard going below):
//   the snapshot holds the LUN either before the discard or after it, never a mix.

import { describe, expect, it } from 'vitest';
import type { ThinVolume } from '../../src/map/thin-volume.js';
import { silentLogger } from '../../src/util/logger.js';
import { Controller } from '../../src/volume/controller.js';
import type { Pool } from '../../src/pool/pool.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { patternBytes, readAll, readRange } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import { formatMemoryPool, reopenMemoryPool } from '../support/memory-pool.js';

async function controllerFor(pool: Pool): Promise<Controller> {
  const controller = new Controller(pool, {
    cacheBytes: MiB,
    clock: new FakeClock(),
    log: silentLogger(),
  });
  await controller.openSnapshots();
  return controller;
}

describe('snapshot races', () => {
  it('a drop committed before a pending preservation keeps the preserved slot mapped', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 8 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    await controller.stack('db').cache.write(0, patternBytes(MiB, 1));
    await controller.stack('db').cache.flush();
    await controller.createSnapshot('db@keep');
    await controller.createSnapshot('db@gone');
    const set = controller.snapshotSet('db');
    const target = set.targetVolume!;
    const keep = set.byName('keep');
    const original = Buffer.alloc(set.chunkBytes, 0x55);
    // Record the ops of each journal commit, to check the order the race needs.
    const store = (
      target as unknown as {
        store: { commit: (ops: Array<{ kind: string }>, ...rest: unknown[]) => Promise<void> };
      }
    ).store;
    const commitOf = store.commit.bind(store);
    const batches: string[][] = [];
    store.commit = (ops, ...rest) => {
      batches.push(ops.map((op) => op.kind));
      return commitOf(ops, ...rest);
    };
    // The drop's batch starts first; the preservation's record joins the next batch.
    const dropping = target.drop([set.byName('gone').id]);
    const preserving = target.preserveBatched(0, [keep.id], false, async (place) => {
      original.copy(place);
      return true;
    });
    await Promise.all([dropping, preserving]);
    expect(batches, 'the drop committed alone, then the preservation in a later batch').toEqual([
      ['drop'],
      ['preserve'],
    ]);
    const slot = set.image(keep.id)!.log.get(0)!;
    const unitIndex = Math.floor(
      (target.geometry.dataStartBytes + slot * set.chunkBytes) /
        memoryPool.pool.allocationUnitBytes,
    );
    expect(target.thin.lun.map.has(unitIndex), 'the preserved slot lies in an unmapped unit').toBe(
      true,
    );
    const back = Buffer.alloc(set.chunkBytes);
    await target.readSlot(slot, 0, back);
    expect(back.equals(original)).toBe(true);
    await controller.close();
  });

  it('removing the last snapshot waits for a preservation under way, then removes the target', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 8 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    await controller.stack('db').cache.write(0, patternBytes(MiB, 2));
    await controller.stack('db').cache.flush();
    const freeBefore = memoryPool.pool.freeBytes();
    await controller.createSnapshot('db@only');
    const set = controller.snapshotSet('db');
    const real = controller.stack('db').thin;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let readStarted!: () => void;
    const started = new Promise<void>((resolve) => (readStarted = resolve));
    const slowSource = {
      sizeBytes: real.sizeBytes,
      holdsData: (offsetBytes: number) => real.holdsData(offsetBytes),
      read: async (offsetBytes: number, buffer: Buffer) => {
        await real.read(offsetBytes, buffer);
        readStarted();
        await gate;
      },
    } as unknown as ThinVolume;
    const preserving = set.preserve(0, set.epoch, slowSource).then(
      () => 'done',
      (error: unknown) => error,
    );
    await started;
    let removed = false;
    const removing = controller.removeSnapshot('db@only').then(() => (removed = true));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(removed, 'the removal did not wait for the preservation').toBe(false);
    release();
    await removing;
    expect(await preserving).toBe('done');
    expect(memoryPool.pool.targetOf(memoryPool.pool.lunByName('db').id)).toBeUndefined();
    await memoryPool.pool.commit();
    expect(memoryPool.pool.freeBytes()).toBe(freeBefore);
    const image = await readAll(controller.stack('db').cache);
    await controller.close();
    memoryPool.pool = await reopenMemoryPool(memoryPool.drives);
    const reopened = await controllerFor(memoryPool.pool);
    expect((await readAll(reopened.stack('db').cache)).equals(image)).toBe(true);
    await reopened.close();
  });

  it('a discard racing a snapshot instant is wholly before or wholly after it', async () => {
    const memoryPool = await formatMemoryPool({ raidLevel: 0, driveSizeBytes: 8 * MiB });
    const controller = await controllerFor(memoryPool.pool);
    await controller.createLun('db', MiB);
    const lun = controller.stack('db').cache;
    await controller.createSnapshot('db@first'); // the target exists: creation takes few turns
    const outcomes: string[] = [];
    for (let delay = 0; delay < 16; delay += 1) {
      const before = patternBytes(128 * KiB, 100 + delay);
      await lun.write(0, before);
      await lun.flush();
      const dirty = patternBytes(8 * KiB, 200 + delay); // still in the cache at the instant
      await lun.write(0, dirty);
      dirty.copy(before);
      const creating = controller.createSnapshot(`db@s${delay}`);
      for (let turn = 0; turn < delay; turn += 1) await Promise.resolve();
      const discarding = lun.discard(0, 128 * KiB);
      await Promise.all([creating, discarding]);
      const seen = await readRange(controller.snapshotVolume(`db@s${delay}`), 0, 128 * KiB);
      const outcome = seen.equals(before)
        ? 'after'
        : seen.every((byte) => byte === 0)
          ? 'before'
          : 'mixed';
      expect(
        outcome,
        `snapshot with the discard started ${delay} microtasks after its creation: neither the LUN before the discard nor after it (${seen.subarray(0, 8).toString('hex')}...)`,
      ).not.toBe('mixed');
      outcomes.push(outcome);
    }
    // The scan crossed the instant: some discards came before it, some after.
    expect(outcomes, outcomes.join(' ')).toContain('before');
    expect(outcomes, outcomes.join(' ')).toContain('after');
    await controller.close();
  });
});
