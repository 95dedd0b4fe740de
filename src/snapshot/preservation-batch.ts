// Preservations in batches (issue 14): the originals of many chunks go to the target volume in few
// large writes and one journal record, instead of one slot write and one record each.
//
// A preservation joins the open batch and gets a chunk-sized place in the batch's buffer; the
// caller's fill reads the chunk's original straight into that place (no copy). The batch is
// sealed when every fill that joined it has ended and no earlier batch is still being written
// (or when it is full): its originals then take slots, consecutive where the free slots allow,
// each run of consecutive slots is one write of the target's thin volume (one RAID write, full
// stripes on RAID-5 where the run covers them), the crc32c of every chunk is computed in one call
// on libuv's thread pool while the runs are written, and one group commit records every pointer
// with its crc (claims 14-16). Only when that commit is durable does any of the batch's
// preservations return, so no chunk's new data reaches the source before its original is safe.
//
// After a crash the journal's last record may name slots of a batch whose writes were torn in the
// middle: each preserve carries its chunk's crc, and the open undoes those whose slot does not
// match (unarrivedCopies in target-journal.ts, claim 25), so a batch is recoverable at every step.
//
// Invariants:
// - At most one batch is being written and committed at a time, and a batch's buffer is not
//   reused before its writes have ended.
// - A preservation whose fill fails, or whose slot cannot get space (ENOSPC), fails alone; the
//   others of its batch go on.

import { crc32cBlocksAsync } from '../native/native-kernels.js';
import type { TargetOp } from './target-metadata.js';
import { zeroSlot } from './log-file.js';

/** What a batch needs of the target volume (TargetVolume provides it). */
export interface BatchTarget {
  readonly chunkBytes: number;
  /** Takes a pending slot and its space (ENOSPC thrown synchronously, nothing taken). */
  takeSlot(useReservation: boolean): number;
  /** Frees a pending slot no record will name. */
  abandonSlot(slot: number): void;
  /** Writes consecutive slots from firstSlot with data (a whole number of chunks). */
  writeSlots(firstSlot: number, data: Buffer): Promise<void>;
  /** The group commit of the target's journal. */
  commit(ops: TargetOp[]): Promise<void>;
}

/**
 * Fills buffer (chunkBytes) with the chunk's original; resolves to false when the original is
 * all zeros (it needs no slot).
 */
export type PreservationFill = (buffer: Buffer) => Promise<boolean>;

/** Fills started in one turn of the event loop at most (see startFill). */
const fillsPerTurn = 4;

/** Preservations returned in one turn of the event loop at most (see release). */
const releasesPerTurn = 4;

interface Entry {
  chunkIndex: number;
  ids: number[];
  useReservation: boolean;
  /** Its place in the batch's buffer. */
  position: number;
  /** Set once the fill has ended: 'data', 'zero', or the fill's error. */
  outcome?: 'data' | 'zero' | { error: unknown };
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Batch {
  entries: Entry[];
  buffer: Buffer;
  fillsPending: number;
  sealed: boolean;
  /** A write of its slots failed. */
  failed?: boolean;
}

export class PreservationBatcher {
  /** Batches waiting for their turn, oldest first (the open one last). */
  private readonly queue: Batch[] = [];
  private open: Batch | undefined;
  private writing = false;
  /** The batch being written and recorded now. */
  private writingBatch: Batch | undefined;
  private sealScheduled = false;
  private readonly spareBuffers: Buffer[] = [];
  private fillsThisTurn = 0;
  private readonly deferredFills: Array<() => void> = [];
  /** Preservations recorded and not yet returned (see release), oldest first. */
  private readonly unreleased: Entry[] = [];
  private releaseScheduled = false;
  /**
   * Batches recorded, the preservations and slot runs in them, and the most preservations one
   * batch held (for the benchmark and the tests).
   */
  readonly counters = { batches: 0, preservations: 0, runs: 0, largest: 0 };
  /** Preservations in the batch being written now (0: none is). */
  writingCount = 0;

  constructor(
    private readonly target: BatchTarget,
    /** The most preservations one batch holds (its buffer is this many chunks). */
    private readonly maxEntries: number,
  ) {}

  /** Whether no batch is open, waiting or being written, and every recorded one has returned. */
  get idle(): boolean {
    return this.queue.length === 0 && !this.writing && this.unreleased.length === 0;
  }

  /**
   * Preserves one chunk's original for the snapshots in ids: resolves once the original and the
   * pointers are durable; throws the fill's error, or ENOSPC when the target cannot grow (then
   * nothing of this chunk was recorded).
   */
  preserve(
    chunkIndex: number,
    ids: number[],
    useReservation: boolean,
    fill: PreservationFill,
  ): Promise<void> {
    let batch = this.open;
    if (!batch || batch.sealed || batch.entries.length >= this.maxEntries) {
      batch = {
        entries: [],
        buffer:
          this.spareBuffers.pop() ??
          Buffer.allocUnsafeSlow(this.maxEntries * this.target.chunkBytes),
        fillsPending: 0,
        sealed: false,
      };
      if (this.open && !this.open.sealed) this.open.sealed = true; // full: no one joins it
      this.queue.push(batch);
      this.open = batch;
    }
    const chosen = batch;
    return new Promise<void>((resolve, reject) => {
      const entry: Entry = {
        chunkIndex,
        ids,
        useReservation,
        position: chosen.entries.length,
        resolve,
        reject,
      };
      chosen.entries.push(entry);
      chosen.fillsPending += 1;
      const chunkBytes = this.target.chunkBytes;
      const place = chosen.buffer.subarray(
        entry.position * chunkBytes,
        (entry.position + 1) * chunkBytes,
      );
      this.startFill(() => {
        fill(place).then(
          (holdsData) => this.filled(chosen, entry, holdsData ? 'data' : 'zero'),
          (error: unknown) => this.filled(chosen, entry, { error }),
        );
      });
    });
  }

  /**
   * Snapshot to was just taken of snapshot from: preservations for from not yet recorded serve to
   * as well (their ops name entry.ids).
   */
  expandPending(from: number, to: number, toReserved: boolean): void {
    const batches = this.writingBatch ? [this.writingBatch, ...this.queue] : this.queue;
    for (const batch of batches)
      for (const entry of batch.entries)
        if (entry.ids.includes(from) && !entry.ids.includes(to)) {
          entry.ids.push(to);
          // a slot not yet taken may draw on to's reservation
          if (toReserved) entry.useReservation = true;
        }
  }

  /**
   * Starts at most fillsPerTurn fills in one turn of the event loop, the rest in later turns: the
   * destager starts up to 64 destages at once, and on a drive served inline each fill reads its
   * 128 KiB on this thread (about 50 us), so 64 at once would keep a FUSE request waiting for
   * milliseconds.
   */
  private startFill(start: () => void): void {
    if (this.fillsThisTurn < fillsPerTurn) {
      this.fillsThisTurn += 1;
      if (this.fillsThisTurn === 1) setImmediate(this.nextTurn);
      start();
      return;
    }
    this.deferredFills.push(start);
  }

  private readonly nextTurn = (): void => {
    this.fillsThisTurn = 0;
    const starts = this.deferredFills.splice(0, fillsPerTurn);
    for (const start of starts) this.startFill(start);
  };

  /**
   * Returns recorded preservations, at most releasesPerTurn in one turn of the event loop: each
   * caller then writes its chunk's new data, on a drive served inline on this thread, and a whole
   * batch (up to maxEntries) returned at once kept FUSE requests waiting (event-loop delay p99
   * 4.6 ms with 32 snapshots, 2.6 ms without).
   */
  private release(entries: Entry[]): void {
    this.unreleased.push(...entries);
    if (!this.releaseScheduled) this.releaseSome();
  }

  private readonly releaseSome = (): void => {
    this.releaseScheduled = false;
    for (const entry of this.unreleased.splice(0, releasesPerTurn)) entry.resolve();
    if (this.unreleased.length > 0 && !this.releaseScheduled) {
      this.releaseScheduled = true;
      setImmediate(this.releaseSome);
    }
  };

  private filled(batch: Batch, entry: Entry, outcome: Entry['outcome']): void {
    entry.outcome = outcome;
    batch.fillsPending -= 1;
    this.scheduleNext();
  }

  /**
   * Lets the fills of this turn of the event loop join before the oldest batch is sealed (the
   * destager starts its destages together), then writes it if its fills have all ended.
   */
  private scheduleNext(): void {
    if (this.writing || this.sealScheduled) return;
    const next = this.queue[0];
    if (!next || next.fillsPending > 0) return;
    this.sealScheduled = true;
    setImmediate(() => {
      this.sealScheduled = false;
      const batch = this.queue[0];
      if (this.writing || !batch || batch.fillsPending > 0) return;
      this.queue.shift();
      batch.sealed = true;
      if (this.open === batch) this.open = undefined;
      this.writing = true;
      this.writingBatch = batch;
      this.writingCount = batch.entries.length;
      void this.write(batch).finally(() => {
        this.writing = false;
        this.writingBatch = undefined;
        this.writingCount = 0;
        // A failed read or write may leave I/O of its other pieces still using the buffer (a
        // RAID request gives up at its first failed piece): such a buffer is not reused.
        const clean =
          !batch.failed && batch.entries.every((entry) => typeof entry.outcome !== 'object');
        if (clean && this.spareBuffers.length < 2) this.spareBuffers.push(batch.buffer);
        this.scheduleNext();
      });
    });
  }

  private async write(batch: Batch): Promise<void> {
    const chunkBytes = this.target.chunkBytes;
    const ops: TargetOp[] = [];
    const recorded: Entry[] = [];
    // Slots for the originals, in the order of their places in the buffer.
    const withData: Array<{ entry: Entry; slot: number }> = [];
    for (const entry of batch.entries) {
      const outcome = entry.outcome;
      if (typeof outcome === 'object') {
        entry.reject(outcome.error);
        continue;
      }
      if (outcome === 'zero') {
        ops.push({ kind: 'preserve', chunk: entry.chunkIndex, slot: zeroSlot, ids: entry.ids });
        recorded.push(entry);
        continue;
      }
      let slot: number;
      try {
        slot = this.target.takeSlot(entry.useReservation);
      } catch (error) {
        entry.reject(error); // ENOSPC for this one; the others go on
        continue;
      }
      withData.push({ entry, slot });
    }
    let written: Array<{ entry: Entry; slot: number; crc: number }> = [];
    if (withData.length > 0) {
      try {
        written = await this.writeRuns(batch.buffer, withData, chunkBytes);
      } catch (error) {
        batch.failed = true;
        for (const { entry, slot } of withData) {
          this.target.abandonSlot(slot);
          entry.reject(error);
        }
      }
    }
    for (const { entry, slot, crc } of written) {
      ops.push({ kind: 'preserve', chunk: entry.chunkIndex, slot, ids: entry.ids, crc });
      recorded.push(entry);
    }
    if (ops.length === 0) return;
    this.counters.batches += 1;
    this.counters.preservations += recorded.length;
    this.counters.largest = Math.max(this.counters.largest, recorded.length);
    try {
      await this.target.commit(ops); // a failed commit abandons the slots it names
      this.release(recorded);
    } catch (error) {
      for (const entry of recorded) entry.reject(error);
    }
  }

  /**
   * Writes the originals to their slots, one write per run of consecutive slots whose places in
   * the buffer are consecutive too (the usual case: the whole batch is one run), and computes
   * each chunk's crc32c meanwhile.
   */
  private async writeRuns(
    buffer: Buffer,
    withData: Array<{ entry: Entry; slot: number }>,
    chunkBytes: number,
  ): Promise<Array<{ entry: Entry; slot: number; crc: number }>> {
    const runs: Array<{ slot: number; data: Buffer }> = [];
    let start = 0;
    for (let index = 1; index <= withData.length; index += 1) {
      const previous = withData[index - 1]!;
      const current = withData[index];
      if (
        current &&
        current.slot === previous.slot + 1 &&
        current.entry.position === previous.entry.position + 1
      )
        continue;
      const first = withData[start]!;
      const count = index - start;
      runs.push({
        slot: first.slot,
        data: buffer.subarray(
          first.entry.position * chunkBytes,
          (first.entry.position + count) * chunkBytes,
        ),
      });
      start = index;
    }
    this.counters.runs += runs.length;
    // One crc per chunk of every place in the buffer up to the last original (zeros and failed
    // fills between them cost a crc they do not need, and save a call per run).
    const lastPosition = withData[withData.length - 1]!.entry.position;
    const crcs = new Uint32Array(lastPosition + 1);
    const crcDone = crc32cBlocksAsync(
      buffer.subarray(0, (lastPosition + 1) * chunkBytes),
      chunkBytes,
      crcs,
    );
    const writes = runs.map((run) => this.target.writeSlots(run.slot, run.data));
    const results = await Promise.allSettled([crcDone, ...writes]);
    const failure = results.find(
      (result): result is PromiseRejectedResult => result.status === 'rejected',
    );
    if (failure) throw failure.reason;
    return withData.map(({ entry, slot }) => ({ entry, slot, crc: crcs[entry.position]! }));
  }
}
