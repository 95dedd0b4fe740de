// PreservationBatcher against a target kept in memory (the layer below it: slots, slot writes and
// the commit of records), so that each rule of a batch can be watched: which preservations share
// a batch, which slots and runs they get, what the record says, and when each one returns.

import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/native/native-kernels.js';
import { zeroSlot } from '../../src/snapshot/log-file.js';
import {
  PreservationBatcher,
  type BatchTarget,
  type PreservationFill,
} from '../../src/snapshot/preservation-batch.js';
import type { TargetOp } from '../../src/snapshot/target-metadata.js';
import { LunfsError } from '../../src/util/errors.js';
import { patternBytes } from '../support/bytes.js';

const chunkBytes = 4096;

class MemoryTarget implements BatchTarget {
  readonly chunkBytes = chunkBytes;
  readonly slots = new Map<number, Buffer>();
  readonly runs: Array<{ firstSlot: number; chunks: number }> = [];
  readonly records: TargetOp[][] = [];
  readonly abandoned: number[] = [];
  /** Slots handed out in this order (then counting up from the last). */
  freeSlots: number[] = [];
  nextSlot = 100;
  /** takeSlot throws ENOSPC for these calls (0 = the first). */
  noSpaceAt = new Set<number>();
  private takes = 0;
  /** The commit waits for this, when set. */
  commitGate: Promise<void> | undefined;

  takeSlot(): number {
    const call = this.takes++;
    if (this.noSpaceAt.has(call)) throw new LunfsError('ENOSPC', 'the target is full');
    return this.freeSlots.shift() ?? this.nextSlot++;
  }
  abandonSlot(slot: number): void {
    this.abandoned.push(slot);
  }
  async writeSlots(firstSlot: number, data: Buffer): Promise<void> {
    this.runs.push({ firstSlot, chunks: data.length / chunkBytes });
    for (let index = 0; index < data.length / chunkBytes; index += 1)
      this.slots.set(
        firstSlot + index,
        Buffer.from(data.subarray(index * chunkBytes, (index + 1) * chunkBytes)),
      );
  }
  async commit(ops: TargetOp[]): Promise<void> {
    await this.commitGate;
    this.records.push(ops);
  }
}

/** A fill that copies data after a turn of the event loop (as a drive read would). */
function fillWith(data: Buffer | undefined): PreservationFill {
  return async (place) => {
    await new Promise((resolve) => setImmediate(resolve));
    if (!data) {
      place.fill(0);
      return false;
    }
    data.copy(place);
    return true;
  };
}

describe('PreservationBatcher', () => {
  it('records preservations made together in one batch: one run of slots, one record', async () => {
    const target = new MemoryTarget();
    let open!: () => void;
    target.commitGate = new Promise((resolve) => (open = resolve));
    const batcher = new PreservationBatcher(target, 32);
    const originals = [...Array(10).keys()].map((chunk) => patternBytes(chunkBytes, chunk + 1));
    let returned = 0;
    const done = originals.map((data, chunk) =>
      batcher.preserve(chunk, [7, 8], false, fillWith(data)).then(() => (returned += 1)),
    );
    for (let turn = 0; turn < 20; turn += 1) await new Promise((resolve) => setImmediate(resolve));
    expect(target.runs).toEqual([{ firstSlot: 100, chunks: 10 }]);
    expect(returned).toBe(0); // nothing returns before its record is durable
    open();
    await Promise.all(done);
    expect(target.records).toHaveLength(1);
    expect(target.records[0]).toEqual(
      originals.map((data, chunk) => ({
        kind: 'preserve',
        chunk,
        slot: 100 + chunk,
        ids: [7, 8],
        crc: crc32c(data),
      })),
    );
    for (const [chunk, data] of originals.entries())
      expect(target.slots.get(100 + chunk)!.equals(data)).toBe(true);
    expect(batcher.counters).toMatchObject({ batches: 1, preservations: 10, runs: 1, largest: 10 });
    expect(batcher.idle).toBe(true);
  });

  it('gives zeros no slot, splits runs where slots are not consecutive, and fails alone what fails', async () => {
    const target = new MemoryTarget();
    target.freeSlots = [3, 4, 9];
    target.noSpaceAt = new Set([3]); // the fourth original with data finds no space
    const batcher = new PreservationBatcher(target, 32);
    const data = [1, 2, 3, 4, 5, 6].map((seed) => patternBytes(chunkBytes, seed));
    const results = await Promise.allSettled([
      batcher.preserve(0, [1], false, fillWith(data[0])),
      batcher.preserve(1, [1], false, fillWith(undefined)), // zeros
      batcher.preserve(2, [1], false, fillWith(data[2])),
      batcher.preserve(3, [1], false, async () => {
        throw new LunfsError('EIO', 'the source read failed');
      }),
      batcher.preserve(4, [1], false, fillWith(data[4])),
      batcher.preserve(5, [1], false, fillWith(data[5])), // ENOSPC
      batcher.preserve(6, [1], false, fillWith(data[1])),
    ]);
    expect(results.map((result) => result.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
      'rejected',
      'fulfilled',
    ]);
    expect(((results[3] as PromiseRejectedResult).reason as LunfsError).code).toBe('EIO');
    expect(((results[5] as PromiseRejectedResult).reason as LunfsError).code).toBe('ENOSPC');
    // Slots 3, 4 (chunks 0, 2), 9 (chunk 4), then 100 (chunk 6). A run needs consecutive slots
    // and consecutive places in the buffer: the zero chunk between chunks 0 and 2 separates them.
    expect(target.runs).toEqual([
      { firstSlot: 3, chunks: 1 },
      { firstSlot: 4, chunks: 1 },
      { firstSlot: 9, chunks: 1 },
      { firstSlot: 100, chunks: 1 },
    ]);
    const ops = target.records.flat();
    expect(ops.map((op) => (op.kind === 'preserve' ? [op.chunk, op.slot] : []))).toEqual([
      [1, zeroSlot],
      [0, 3],
      [2, 4],
      [4, 9],
      [6, 100],
    ]);
    expect(target.slots.get(4)!.equals(data[2]!)).toBe(true);
    expect(target.slots.get(100)!.equals(data[1]!)).toBe(true);
  });

  it('does not reuse the buffer of a batch in which a read failed', async () => {
    const target = new MemoryTarget();
    const batcher = new PreservationBatcher(target, 4);
    const buffers: ArrayBufferLike[] = [];
    const seeing =
      (fill: PreservationFill): PreservationFill =>
      (place) => {
        buffers.push(place.buffer);
        return fill(place);
      };
    const settled = () => new Promise((resolve) => setImmediate(resolve)); // the batch's end
    await batcher.preserve(0, [1], false, seeing(fillWith(patternBytes(chunkBytes, 1))));
    await settled();
    await batcher.preserve(1, [1], false, seeing(fillWith(patternBytes(chunkBytes, 2))));
    await settled();
    expect(buffers[1]).toBe(buffers[0]); // a clean batch's buffer is used again
    await expect(
      batcher.preserve(
        2,
        [1],
        false,
        seeing(async () => {
          throw new LunfsError('EIO', 'a piece of the read failed');
        }),
      ),
    ).rejects.toThrow('a piece of the read failed');
    await settled();
    await batcher.preserve(3, [1], false, seeing(fillWith(patternBytes(chunkBytes, 3))));
    expect(buffers[3]).not.toBe(buffers[2]);
  });

  it('starts at most four reads in one turn of the event loop', async () => {
    const target = new MemoryTarget();
    const batcher = new PreservationBatcher(target, 32);
    let started = 0;
    const done: Promise<void>[] = [];
    for (let chunk = 0; chunk < 10; chunk += 1)
      done.push(
        batcher.preserve(chunk, [1], false, async (place) => {
          started += 1;
          place.fill(chunk + 1);
          return true;
        }),
      );
    const counts = [started];
    for (let turn = 0; turn < 3; turn += 1) {
      await new Promise((resolve) => setImmediate(resolve));
      counts.push(started);
    }
    await Promise.all(done);
    expect(counts).toEqual([4, 8, 10, 10]);
    expect(target.records.flat()).toHaveLength(10);
  });

  it('returns at most four recorded preservations in one turn, and is idle only after the last', async () => {
    const target = new MemoryTarget();
    let open!: () => void;
    target.commitGate = new Promise((resolve) => (open = resolve));
    const batcher = new PreservationBatcher(target, 32);
    let returned = 0;
    const done = [...Array(10).keys()].map((chunk) =>
      batcher
        .preserve(chunk, [1], false, fillWith(patternBytes(chunkBytes, chunk + 1)))
        .then(() => (returned += 1)),
    );
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    for (let index = 0; index < 20; index += 1) await turn();
    expect(target.records).toHaveLength(0); // all ten wait for the one commit
    open();
    // the commit's continuation, then the first four returns: microtasks of this same turn
    for (let index = 0; index < 20; index += 1) await Promise.resolve();
    const counts = [returned];
    const idle = [batcher.idle];
    for (let index = 0; index < 3; index += 1) {
      await turn();
      counts.push(returned);
      idle.push(batcher.idle);
    }
    await Promise.all(done);
    expect(target.records).toHaveLength(1);
    expect(counts).toEqual([4, 8, 10, 10]);
    expect(idle).toEqual([false, false, true, true]);
  });
});
