// The metadata store: the pool's metadata, mirrored in the quorum area of up to three drives
// (seed 004 [0047]: the MLD in quorum space; any one copy suffices). Each copy is two checkpoint
// slots and a journal. A commit appends one journal record (a batch of MetadataOps) to every copy
// and flushes them; when the journal is full, a checkpoint of the whole metadata goes to the slot
// not holding the current one, with the next generation, and the journal starts again. Records
// carry the generation of the checkpoint they follow and a sequence number, so a torn or stale
// record ends replay. Opening reads every copy, takes the newest consistent one and says which
// copies are bad or stale; it never guesses past a checksum failure.

import type { BlockDevice } from '../block/block-device.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { Mutex } from '../util/mutex.js';
import { alignUp } from '../util/sizes.js';
import { crc32c } from '../native/native-kernels.js';
import {
  checkSeal,
  formatVersion,
  hasMagic,
  isReadableFormatVersion,
  seal,
  writeMagic,
} from './checksum.js';
import {
  applyMetadataOp,
  decodeCheckpoint,
  encodeCheckpoint,
  type MetadataOp,
  type PoolMetadata,
} from './pool-metadata.js';

export const recordHeaderBytes = 64;
export const journalRecordAlignBytes = 4096;

/**
 * What a store keeps: its state, the ops that change it, and their encodings. The pool's metadata
 * is one such state; a snapshot target volume's bitmaps and log files are another (snapshot/).
 * apply() must be deterministic: it runs at commit time and again at replay.
 */
export interface StoreCodec<State, Op> {
  checkpointMagic: string;
  journalMagic: string;
  encode(state: State): Buffer;
  decode(payload: Buffer): State;
  apply(state: State, op: Op): void;
}

export const poolMetadataCodec: StoreCodec<PoolMetadata, MetadataOp> = {
  checkpointMagic: 'LUNFSCKP',
  journalMagic: 'LUNFSJNL',
  encode: encodeCheckpoint,
  decode: decodeCheckpoint,
  apply: applyMetadataOp,
};

export interface QuorumLayout {
  quorumOffsetBytes: number;
  checkpointSlotBytes: number;
  journalBytes: number;
}

export interface QuorumCopy {
  /** A drive's quorum area, or any block device (a snapshot target volume holds its own store). */
  drive: BlockDevice & { readonly path: string };
  driveIndex: number;
}

export interface CopyReport {
  driveIndex: number;
  path: string;
  state: 'good' | 'stale' | 'bad';
  generation: number;
  sequence: number;
  problems: string[];
}

interface CopyScan<Op> {
  copy: QuorumCopy;
  generation: number;
  slot: number;
  sequence: number;
  checkpointPayload?: Buffer;
  ops: Op[];
  /** The ops of the last journal record replayed ([] when replay ends at the checkpoint). */
  lastRecordOps: Op[];
  journalEndBytes: number;
  problems: string[];
  /** A complete journal record past the end of replay that is newer than what replay reached. */
  newerRecord?: { generation: number; sequence: number };
}

export class MetadataStore<State = PoolMetadata, Op = MetadataOp> {
  private readonly mutex = new Mutex();
  private copies: QuorumCopy[];

  private constructor(
    copies: QuorumCopy[],
    private readonly layout: QuorumLayout,
    private readonly log: Logger,
    private generation: number,
    private activeSlot: number,
    private sequence: number,
    private journalOffsetBytes: number,
    private committed: State,
    private readonly codec: StoreCodec<State, Op>,
  ) {
    this.copies = copies;
  }

  /** Writes the first checkpoint (generation 1) to every copy of a new pool. */
  static async format<S = PoolMetadata, O = MetadataOp>(
    copies: QuorumCopy[],
    layout: QuorumLayout,
    metadata: S,
    log: Logger,
    codec: StoreCodec<S, O> = poolMetadataCodec as unknown as StoreCodec<S, O>,
  ): Promise<MetadataStore<S, O>> {
    const store = new MetadataStore<S, O>(
      copies,
      layout,
      log,
      0,
      1,
      0,
      0,
      codec.decode(codec.encode(metadata)),
      codec,
    );
    // Drives that held an earlier pool still carry its checkpoints and journal records, with
    // generations this pool will reach too: none of it may ever be read as ours.
    await Promise.all(
      copies.map((copy) =>
        copy.drive.discard(
          layout.quorumOffsetBytes,
          2 * layout.checkpointSlotBytes + layout.journalBytes,
        ),
      ),
    );
    await store.checkpoint();
    return store;
  }

  /** Reads every copy, recovers the newest consistent metadata and reports on each copy. */
  static async open<S = PoolMetadata, O = MetadataOp>(
    copies: QuorumCopy[],
    layout: QuorumLayout,
    log: Logger,
    codec: StoreCodec<S, O> = poolMetadataCodec as unknown as StoreCodec<S, O>,
  ): Promise<{
    store: MetadataStore<S, O>;
    metadata: S;
    reports: CopyReport[];
    lastRecordOps: O[];
  }> {
    assert(copies.length > 0, 'metadata store needs at least one copy');
    const scans = await Promise.all(
      copies.map((copy) => scanCopy<O>(copy, layout, codec.checkpointMagic, codec.journalMagic)),
    );
    const usable = scans.filter((scan) => scan.checkpointPayload !== undefined);
    if (usable.length === 0) {
      const detail = scans
        .map((scan) => `${scan.copy.drive.path}: ${scan.problems.join('; ')}`)
        .join(' | ');
      throw new LunfsError('ECORRUPT', `no good metadata copy in any quorum area: ${detail}`);
    }
    const best = usable.reduce((a, b) =>
      b.generation > a.generation || (b.generation === a.generation && b.sequence > a.sequence)
        ? b
        : a,
    );
    // Never open an older state when newer committed metadata is known to exist but no copy can
    // replay it (its checkpoint or a record before it is damaged on every copy).
    for (const scan of scans) {
      const newer = scan.newerRecord;
      if (
        newer &&
        (newer.generation > best.generation ||
          (newer.generation === best.generation && newer.sequence > best.sequence))
      ) {
        const detail = scans
          .map(
            (other) =>
              `${other.copy.drive.path}: ${other.problems.join('; ') || 'no problem found'}`,
          )
          .join(' | ');
        throw new LunfsError(
          'ECORRUPT',
          `newer metadata exists (record ${newer.sequence} of generation ${newer.generation} on ${scan.copy.drive.path}) than any quorum copy can replay (generation ${best.generation}, record ${best.sequence}); refusing to open an older state: ${detail}`,
        );
      }
    }
    const metadata = codec.decode(best.checkpointPayload!);
    for (const op of best.ops) codec.apply(metadata, op);
    const reports: CopyReport[] = scans.map((scan) => ({
      driveIndex: scan.copy.driveIndex,
      path: scan.copy.drive.path,
      state:
        scan.checkpointPayload === undefined ||
        (scan.newerRecord?.generation ?? 0) > scan.generation
          ? 'bad'
          : scan.generation === best.generation && scan.sequence === best.sequence
            ? 'good'
            : 'stale',
      generation: scan.generation,
      sequence: scan.sequence,
      problems: scan.problems,
    }));
    for (const report of reports) {
      if (report.state !== 'good')
        log.warn({ copy: report }, `metadata copy on ${report.path} is ${report.state}`);
    }
    const committed = codec.decode(best.checkpointPayload!);
    for (const op of best.ops) codec.apply(committed, op);
    const store = new MetadataStore<S, O>(
      copies,
      layout,
      log,
      best.generation,
      best.slot,
      best.sequence,
      best.journalEndBytes,
      committed,
      codec,
    );
    return { store, metadata, reports, lastRecordOps: best.lastRecordOps };
  }

  /**
   * Makes ops durable: appends them to the journal of every copy and flushes, or writes a
   * checkpoint when the journal is full. The store keeps its own image of the committed metadata,
   * so a checkpoint never contains a change whose data the caller has not yet made durable.
   * beforeCheckpoint runs first when the ops go into a checkpoint rather than a journal record:
   * a caller whose ops may be written before their data is flushed (see lastRecordOps) flushes
   * there.
   */
  commit(ops: Op[], beforeCheckpoint?: () => Promise<void>): Promise<void> {
    return this.mutex.run(async () => {
      if (ops.length === 0) return;
      const payload = Buffer.from(JSON.stringify(ops));
      const recordBytes = alignUp(recordHeaderBytes + payload.length, journalRecordAlignBytes);
      if (this.journalOffsetBytes + recordBytes > this.layout.journalBytes) {
        await beforeCheckpoint?.();
        // The committed image changes only once the checkpoint holding the ops is written.
        const next = this.codec.decode(this.codec.encode(this.committed));
        for (const op of ops) this.codec.apply(next, op);
        await this.writeCheckpoint(next);
        this.committed = next;
        return;
      }
      const record = Buffer.alloc(recordBytes);
      writeMagic(record, this.codec.journalMagic);
      record.writeUInt32LE(formatVersion, 8);
      record.writeBigUInt64LE(BigInt(this.generation), 16);
      record.writeBigUInt64LE(BigInt(this.sequence + 1), 24);
      record.writeUInt32LE(payload.length, 32);
      record.writeUInt32LE(crc32c(payload), 36);
      seal(record.subarray(0, recordHeaderBytes), 12);
      payload.copy(record, recordHeaderBytes);
      const offset = this.journalStartBytes() + this.journalOffsetBytes;
      await this.writeAllCopies(offset, record);
      for (const op of ops) this.codec.apply(this.committed, op);
      this.sequence += 1;
      this.journalOffsetBytes += recordBytes;
    });
  }

  /**
   * Writes the committed metadata (after update, if given) to the inactive slot of every copy;
   * resets the journal.
   */
  checkpoint(update?: (committed: State) => void): Promise<void> {
    return this.mutex.run(() => {
      update?.(this.committed);
      return this.writeCheckpoint(this.committed);
    });
  }

  /** The fraction of the journal in use (for status). */
  get journalFillRatio(): number {
    return this.journalOffsetBytes / this.layout.journalBytes;
  }

  /** Stops writing the copy on a drive that left service (a no-op when it holds none). */
  dropCopy(driveIndex: number): void {
    this.copies = this.copies.filter((copy) => copy.driveIndex !== driveIndex);
  }

  /**
   * Adds a copy on another drive: its quorum area is cleared, then a checkpoint of the committed
   * metadata goes to every copy, the new one included (so all of them agree from then on).
   */
  addCopy(copy: QuorumCopy): Promise<void> {
    return this.mutex.run(async () => {
      assert(
        !this.copies.some((existing) => existing.driveIndex === copy.driveIndex),
        `drive ${copy.driveIndex} holds a metadata copy already`,
      );
      await copy.drive.discard(
        this.layout.quorumOffsetBytes,
        2 * this.layout.checkpointSlotBytes + this.layout.journalBytes,
      );
      await copy.drive.flush();
      this.copies = [...this.copies, copy];
      await this.writeCheckpoint(this.committed);
    });
  }

  get copyDriveIndexes(): number[] {
    return this.copies.map((copy) => copy.driveIndex);
  }

  private async writeCheckpoint(state: State): Promise<void> {
    const payload = this.codec.encode(state);
    if (recordHeaderBytes + payload.length > this.layout.checkpointSlotBytes) {
      throw new LunfsError(
        'ENOSPC',
        `metadata (${payload.length} bytes) no longer fits its checkpoint slot (${this.layout.checkpointSlotBytes} bytes)`,
      );
    }
    const generation = this.generation + 1;
    const slot = this.activeSlot ^ 1;
    const header = Buffer.alloc(recordHeaderBytes);
    writeMagic(header, this.codec.checkpointMagic);
    header.writeUInt32LE(formatVersion, 8);
    header.writeBigUInt64LE(BigInt(generation), 16);
    header.writeBigUInt64LE(BigInt(payload.length), 24);
    header.writeUInt32LE(crc32c(payload), 32);
    seal(header, 12);
    await this.writeAllCopies(this.slotOffsetBytes(slot), Buffer.concat([header, payload]));
    this.generation = generation;
    this.activeSlot = slot;
    this.sequence = 0;
    this.journalOffsetBytes = 0;
    this.log.debug(
      { generation, slot, payloadBytes: payload.length },
      'metadata checkpoint written',
    );
  }

  /** Writes to every copy and flushes; a copy that fails is dropped (EIO only if none is left). */
  private async writeAllCopies(offsetBytes: number, data: Buffer): Promise<void> {
    // The list as it was: a drive failure may drop a copy from this.copies meanwhile.
    const copies = this.copies;
    const results = await Promise.allSettled(
      copies.map(async (copy) => {
        await copy.drive.write(offsetBytes, data);
        await copy.drive.flush();
      }),
    );
    const failed = copies.filter((_, index) => results[index]!.status === 'rejected');
    if (failed.length === 0) return;
    if (failed.length === copies.length) {
      // Nothing was written anywhere: keep the copies (a full target volume, say, may have room
      // again later) and report why.
      const reason = (
        results.find((result) => result.status === 'rejected') as PromiseRejectedResult
      ).reason;
      if (reason instanceof LunfsError && reason.code === 'ENOSPC') throw reason;
      throw new LunfsError(
        'EIO',
        `metadata could not be written to any copy: ${(reason as Error).message}`,
        { cause: reason },
      );
    }
    for (const copy of failed)
      this.log.error({ drive: copy.drive.path }, 'metadata copy write failed; copy dropped');
    this.copies = this.copies.filter((copy) => !failed.includes(copy));
    if (this.copies.length === 0)
      throw new LunfsError('EIO', 'metadata could not be written to any quorum copy');
  }

  private slotOffsetBytes(slot: number): number {
    return this.layout.quorumOffsetBytes + slot * this.layout.checkpointSlotBytes;
  }

  private journalStartBytes(): number {
    return this.layout.quorumOffsetBytes + 2 * this.layout.checkpointSlotBytes;
  }
}

async function scanCopy<Op>(
  copy: QuorumCopy,
  layout: QuorumLayout,
  checkpointMagic: string,
  journalMagic: string,
): Promise<CopyScan<Op>> {
  const scan: CopyScan<Op> = {
    copy,
    generation: 0,
    slot: 0,
    sequence: 0,
    ops: [],
    lastRecordOps: [],
    journalEndBytes: 0,
    problems: [],
  };
  let unreadable = false;
  for (const slot of [0, 1]) {
    try {
      const found = await readCheckpointSlot(
        copy.drive,
        layout.quorumOffsetBytes + slot * layout.checkpointSlotBytes,
        layout.checkpointSlotBytes,
        checkpointMagic,
      );
      if ('problem' in found) {
        if (found.problem !== 'empty')
          scan.problems.push(`checkpoint slot ${slot}: ${found.problem}`);
        continue;
      }
      if (found.generation > scan.generation) {
        scan.generation = found.generation;
        scan.slot = slot;
        scan.checkpointPayload = found.payload;
      }
    } catch (error) {
      // A slot that cannot be read may hold the newest checkpoint: the other slot's older state
      // is no answer, so the copy is bad (another copy, or the caller, decides).
      scan.problems.push(`checkpoint slot ${slot}: ${(error as Error).message}`);
      unreadable = true;
    }
  }
  if (unreadable) {
    scan.checkpointPayload = undefined;
    scan.generation = 0;
    return scan;
  }
  if (scan.checkpointPayload === undefined) {
    if (scan.problems.length === 0) scan.problems.push('no checkpoint in either slot');
    return scan;
  }
  try {
    const journal = Buffer.alloc(layout.journalBytes);
    await copy.drive.read(layout.quorumOffsetBytes + 2 * layout.checkpointSlotBytes, journal);
    let position = 0;
    while (position + recordHeaderBytes <= journal.length) {
      const header = journal.subarray(position, position + recordHeaderBytes);
      if (
        !hasMagic(header, journalMagic) ||
        !isReadableFormatVersion(header.readUInt32LE(8)) ||
        !checkSeal(header, 12)
      )
        break;
      if (
        Number(header.readBigUInt64LE(16)) !== scan.generation ||
        Number(header.readBigUInt64LE(24)) !== scan.sequence + 1
      )
        break;
      const payloadBytes = header.readUInt32LE(32);
      const recordBytes = alignUp(recordHeaderBytes + payloadBytes, journalRecordAlignBytes);
      if (position + recordBytes > journal.length) break;
      const payload = journal.subarray(
        position + recordHeaderBytes,
        position + recordHeaderBytes + payloadBytes,
      );
      // torn record: it was never acknowledged
      if (crc32c(payload) !== header.readUInt32LE(36)) break;
      scan.lastRecordOps = JSON.parse(payload.toString('utf8')) as Op[];
      scan.ops.push(...scan.lastRecordOps);
      scan.sequence += 1;
      position += recordBytes;
    }
    scan.journalEndBytes = position;
    scan.newerRecord = findNewerRecord(
      journal,
      position,
      scan.generation,
      scan.sequence,
      journalMagic,
    );
    if (scan.newerRecord) {
      const { generation, sequence } = scan.newerRecord;
      scan.problems.push(
        generation > scan.generation
          ? `journal holds record ${sequence} of generation ${generation}, newer than the newest readable checkpoint (generation ${scan.generation}): the newer checkpoint is damaged`
          : `journal record ${scan.sequence + 1} of generation ${generation} is damaged or missing, but record ${sequence} follows it`,
      );
    }
  } catch (error) {
    // Replay would stop short of records that may be there: the copy is bad, not older.
    scan.problems.push(`journal: ${(error as Error).message}`);
    scan.checkpointPayload = undefined;
  }
  return scan;
}

/**
 * The newest complete record at or after fromBytes that is newer than (generation, sequence):
 * proof that replay stopped early because of damage, not at the torn end of a crash (a torn
 * record is never complete, and no record follows it).
 */
function findNewerRecord(
  journal: Buffer,
  fromBytes: number,
  generation: number,
  sequence: number,
  journalMagic: string,
): { generation: number; sequence: number } | undefined {
  let newest: { generation: number; sequence: number } | undefined;
  // Most of a journal past its end is empty or old: a byte test skips a block before its header
  // is looked at (a copier opens the pool again and again).
  const firstMagicByte = journalMagic.charCodeAt(0);
  for (
    let position = fromBytes;
    position + recordHeaderBytes <= journal.length;
    position += journalRecordAlignBytes
  ) {
    if (journal[position] !== firstMagicByte) continue;
    const header = journal.subarray(position, position + recordHeaderBytes);
    if (
      !hasMagic(header, journalMagic) ||
      !isReadableFormatVersion(header.readUInt32LE(8)) ||
      !checkSeal(header, 12)
    )
      continue;
    const recordGeneration = Number(header.readBigUInt64LE(16));
    const recordSequence = Number(header.readBigUInt64LE(24));
    if (
      recordGeneration < generation ||
      (recordGeneration === generation && recordSequence <= sequence)
    )
      continue;
    const payloadEnd = position + recordHeaderBytes + header.readUInt32LE(32);
    if (
      payloadEnd > journal.length ||
      crc32c(journal.subarray(position + recordHeaderBytes, payloadEnd)) !== header.readUInt32LE(36)
    )
      continue;
    if (
      !newest ||
      recordGeneration > newest.generation ||
      (recordGeneration === newest.generation && recordSequence > newest.sequence)
    ) {
      newest = { generation: recordGeneration, sequence: recordSequence };
    }
  }
  return newest;
}

async function readCheckpointSlot(
  drive: BlockDevice,
  offsetBytes: number,
  slotBytes: number,
  checkpointMagic: string,
): Promise<{ generation: number; payload: Buffer } | { problem: string }> {
  const header = Buffer.alloc(recordHeaderBytes);
  await drive.read(offsetBytes, header);
  if (header.every((byte) => byte === 0)) return { problem: 'empty' };
  if (!hasMagic(header, checkpointMagic)) return { problem: 'wrong magic (damaged)' };
  if (!isReadableFormatVersion(header.readUInt32LE(8)))
    return { problem: `unsupported format version ${header.readUInt32LE(8)}` };
  if (!checkSeal(header, 12)) return { problem: 'header checksum mismatch (damaged)' };
  const payloadBytes = Number(header.readBigUInt64LE(24));
  if (recordHeaderBytes + payloadBytes > slotBytes)
    return { problem: 'payload length past the slot (damaged)' };
  const payload = Buffer.alloc(payloadBytes);
  await drive.read(offsetBytes + recordHeaderBytes, payload);
  if (crc32c(payload) !== header.readUInt32LE(32))
    return { problem: 'payload checksum mismatch (damaged)' };
  return { generation: Number(header.readBigUInt64LE(16)), payload };
}
