// The target volume's own metadata (seed 000): every snapshot's bitmap and log file, changed only
// by TargetOp values through applyTargetOp, at run time and at journal replay alike. It is kept
// by a MetadataStore inside the target volume itself (checkpoint slots + journal), so "the
// bitmaps and log files are written to the target VLUN" (claims 16, 18, 20, 24) and read back
// into host memory when the pool opens (claim 14). Bytes: docs/on-disk-format.md.

import type { StoreCodec } from '../meta/metadata-store.js';
import { LunfsError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { LogFile } from './log-file.js';
import { SnapshotBitmap } from './snapshot-bitmap.js';

export interface SnapshotImage {
  bitmap: SnapshotBitmap;
  log: LogFile;
}

export interface TargetState {
  snapshots: Map<number, SnapshotImage>;
}

export type TargetOp =
  /**
   * One preserved copy of a chunk's original data serves every snapshot in ids (claims 1, 13, 22).
   */
  | {
      kind: 'preserve';
      chunk: number;
      slot: number;
      ids: number[];
      /**
       * crc32c of the slot's data, when the record was written before that data was flushed (one
       * flush for both): if the record is the journal's last and the slot does not match after a
       * crash, the copy is undone at open (unpreserve) and the snapshots read the unchanged source.
       */
      crc?: number;
    }
  /** Undoes a preserve whose copy did not reach the target before a crash: the bits clear again. */
  | { kind: 'unpreserve'; chunk: number; slot: number; ids: number[] }
  /** A write to snapshot id gave it its own copy of the chunk (seed 002 claims 1-3). */
  | { kind: 'redirect'; id: number; chunk: number; slot: number }
  /** The snapshots are gone (deleted, or invalidated): their bitmaps and logs are dropped. */
  | { kind: 'drop'; ids: number[] }
  /**
   * Snapshot to is taken of snapshot from (issue 15): its bitmap and log file become a copy of
   * from's, every pointer a new reference to the same slot (seed 004 [0091]: the predecessor's
   * map is populated with the successor's, and the data is shared).
   */
  | { kind: 'copy-image'; from: number; to: number };

/**
 * Applies op; calls replaced(slot) for every pointer it drops or overwrites (slot reference
 * counts).
 */
export function applyTargetOp(
  state: TargetState,
  op: TargetOp,
  replaced?: (slot: number) => void,
  added?: (slot: number) => void,
): void {
  switch (op.kind) {
    case 'preserve':
      for (const id of op.ids) point(state, id, op.chunk, op.slot, replaced, added);
      return;
    case 'unpreserve':
      for (const id of op.ids) {
        const image = state.snapshots.get(id);
        if (!image || image.log.get(op.chunk) !== op.slot) continue;
        image.log.delete(op.chunk);
        image.bitmap.clear(op.chunk);
        replaced?.(op.slot);
      }
      return;
    case 'redirect':
      point(state, op.id, op.chunk, op.slot, replaced, added);
      return;
    case 'copy-image': {
      const source = state.snapshots.get(op.from);
      const old = state.snapshots.get(op.to);
      if (old && replaced) old.log.forEach((_, slot) => replaced(slot));
      const image: SnapshotImage = {
        bitmap: source ? source.bitmap.clone() : new SnapshotBitmap(),
        log: source ? source.log.clone() : new LogFile(),
      };
      if (added) image.log.forEach((_, slot) => added(slot));
      state.snapshots.set(op.to, image);
      return;
    }
    case 'drop':
      for (const id of op.ids) {
        const image = state.snapshots.get(id);
        if (!image) continue;
        if (replaced) image.log.forEach((_, slot) => replaced(slot));
        state.snapshots.delete(id);
      }
      return;
  }
}

function point(
  state: TargetState,
  id: number,
  chunk: number,
  slot: number,
  replaced?: (slot: number) => void,
  added?: (slot: number) => void,
): void {
  let image = state.snapshots.get(id);
  if (!image) {
    image = { bitmap: new SnapshotBitmap(), log: new LogFile() };
    state.snapshots.set(id, image);
  }
  // Log pointer first, then the bitmap bit that says the pointer is there (claim 22's order).
  const old = image.log.set(chunk, slot);
  image.bitmap.set(chunk);
  added?.(slot);
  if (old !== undefined) replaced?.(old);
}

/**
 * Checkpoint payload: u32 JSON length, JSON [{id, bitmapBytes, pointerCount}], then per snapshot
 * its bitmap bytes and its pointers as (u32 chunk, u32 slot) pairs in ascending chunk order.
 */
export function encodeTargetState(state: TargetState): Buffer {
  const parts: Buffer[] = [];
  const index: Array<{ id: number; bitmapBytes: number; pointerCount: number }> = [];
  for (const [id, image] of state.snapshots) {
    const bitmap = image.bitmap.toBytes();
    const pointers = Buffer.alloc(image.log.count * 8);
    let position = 0;
    image.log.forEach((chunk, slot) => {
      pointers.writeUInt32LE(chunk, position);
      pointers.writeUInt32LE(slot, position + 4);
      position += 8;
    });
    assert(position === pointers.length, 'log file pointer count mismatch');
    index.push({ id, bitmapBytes: bitmap.length, pointerCount: image.log.count });
    parts.push(bitmap, pointers);
  }
  const json = Buffer.from(JSON.stringify(index));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.length, 0);
  return Buffer.concat([length, json, ...parts]);
}

export function decodeTargetState(payload: Buffer): TargetState {
  try {
    const jsonLength = payload.readUInt32LE(0);
    const index = JSON.parse(payload.toString('utf8', 4, 4 + jsonLength)) as Array<{
      id: number;
      bitmapBytes: number;
      pointerCount: number;
    }>;
    const state: TargetState = { snapshots: new Map() };
    let position = 4 + jsonLength;
    for (const { id, bitmapBytes, pointerCount } of index) {
      const bitmap = SnapshotBitmap.fromBytes(payload.subarray(position, position + bitmapBytes));
      position += bitmapBytes;
      const log = new LogFile();
      for (let count = 0; count < pointerCount; count += 1) {
        log.set(payload.readUInt32LE(position), payload.readUInt32LE(position + 4));
        position += 8;
      }
      state.snapshots.set(id, { bitmap, log });
    }
    if (position !== payload.length)
      throw new Error(`${payload.length - position} bytes past the last snapshot`);
    return state;
  } catch (error) {
    throw new LunfsError(
      'ECORRUPT',
      `snapshot target checkpoint does not decode: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

export const targetStateCodec: StoreCodec<TargetState, TargetOp> = {
  checkpointMagic: 'LUNFSTCK',
  journalMagic: 'LUNFSTJN',
  encode: encodeTargetState,
  decode: decodeTargetState,
  apply: (state, op) => applyTargetOp(state, op),
};
