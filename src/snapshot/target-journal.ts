// The records of a snapshot target volume and their group commit, and at open the check of the
// journal's last record (claims 14-16, 25). Ops (preserve, redirect, unpreserve, drop) wait in one
// batch; a batch is one record in the target's MetadataStore, and the store's flush (a pool
// commit) makes the slots' data durable with it. Records are written one at a time, each after the
// previous one's flush, so after a crash only the journal's last record can name a slot whose
// data did not arrive: unarrivedCopies finds those, by the crc each preserve records.
//
// Invariants:
// - An op reaches the live state once: at commit, or before it for drops (applyAndRecord), which
//   then are not applied again.
// - A preservation for a snapshot deleted or invalidated meanwhile gets no pointer, and its slot
//   is free again; so is the slot of a preservation whose record failed.
// - A batch holding a redirect (a snapshot's own data, with no second copy) flushes the slots
//   before the record names them.

import type { MetadataStore } from '../meta/metadata-store.js';
import { crc32c } from '../native/native-kernels.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { zeroSlot } from './log-file.js';
import { applyTargetOp, type TargetOp, type TargetState } from './target-metadata.js';
import type { TargetSlots } from './target-slots.js';

interface Batch {
  ops: TargetOp[];
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Applies op to the live state, counting the slots' references as log files gain and lose them. */
export function applyCounted(state: TargetState, op: TargetOp, slots: TargetSlots): void {
  applyTargetOp(
    state,
    op,
    (slot) => slots.unreference(slot),
    (slot) => slots.reference(slot),
  );
}

export class TargetJournal {
  private queued: Batch | undefined;
  /** Ops already applied to the live state (drops): the batch does not apply them again. */
  private readonly appliedLive = new WeakSet<TargetOp>();
  /** Drops whose record could not be written yet: they go first into the next batch. */
  private unrecorded: TargetOp[] = [];
  private committing = false;
  /** The ops of the record being written now (applied to the live state once it is durable). */
  private recording: TargetOp[] = [];
  /** Slots that the journal's last record names with a crc (see unarrivedCopies). */
  private lastRecordSlots = new Set<number>();

  constructor(
    private readonly store: MetadataStore<TargetState, TargetOp>,
    private readonly state: TargetState,
    private readonly slots: TargetSlots,
    /** The target's thin volume: its flush is a pool commit. */
    private readonly volume: { flush(): Promise<void> },
    /**
     * Whether a snapshot id still exists and is valid: preservations for others are not recorded.
     */
    private readonly isLive: (snapshotId: number) => boolean,
    private readonly log: Logger,
  ) {}

  /** Whether no commit is queued or running. */
  get idle(): boolean {
    return !this.queued && !this.committing;
  }

  /** Whether the journal's last record names slot with a crc (its data must not change). */
  lastRecordNames(slot: number): boolean {
    return this.lastRecordSlots.has(slot);
  }

  /** At open: the ops of the journal's last record. */
  rememberLastRecord(ops: TargetOp[]): void {
    this.lastRecordSlots = crcSlotsOf(ops);
  }

  /**
   * Applies ops to the live state at once, then records them; when the target is too full to take
   * the record now, it goes first into the next commit (the live state already holds the ops).
   */
  async applyAndRecord(ops: TargetOp[], what: string): Promise<void> {
    for (const op of ops) {
      applyCounted(this.state, op, this.slots);
      this.appliedLive.add(op);
    }
    try {
      await this.commit(ops);
    } catch (error) {
      if (!(error instanceof LunfsError) || error.code !== 'ENOSPC') throw error;
      this.unrecorded.push(...ops);
      this.log.warn(
        `${what} is not recorded yet (the target is full); retried with the next commit`,
      );
    }
  }

  /**
   * Snapshot to was just taken of snapshot from (copy-image, applied to the live state): every
   * preserve for from that is queued or being recorded, and so not yet in the live state, serves
   * to as well once applied. On disk the copy-image record follows theirs, so replay gives to the
   * same pointers through the copy.
   */
  expandPending(from: number, to: number): void {
    for (const op of [...this.recording, ...(this.queued?.ops ?? [])])
      if (op.kind === 'preserve' && op.ids.includes(from) && !op.ids.includes(to)) op.ids.push(to);
  }

  /** Records ops the caller applied to the live state already (they are not applied again). */
  commitApplied(ops: TargetOp[]): Promise<void> {
    for (const op of ops) this.appliedLive.add(op);
    return this.commit(ops);
  }

  /** Group commit: flush the slots' data, then append one journal record for every op waiting. */
  commit(ops: TargetOp[]): Promise<void> {
    if (!this.queued) {
      let resolve!: () => void;
      let reject!: (error: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.queued = { ops: [], promise, resolve, reject };
      void this.runBatches();
    }
    this.queued.ops.push(...ops);
    return this.queued.promise;
  }

  private async runBatches(): Promise<void> {
    if (this.committing) return;
    this.committing = true;
    try {
      await Promise.resolve(); // let the ops of this tick join the batch
      while (this.queued) {
        const batch = this.queued;
        this.queued = undefined;
        const retried = this.unrecorded;
        this.unrecorded = [];
        batch.ops = this.forLiveSnapshots([...retried, ...batch.ops]);
        try {
          this.recording = batch.ops;
          await this.record(batch.ops);
          batch.resolve();
        } catch (error) {
          this.log.error({ err: error }, 'snapshot target commit failed');
          this.unrecorded = [...retried, ...this.unrecorded];
          // The slots written for the failed preservations hold nothing anyone points at.
          for (const op of batch.ops) {
            if ((op.kind !== 'preserve' && op.kind !== 'redirect') || op.slot === zeroSlot)
              continue;
            this.slots.abandon(op.slot);
          }
          batch.reject(error);
        } finally {
          this.recording = [];
        }
      }
    } finally {
      this.committing = false;
    }
  }

  /** A snapshot deleted or invalidated while its original was being copied gets no pointer. */
  private forLiveSnapshots(ops: TargetOp[]): TargetOp[] {
    const unused: number[] = [];
    const kept = ops.flatMap((op): TargetOp[] => {
      if (op.kind === 'preserve') {
        const ids = op.ids.filter((id) => this.isLive(id));
        if (ids.length > 0) return [{ ...op, ids }];
        if (op.slot !== zeroSlot) unused.push(op.slot);
        return [];
      }
      if (op.kind === 'redirect' && !this.isLive(op.id)) {
        unused.push(op.slot);
        return [];
      }
      return [op];
    });
    for (const slot of unused) this.slots.abandon(slot);
    return kept;
  }

  /** Writes one batch's record, durable with the slots' data, then applies it to the live state. */
  private async record(ops: TargetOp[]): Promise<void> {
    // A snapshot's own data (redirect) has no copy to fall back on: it is flushed before the
    // record names it. Preserved copies are checked against their crc at open instead.
    const flushFirst = ops.some((op) => op.kind === 'redirect');
    if (flushFirst) await this.volume.flush();
    // Steps 2-3: the pointers and bits; the store's flush makes the slots durable with them.
    await this.store.commit(ops, () => this.volume.flush());
    this.lastRecordSlots = crcSlotsOf(ops);
    for (const op of ops) if (!this.appliedLive.has(op)) applyCounted(this.state, op, this.slots);
    for (const op of ops)
      if (op.kind === 'preserve' || op.kind === 'redirect') this.slots.settle(op.slot);
  }
}

/** What unarrivedCopies reads of the target (TargetVolume has it). */
export interface RecoverySource {
  readonly state: TargetState;
  readonly chunkBytes: number;
  readSlot(slot: number, offsetInChunk: number, target: Buffer): Promise<void>;
}

/** The preserves of the journal's last record whose slot does not hold the data its crc names. */
export async function unarrivedCopies(
  lastRecordOps: TargetOp[],
  liveSnapshotIds: Set<number>,
  target: RecoverySource,
  log: Logger,
): Promise<Array<Extract<TargetOp, { kind: 'unpreserve' }>>> {
  const undo: Array<Extract<TargetOp, { kind: 'unpreserve' }>> = [];
  const data = Buffer.alloc(target.chunkBytes);
  for (const op of lastRecordOps) {
    if (op.kind !== 'preserve' || op.crc === undefined || op.slot === zeroSlot) continue;
    // Images of snapshots that are gone are dropped anyway (and their slots may be reused). Every
    // live image that points at the slot got that pointer from this preserve: directly, or
    // through a copy-image later in the same record (a snapshot of one it names); the slot was
    // free when the preserve took it.
    const ids: number[] = [];
    for (const [id, image] of target.state.snapshots)
      if (liveSnapshotIds.has(id) && image.log.get(op.chunk) === op.slot) ids.push(id);
    if (ids.length === 0) continue;
    let arrived = false;
    try {
      await target.readSlot(op.slot, 0, data);
      arrived = crc32c(data) === op.crc;
    } catch (error) {
      log.warn({ err: error, slot: op.slot }, 'preserved slot unreadable at open');
    }
    if (!arrived) undo.push({ kind: 'unpreserve', chunk: op.chunk, slot: op.slot, ids });
  }
  return undo;
}

/** The slots that preserves written before their data was flushed (with a crc) name. */
function crcSlotsOf(ops: TargetOp[]): Set<number> {
  return new Set(
    ops.flatMap((op) => (op.kind === 'preserve' && op.crc !== undefined ? [op.slot] : [])),
  );
}
