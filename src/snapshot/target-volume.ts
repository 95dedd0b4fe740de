// The target volume of a LUN's snapshots (seed 000's target VLUN): an internal thin volume on the
// pool's map and RAID that holds the preserved original data in chunk-sized slots, the writable
// snapshots' own chunks, and the bitmaps and log files of every snapshot of the LUN.
//
// Layout of the target's address space (target-layout.ts, docs/on-disk-format.md): a 4 KiB
// header, then its own MetadataStore (checkpoints and a journal), then data slots of chunkBytes.
//
// Order of a preservation (claims 14-16), for one chunk and every snapshot that needs it:
//   1. the original data is written to a free slot;
//   2. one journal record adds the pointer to each snapshot's log file and sets its bitmap bit,
//      with the crc32c of the slot's data;
//   3. the target is flushed (pool commit: the slot's data, the record and the slot's mapping are
//      durable together);
//   4. only then may the caller let the modified data reach the source.
// Concurrent preservations share every step: they go to the target in batches (one run of slots
// and one record for many chunks, preservation-batch.ts), and records are a group commit. One
// flush serves both the data and the record: records are written one at a time, each after the
// previous one's flush, so after a crash only the journal's last record can name a slot whose
// data did not arrive. Its preserves are checked against their crc at open, and one that does not
// match is undone (unpreserve): the source was not yet changed (step 4 waits for step 3), so the
// snapshots read the original there again, and the next destage over the chunk preserves it anew
// (claim 25). A batch holding a redirect (a snapshot's own data, which has no second copy)
// flushes the slots before the record. A slot is referenced by any number of log files; it is
// free again when none points at it, and a data unit of the target whose slots are all free is
// given back to the pool.
//
// TargetVolume is the class its users see (format, open, preserveBatched, redirect, drop, slot
// reads and writes); its parts are in this folder, one per file:
//   target-layout.ts   geometry, header, the metadata store's place, the target as its drive
//   target-slots.ts    slot reference counts, free slots (lowest first), pending slots
//   target-journal.ts  the group commit of records, and the check of the last record at open
//   preservation-batch.ts  preservations in batches: one buffer, runs of slots, one record

import { MetadataStore } from '../meta/metadata-store.js';
import type { LunRecord } from '../meta/pool-metadata.js';
import { ThinVolume, type MapSpace } from '../map/thin-volume.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { zeroSlot } from './log-file.js';
import {
  decodeHeader,
  encodeHeader,
  quorumLayout,
  targetDevice,
  targetHeaderBytes,
  type TargetGeometry,
} from './target-layout.js';
import { applyCounted, TargetJournal, unarrivedCopies } from './target-journal.js';
import { TargetSlots } from './target-slots.js';
import { PreservationBatcher, type PreservationFill } from './preservation-batch.js';
import { targetStateCodec, type TargetOp, type TargetState } from './target-metadata.js';

/**
 * The most chunks one batch of preservations holds: 4 MiB of 128 KiB chunks. While a LUN has
 * snapshots its destager runs up to 64 destages, so a burst may fill a batch and start the next;
 * measured batches hold 12 on average (bench/snapshots.sh part a).
 */
const maxBatchChunks = 32;

export class TargetVolume {
  /** Live bitmaps and log files (the store keeps its own committed image). */
  readonly state: TargetState;
  private readonly slots: TargetSlots;
  private readonly journal: TargetJournal;
  private readonly slotsPerUnit: number;
  /** Preservations of many chunks in few writes and one record (preservation-batch.ts). */
  private readonly batcher: PreservationBatcher;

  private constructor(
    readonly thin: ThinVolume,
    readonly geometry: TargetGeometry,
    private readonly store: MetadataStore<TargetState, TargetOp>,
    state: TargetState,
    private readonly log: Logger,
    /**
     * Whether a snapshot id still exists and is valid: preservations for others are not recorded.
     */
    isLive: (snapshotId: number) => boolean,
    /**
     * Whether metadata writes (checkpoints) may use reserved space: set while reserved snapshots
     * exist.
     */
    readonly reservation: { use: boolean },
  ) {
    this.state = state;
    this.slotsPerUnit = thin.unitBytesOf() / geometry.chunkBytes;
    this.slots = new TargetSlots(state);
    this.journal = new TargetJournal(this.store, state, this.slots, thin, isLive, log);
    this.batcher = new PreservationBatcher(
      {
        chunkBytes: geometry.chunkBytes,
        takeSlot: (useReservation) => this.takeSlot(useReservation),
        abandonSlot: (slot) => this.slots.abandon(slot),
        writeSlots: (firstSlot, data) => this.thin.write(this.slotOffset(firstSlot), data),
        commit: (ops) => this.journal.commit(ops),
      },
      maxBatchChunks,
    );
  }

  /** Batches recorded since the target was opened: see PreservationBatcher.counters. */
  get batchCounters(): Readonly<PreservationBatcher['counters']> {
    return this.batcher.counters;
  }

  /** Preservations in the batch being written now (0: none is). */
  get batchWritingCount(): number {
    return this.batcher.writingCount;
  }

  /** Makes a new target in the (already created) internal volume record. */
  static async format(
    space: MapSpace,
    record: LunRecord,
    geometry: TargetGeometry,
    log: Logger,
    isLive: (snapshotId: number) => boolean,
  ): Promise<TargetVolume> {
    const thin = new ThinVolume(space, record);
    await thin.write(0, encodeHeader(geometry, record.ownerLunId!));
    const reservation = { use: false };
    const copies = [{ drive: targetDevice(thin, record, reservation), driveIndex: 0 }];
    const state: TargetState = { snapshots: new Map() };
    const store = await MetadataStore.format(
      copies,
      quorumLayout(geometry),
      state,
      log,
      targetStateCodec,
    );
    // The journal is allocated now, so that appending a record never needs new space.
    const journalStart = geometry.quorumOffsetBytes + 2 * geometry.checkpointSlotBytes;
    thin.prepareWrite(journalStart, geometry.journalBytes);
    await thin.write(journalStart, Buffer.alloc(geometry.journalBytes));
    await thin.flush();
    return new TargetVolume(
      thin,
      geometry,
      store,
      { snapshots: new Map() },
      log,
      isLive,
      reservation,
    );
  }

  /**
   * Reads the header, the checkpoint and the journal (claim 14: bitmaps and logs into host memory).
   */
  static async open(
    space: MapSpace,
    record: LunRecord,
    liveSnapshotIds: Set<number>,
    log: Logger,
    readOnly: boolean,
    isLive: (snapshotId: number) => boolean,
  ): Promise<TargetVolume> {
    const thin = new ThinVolume(space, record);
    const header = Buffer.alloc(targetHeaderBytes);
    await thin.read(0, header);
    const geometry = decodeHeader(header, record.ownerLunId!);
    const reservation = { use: false };
    const copies = [{ drive: targetDevice(thin, record, reservation), driveIndex: 0 }];
    const { store, metadata, reports, lastRecordOps } = await MetadataStore.open(
      copies,
      quorumLayout(geometry),
      log,
      targetStateCodec,
    );
    if (reports[0]!.state !== 'good')
      throw new LunfsError(
        'ECORRUPT',
        `snapshot target of LUN ${record.ownerLunId}: ${reports[0]!.problems.join('; ')}`,
      );
    const target = new TargetVolume(thin, geometry, store, metadata, log, isLive, reservation);
    const undo = await unarrivedCopies(lastRecordOps, liveSnapshotIds, target, log);
    target.journal.rememberLastRecord(lastRecordOps);
    if (undo.length > 0) {
      log.warn(
        { chunks: undo.map((op) => op.chunk) },
        'preserved copies that did not reach the target before a crash are undone; the snapshots read the source there',
      );
      if (readOnly) for (const op of undo) applyCounted(target.state, op, target.slots);
      else await target.journal.applyAndRecord(undo, 'the undoing of preserved copies');
    }
    // Snapshots removed (or never committed) before a crash may still have images here.
    const stale = [...metadata.snapshots.keys()].filter((id) => !liveSnapshotIds.has(id));
    if (readOnly) {
      // Not recorded (nothing is written), but status must not count them.
      applyCounted(target.state, { kind: 'drop', ids: stale }, target.slots);
      return target;
    }
    if (stale.length > 0) await target.drop(stale);
    await target.releaseEmptyUnits();
    return target;
  }

  get chunkBytes(): number {
    return this.geometry.chunkBytes;
  }

  /** Slots in use (each chunkBytes). */
  get usedSlotCount(): number {
    return this.slots.usedCount;
  }

  referenceCount(slot: number): number {
    return this.slots.referenceCount(slot);
  }

  /**
   * Preserves one chunk's original for the snapshots in ids, in a batch with the preservations
   * made meanwhile (preservation-batch.ts): fill reads the original into the place the batch gives
   * it, and resolves to false when it is all zeros. Returns once the pointers are durable; throws
   * ENOSPC and records nothing for this chunk when the target cannot grow.
   */
  preserveBatched(
    chunkIndex: number,
    ids: number[],
    useReservation: boolean,
    fill: PreservationFill,
  ): Promise<void> {
    return this.batcher.preserve(chunkIndex, ids, useReservation, fill);
  }

  /** Gives snapshot id its own copy of the chunk, holding data (a whole chunk). */
  async redirect(
    id: number,
    chunkIndex: number,
    data: Buffer,
    useReservation: boolean,
  ): Promise<void> {
    const slot = await this.writeNewSlot(data, useReservation);
    await this.journal.commit([{ kind: 'redirect', id, chunk: chunkIndex, slot }]);
  }

  /**
   * Snapshot to is taken of snapshot from (issue 15): to's image becomes a copy of from's in the
   * live state at once, preservations for from still on their way serve to as well (with to's
   * reservation when it has one), and the record is durable when this resolves. The caller
   * keeps writes to from out meanwhile (a write in place into a slot from alone holds would
   * change to's data).
   */
  async copyImage(from: number, to: number, toReserved: boolean): Promise<void> {
    this.batcher.expandPending(from, to, toReserved);
    this.journal.expandPending(from, to);
    const op: TargetOp = { kind: 'copy-image', from, to };
    applyCounted(this.state, op, this.slots);
    await this.journal.commitApplied([op]);
  }

  /**
   * Drops snapshots' images, frees the slots no other snapshot points at, gives back empty units.
   * Never fails for lack of space: the pool metadata already says the snapshots are gone (it is
   * the authority; stale images are dropped at open), so the images leave memory at once and the
   * record of the drop is retried with later commits if the target cannot take it now.
   */
  async drop(ids: number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.journal.applyAndRecord(
      [{ kind: 'drop', ids }],
      `the drop of snapshot images ${ids.join(', ')}`,
    );
    await this.releaseEmptyUnits();
  }

  async readSlot(slot: number, offsetInChunk: number, target: Buffer): Promise<void> {
    if (slot === zeroSlot) {
      target.fill(0);
      return;
    }
    await this.thin.read(this.slotOffset(slot) + offsetInChunk, target);
  }

  /** Writes into a slot that one snapshot alone points at (a writable snapshot's own chunk). */
  async writeSlot(slot: number, offsetInChunk: number, data: Buffer): Promise<void> {
    assert(slot !== zeroSlot && this.referenceCount(slot) === 1, `write into shared slot ${slot}`);
    // The record of the slot's copy must not stay the journal's last: changed in place, the slot
    // would no longer match that record's crc at open, and a good copy would be undone.
    if (this.journal.lastRecordNames(slot)) await this.journal.commit([{ kind: 'drop', ids: [] }]);
    await this.thin.write(this.slotOffset(slot) + offsetInChunk, data);
  }

  /** Waits until no commit is queued or running. */
  async quiesce(): Promise<void> {
    while (!this.journal.idle || !this.batcher.idle)
      await new Promise((resolve) => setImmediate(resolve));
  }

  /** Makes writes to the target durable (pool commit). */
  flush(): Promise<void> {
    return this.thin.flush();
  }

  private slotOffset(slot: number): number {
    return this.geometry.dataStartBytes + slot * this.geometry.chunkBytes;
  }

  /** A pending slot with its space taken; ENOSPC thrown synchronously, with nothing taken. */
  private takeSlot(useReservation: boolean): number {
    const slot = this.slots.takePending();
    try {
      this.thin.useReservation = useReservation;
      this.thin.prepareWrite(this.slotOffset(slot), this.geometry.chunkBytes);
    } catch (error) {
      this.slots.abandon(slot);
      throw error;
    } finally {
      this.thin.useReservation = false;
    }
    return slot;
  }

  private async writeNewSlot(data: Buffer, useReservation: boolean): Promise<number> {
    assert(data.length === this.geometry.chunkBytes, 'a slot holds one whole chunk');
    const slot = this.takeSlot(useReservation);
    try {
      await this.thin.write(this.slotOffset(slot), data);
    } catch (error) {
      this.slots.abandon(slot);
      throw error;
    }
    return slot;
  }

  /** Unmaps data units of the target that no slot in use touches. */
  private async releaseEmptyUnits(): Promise<void> {
    const unitBytes = this.thin.unitBytesOf();
    const firstDataUnit = this.geometry.dataStartBytes / unitBytes;
    const usedUnits = this.slots.usedUnits(firstDataUnit, this.slotsPerUnit);
    const empty: number[] = [];
    this.thin.forEachMappedUnit((unitIndex) => {
      if (unitIndex >= firstDataUnit && !usedUnits.has(unitIndex)) empty.push(unitIndex);
    });
    for (const unitIndex of empty) await this.thin.discard(unitIndex * unitBytes, unitBytes);
    // the units are free once the unmapping is committed
    if (empty.length > 0) await this.thin.flush();
    this.slots.trimHighWater();
    if (empty.length > 0) this.log.debug({ units: empty.length }, 'empty target units released');
  }
}
