// The degraded-row log: what the write intent cannot resolve. With one member of a RAID-5 RStore
// out of service, that member's data exists only as the XOR of the row's other units. A write to
// the row changes data units and the parity; a power cut that tears them apart (one written, the
// other not, sector by sector) leaves that XOR wrong, and so the out-of-service member's data,
// though nobody wrote it and it was flushed long before. The write intent says which RStores may
// hold such rows, but their parity can no longer be recomputed: the missing unit is part of it.
//
// So before any member of a row is written while the row has a data member out of service, the
// log receives the missing member's contents over the range the write touches, as they will be
// once the write is done (md's partial parity log keeps the XOR of the units a write leaves alone,
// which is the same thing once the others are XORed in). The record is durable on every copy before
// the row's first write. After a power cut, each record not yet cleared makes the parity of its
// range the XOR of the surviving data as it is and the logged contents: the missing member reads
// back exactly as logged, the data units as they are (each sector a value written to it).
//
// Records are cleared by a watermark once a flush of the data drives made their rows consistent:
// every record whose write had finished when a flush began (and every record before it) is
// obsolete when the flush is done, and the watermark is durable before flushDataDrives returns, so
// a
// record can never outlive a later flushed write to its range (it would undo that write).
//
// On disk (every drive holding a pool metadata copy, at the layout's rowLogOffsetBytes): two 4 KiB
// header slots (the one with the higher generation holds the watermark), then a ring of records,
// each a 4 KiB header and its data (which may wrap to the ring's start). Records are written in
// batches (one write and one flush per
// copy for all records waiting), never over a record not yet cleared. A record names the log's
// nonce, a random number made at pool creation that only the header slots hold, so user data that
// reached the ring inside a record can never pass for a record itself.

import { randomBytes } from 'node:crypto';
import type { BlockDevice } from '../block/block-device.js';
import {
  checkSeal,
  formatVersion,
  hasMagic,
  isReadableFormatVersion,
  seal,
  writeMagic,
} from '../meta/checksum.js';
import { crc32c } from '../native/native-kernels.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { Mutex } from '../util/mutex.js';

const headerSlotBytes = 4096;
const recordHeaderBytes = 4096;
const headerMagic = 'LUNFSRLH';
const recordMagic = 'LUNFSRLR';
/**
 * Bytes of the log area for pools with this stripe unit and smallest drive: a ring for records of
 * a whole stripe unit, as many as rows may be written degraded or held in memory at once: 16, or
 * fewer (at least 4) where 16 would take more than 1/64 of the smallest drive.
 */
export function rowLogBytesFor(stripeUnitBytes: number, smallestDriveBytes: number): number {
  const recordBytes = recordHeaderBytes + stripeUnitBytes;
  const records = Math.max(4, Math.min(16, Math.floor(smallestDriveBytes / 64 / recordBytes)));
  return 2 * headerSlotBytes + records * recordBytes;
}

/** What a write is about to do to a row with a data member out of service. */
export interface RowLogEntry {
  rstoreId: number;
  row: number;
  /** The member out of service. */
  memberIndex: number;
  offsetInUnit: number;
  /** That member's contents over [offsetInUnit, offsetInUnit + length) once the write is done. */
  data: Buffer;
}

export interface RowLogCopy {
  drive: BlockDevice & { readonly path: string };
  driveIndex: number;
}

interface Placed {
  seq: number;
  /** Ring bytes in a count that never wraps: the record lies at start % ringBytes. */
  start: number;
  end: number;
  done: boolean;
}

interface Waiting {
  entry: RowLogEntry;
  resolve: (seq: number) => void;
  reject: (error: unknown) => void;
}

export interface RowLogCounters {
  /** Records written since the pool was opened. */
  records: number;
  /** Records replayed at open (parity of their ranges recomputed). */
  replayed: number;
  /** Records waiting to be cleared. */
  live: number;
}

export class DegradedRowLog {
  private readonly ringBytes: number;
  private copies: RowLogCopy[];
  private head = 0;
  private readonly live: Placed[] = [];
  private reserved = 0;
  private waiting: Waiting[] = [];
  private writing = false;
  private readonly clearMutex = new Mutex();
  /** Settles (and is replaced) whenever a record finishes or the watermark moves. */
  private changed = deferred();
  private recordsWritten = 0;
  private recordsReplayed = 0;

  get counters(): RowLogCounters {
    return { records: this.recordsWritten, replayed: this.recordsReplayed, live: this.live.length };
  }

  /** The pool replayed this many records at open (resyncMirrors, pool/pool-recovery.ts). */
  noteReplayed(count: number): void {
    this.recordsReplayed += count;
  }

  private constructor(
    copies: RowLogCopy[],
    private readonly offsetBytes: number,
    areaBytes: number,
    private readonly nonce: bigint,
    private readonly log: Logger,
    private generation: number,
    private clearedSeq: number,
    private nextSeq: number,
    /** Flushes the data drives (which clears what it can): called when the ring is full. */
    private readonly flushData: () => Promise<void>,
  ) {
    this.copies = copies;
    this.ringBytes = areaBytes - 2 * headerSlotBytes;
    assert(this.ringBytes > 0 && this.ringBytes % 4096 === 0, `row log area of ${areaBytes} bytes`);
  }

  /** A new pool: an empty ring and a header on every copy. */
  static async format(copies: RowLogCopy[], offsetBytes: number, areaBytes: number): Promise<void> {
    const nonce = randomBytes(8).readBigUInt64LE(0);
    await Promise.all(
      copies.map(async (copy) => {
        await copy.drive.discard(offsetBytes, areaBytes);
        await copy.drive.write(offsetBytes, encodeHeader(1, 0, nonce));
        await copy.drive.flush();
      }),
    );
  }

  /**
   * Reads every copy: the highest watermark, and the records past it whose header and data
   * check (a record on any copy was complete there; its write started only once all copies had it).
   */
  static async open(
    copies: RowLogCopy[],
    offsetBytes: number,
    areaBytes: number,
    log: Logger,
    flushData: () => Promise<void>,
  ): Promise<{ rowLog: DegradedRowLog; entries: RowLogEntry[] }> {
    let generation = 0;
    let clearedSeq = 0;
    let nonce = 0n;
    const areas: Buffer[] = [];
    for (const copy of copies) {
      try {
        const area = Buffer.alloc(areaBytes);
        await copy.drive.read(offsetBytes, area);
        areas.push(area);
      } catch (error) {
        log.warn(
          { drive: copy.drive.path, error: (error as Error).message },
          'degraded-row log copy unreadable',
        );
        continue;
      }
      for (const slot of [0, 1]) {
        const header = decodeHeader(
          areas[areas.length - 1]!.subarray(slot * headerSlotBytes, (slot + 1) * headerSlotBytes),
        );
        if (header && header.generation > generation) ({ generation, clearedSeq, nonce } = header);
      }
    }
    if (generation === 0 && copies.length > 0)
      throw new LunfsError(
        'ECORRUPT',
        `no degraded-row log header on ${copies.map((copy) => copy.drive.path).join(', ')}`,
      );
    const found = new Map<number, RowLogEntry>();
    let maxSeq = 0;
    for (const area of areas) {
      const ring = area.subarray(2 * headerSlotBytes);
      for (let position = 0; position + recordHeaderBytes <= ring.length;) {
        const record = decodeRecord(ring, position, nonce);
        if (!record) {
          position += recordHeaderBytes;
          continue;
        }
        found.set(record.seq, record.entry);
        maxSeq = Math.max(maxSeq, record.seq);
        // past the end when its data wrapped
        position += recordHeaderBytes + record.entry.data.length;
      }
    }
    const entries = [...found]
      .filter(([seq]) => seq > clearedSeq)
      .sort(([a], [b]) => a - b)
      .map(([, entry]) => entry);
    const rowLog = new DegradedRowLog(
      copies,
      offsetBytes,
      areaBytes,
      nonce,
      log,
      generation,
      clearedSeq,
      Math.max(maxSeq, clearedSeq) + 1,
      flushData,
    );
    return { rowLog, entries };
  }

  /** Ring bytes a record of this much data takes. */
  static recordBytes(dataBytes: number): number {
    return recordHeaderBytes + dataBytes;
  }

  /**
   * Room for one record of up to dataBytes, taken before the row's lock (waiting may need a flush,
   * and a flush writes back rows under their locks). Returns its release.
   */
  async reserve(dataBytes: number): Promise<() => void> {
    assert(
      DegradedRowLog.recordBytes(dataBytes) <= this.ringBytes,
      `a row log record of ${dataBytes} bytes does not fit the ring`,
    );
    for (;;) {
      const release = this.tryReserve(dataBytes);
      if (release) return release;
      const changed = this.changed.promise;
      if (this.clearableSeq() > this.clearedSeq) await this.flushData();
      else await changed;
    }
  }

  /** reserve() without waiting: undefined when the ring has no room. */
  tryReserve(dataBytes: number): (() => void) | undefined {
    const need = DegradedRowLog.recordBytes(dataBytes);
    const used = this.live.length === 0 ? 0 : this.head - this.live[0]!.start;
    if (used + this.reserved + need > this.ringBytes) return undefined;
    this.reserved += need;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.reserved -= need;
      this.wake();
    };
  }

  /**
   * Makes the record durable on every copy (batched with the records waiting beside it). The
   * caller holds a reservation and tells done(seq) once the row's member writes have finished.
   */
  append(entry: RowLogEntry): Promise<number> {
    assert(
      entry.data.length > 0 && entry.data.length % 4096 === 0 && entry.offsetInUnit % 4096 === 0,
      'row log records cover whole 4 KiB blocks',
    );
    const promise = new Promise<number>((resolve, reject) =>
      this.waiting.push({ entry, resolve, reject }),
    );
    if (!this.writing) void this.writeWaiting();
    return promise;
  }

  /** The row's writes for record seq have finished (or failed): a flush from now on clears it. */
  done(seq: number): void {
    const placed = this.live.find((candidate) => candidate.seq === seq);
    if (placed) placed.done = true;
    this.wake();
  }

  /** The watermark a flush starting now may clear to once it is done. */
  clearableSeq(): number {
    let mark = this.clearedSeq;
    for (const placed of this.live) {
      if (!placed.done) break;
      mark = placed.seq;
    }
    return mark;
  }

  /**
   * After a flush of the data drives that began at clearableSeq() = mark: the records up to mark
   * are obsolete.
   */
  clearThrough(mark: number): Promise<void> {
    return this.clearMutex.run(async () => {
      if (mark <= this.clearedSeq) return;
      const generation = this.generation + 1;
      const header = encodeHeader(generation, mark, this.nonce);
      await this.writeAllCopies(this.offsetBytes + (generation % 2) * headerSlotBytes, header);
      this.generation = generation;
      this.clearedSeq = mark;
      while (this.live.length > 0 && this.live[0]!.seq <= mark) this.live.shift();
      this.wake();
    });
  }

  /** Clears everything (at open, once the records have been replayed and the data flushed). */
  clearAll(): Promise<void> {
    return this.clearThrough(this.nextSeq - 1);
  }

  /** A drive that left service holds no copy any more. */
  dropCopy(driveIndex: number): void {
    this.copies = this.copies.filter((copy) => copy.driveIndex !== driveIndex);
  }

  /**
   * A new copy: its ring is emptied and it gets the current watermark; records from now on go to it
   * too.
   */
  addCopy(copy: RowLogCopy): Promise<void> {
    return this.clearMutex.run(async () => {
      if (this.copies.some((existing) => existing.driveIndex === copy.driveIndex)) return;
      await copy.drive.discard(this.offsetBytes, 2 * headerSlotBytes + this.ringBytes);
      await copy.drive.write(
        this.offsetBytes + (this.generation % 2) * headerSlotBytes,
        encodeHeader(this.generation, this.clearedSeq, this.nonce),
      );
      await copy.drive.flush();
      this.copies = [...this.copies, copy];
    });
  }

  private async writeWaiting(): Promise<void> {
    this.writing = true;
    try {
      while (this.waiting.length > 0) {
        const batch = this.waiting;
        this.waiting = [];
        try {
          const seqs = await this.writeBatch(batch.map((waiting) => waiting.entry));
          this.recordsWritten += batch.length;
          batch.forEach((waiting, index) => waiting.resolve(seqs[index]!));
        } catch (error) {
          for (const waiting of batch) waiting.reject(error);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /**
   * Places the records one after the other from head (a record's data may wrap to the ring's
   * start; headers never do, ring and records being whole 4 KiB blocks), writes and flushes them.
   */
  private async writeBatch(entries: RowLogEntry[]): Promise<number[]> {
    const placed: Placed[] = [];
    const writes: Array<{ position: number; bytes: Buffer }> = [];
    let head = this.head;
    for (const entry of entries) {
      const seq = this.nextSeq + placed.length;
      const record = Buffer.concat([encodeRecordHeader(seq, entry, this.nonce), entry.data]);
      const position = head % this.ringBytes;
      const first = Math.min(record.length, this.ringBytes - position);
      writes.push({ position, bytes: record.subarray(0, first) });
      if (first < record.length) writes.push({ position: 0, bytes: record.subarray(first) });
      placed.push({ seq, start: head, end: head + record.length, done: false });
      head += record.length;
    }
    const oldest = this.live[0]?.start ?? placed[0]!.start;
    assert(
      head - oldest <= this.ringBytes,
      'row log records written over records not yet cleared (a write without a reservation)',
    );
    await Promise.all(
      writes.map((write) =>
        this.writeAllCopies(
          this.offsetBytes + 2 * headerSlotBytes + write.position,
          write.bytes,
          false,
        ),
      ),
    );
    await this.flushAllCopies();
    this.nextSeq += placed.length;
    this.head = head;
    this.live.push(...placed);
    return placed.map((record) => record.seq);
  }

  private async writeAllCopies(offsetBytes: number, data: Buffer, flush = true): Promise<void> {
    const copies = this.copies;
    const results = await Promise.allSettled(
      copies.map(async (copy) => {
        await copy.drive.write(offsetBytes, data);
        if (flush) await copy.drive.flush();
      }),
    );
    this.dropFailed(copies, results);
  }

  private async flushAllCopies(): Promise<void> {
    const copies = this.copies;
    this.dropFailed(copies, await Promise.allSettled(copies.map((copy) => copy.drive.flush())));
  }

  /**
   * A copy that failed is dropped; EIO when none is left. (copies: the list the operation ran on;
   * the list itself may have changed meanwhile, a copy added or dropped by the pool.)
   */
  private dropFailed(copies: RowLogCopy[], results: PromiseSettledResult<unknown>[]): void {
    const failed = copies.filter((_, index) => results[index]!.status === 'rejected');
    if (failed.length === 0) return;
    for (const copy of failed)
      this.log.error({ drive: copy.drive.path }, 'degraded-row log write failed; copy dropped');
    this.copies = this.copies.filter((copy) => !failed.includes(copy));
    if (failed.length === copies.length) {
      const reason = (
        results.find((result) => result.status === 'rejected') as PromiseRejectedResult
      ).reason as Error;
      throw new LunfsError(
        'EIO',
        `the degraded-row log could not be written to any copy: ${reason.message}`,
        { cause: reason },
      );
    }
  }

  private wake(): void {
    const previous = this.changed;
    this.changed = deferred();
    previous.resolve();
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((settle) => (resolve = settle));
  return { promise, resolve };
}

function encodeHeader(generation: number, clearedSeq: number, nonce: bigint): Buffer {
  const buffer = Buffer.alloc(headerSlotBytes);
  writeMagic(buffer, headerMagic);
  buffer.writeUInt32LE(formatVersion, 8);
  buffer.writeBigUInt64LE(BigInt(generation), 16);
  buffer.writeBigUInt64LE(BigInt(clearedSeq), 24);
  buffer.writeBigUInt64LE(nonce, 32);
  seal(buffer, 12);
  return buffer;
}

function decodeHeader(
  buffer: Buffer,
): { generation: number; clearedSeq: number; nonce: bigint } | undefined {
  if (
    !hasMagic(buffer, headerMagic) ||
    !isReadableFormatVersion(buffer.readUInt32LE(8)) ||
    !checkSeal(buffer, 12)
  )
    return undefined;
  return {
    generation: Number(buffer.readBigUInt64LE(16)),
    clearedSeq: Number(buffer.readBigUInt64LE(24)),
    nonce: buffer.readBigUInt64LE(32),
  };
}

function encodeRecordHeader(seq: number, entry: RowLogEntry, nonce: bigint): Buffer {
  const buffer = Buffer.alloc(recordHeaderBytes);
  writeMagic(buffer, recordMagic);
  buffer.writeUInt32LE(formatVersion, 8);
  buffer.writeBigUInt64LE(BigInt(seq), 16);
  buffer.writeUInt32LE(entry.rstoreId, 24);
  buffer.writeUInt32LE(entry.row, 28);
  buffer.writeUInt32LE(entry.memberIndex, 32);
  buffer.writeUInt32LE(entry.offsetInUnit, 36);
  buffer.writeUInt32LE(entry.data.length, 40);
  buffer.writeUInt32LE(crc32c(entry.data), 44);
  buffer.writeBigUInt64LE(nonce, 48);
  seal(buffer, 12);
  return buffer;
}

function decodeRecord(
  ring: Buffer,
  position: number,
  nonce: bigint,
): { seq: number; entry: RowLogEntry } | undefined {
  const header = ring.subarray(position, position + recordHeaderBytes);
  if (
    !hasMagic(header, recordMagic) ||
    !isReadableFormatVersion(header.readUInt32LE(8)) ||
    !checkSeal(header, 12)
  )
    return undefined;
  if (header.readBigUInt64LE(48) !== nonce) return undefined;
  const length = header.readUInt32LE(40);
  if (length === 0 || length % 4096 !== 0 || recordHeaderBytes + length > ring.length)
    return undefined;
  const data = Buffer.allocUnsafe(length);
  const dataStart = (position + recordHeaderBytes) % ring.length;
  const first = Math.min(length, ring.length - dataStart);
  ring.copy(data, 0, dataStart, dataStart + first);
  // the record's data wrapped to the ring's start
  if (first < length) ring.copy(data, first, 0, length - first);
  if (crc32c(data) !== header.readUInt32LE(44)) return undefined;
  return {
    seq: Number(header.readBigUInt64LE(16)),
    entry: {
      rstoreId: header.readUInt32LE(24),
      row: header.readUInt32LE(28),
      memberIndex: header.readUInt32LE(32),
      offsetInUnit: header.readUInt32LE(36),
      data,
    },
  };
}
