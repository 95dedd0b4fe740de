// RAID-5 writes (seed 004 [0044], [0059]-[0062]), each row under its lock, by the strategy the
// row calls for:
// - a row held back in memory until it is complete (raid5-row-cache.ts) or a write of a whole
//   row: parity from the new data alone, no reads (full-stripe);
// - a smaller write whose members can all be read: read-modify-write
//   (raid5-read-modify-write.ts);
// - one member unreadable (failed, not yet rebuilt, or returning data that fails its checksum):
//   the row is written degraded, its unreadable unit derived from the others, the write applied
//   to the whole row in memory, and every readable member's changed units and the parity
//   written (reconstruct-write); a parity member that is gone is simply not written (the data
//   alone). Two unreadable members in a row: EIO, nothing written.
// Before a row with a data member out of service is written, that member's contents over the
// range written go to the degraded-row log (row-log.ts), durably, with room reserved first.

import { xorInto } from '../native/native-kernels.js';
import type { ChunkLockManager } from '../util/chunk-locks.js';
import { checksumBlockBytes, type DataPiece, type Raid5Geometry } from './raid5-geometry.js';
import type { MemberIo } from './member-io.js';
import type { Raid5Members } from './raid5-members.js';
import type { Raid5Memory } from './raid5-memory.js';
import type { Raid5ReadModifyWrite } from './raid5-read-modify-write.js';
import type { Raid5Reader } from './raid5-read.js';
import type { Raid5RowCache, UncachedRowWriter } from './raid5-row-cache.js';

/** What the writes need of the row cache. */
export type RowsForWrites = Pick<
  Raid5RowCache,
  'hold' | 'isHeld' | 'settle' | 'dropKnown' | 'forgetRow'
>;

export class Raid5Writer implements UncachedRowWriter {
  private readonly geometry: Raid5Geometry;
  private readonly io: MemberIo;

  constructor(
    private readonly members: Raid5Members,
    private readonly rowLocks: ChunkLockManager,
    /** The pool's: spare buffers for a whole row's parity. */
    private readonly memory: Raid5Memory,
    private readonly rows: RowsForWrites,
    private readonly reader: Pick<Raid5Reader, 'reconstruct'>,
    private readonly readModifyWrite: Raid5ReadModifyWrite,
  ) {
    this.geometry = members.geometry;
    this.io = members.io;
  }

  /** Writes a data range, row by row, each row under its lock. */
  async write(offsetBytes: number, data: Buffer): Promise<void> {
    const byRow = new Map<number, DataPiece[]>();
    for (const piece of this.geometry.pieces(offsetBytes, data.length)) {
      let list = byRow.get(piece.row);
      if (!list) byRow.set(piece.row, (list = []));
      list.push(piece);
    }
    await Promise.all([...byRow].map(([row, pieces]) => this.writeRowWithRoom(row, pieces, data)));
  }

  /**
   * A row with a data member out of service is written only with room reserved in the row log,
   * taken before the row's lock (making room may take a flush, which writes rows back under their
   * locks). A member that leaves service while the write waits for the lock sends it back here.
   */
  private async writeRowWithRoom(row: number, pieces: DataPiece[], data: Buffer): Promise<void> {
    const log = this.io.rowLog;
    let reservation =
      log && this.members.missingDataMember(row) !== undefined
        ? await log.reserve(this.geometry.stripeUnitBytes)
        : undefined;
    try {
      while (
        await this.rowLocks.withChunks([row], () => this.writeRow(row, pieces, data, reservation))
      ) {
        reservation ??= await log!.reserve(this.geometry.stripeUnitBytes);
      }
    } finally {
      reservation?.();
    }
  }

  /**
   * True, having written nothing, when the row needs room in the row log that the caller has not
   * reserved.
   */
  private async writeRow(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    reservation: (() => void) | undefined,
  ): Promise<boolean> {
    try {
      if (await this.rows.hold(row, pieces, data)) return false;
      if (this.rows.isHeld(row)) await this.rows.settle(row);
      return await this.writeRowUncached(row, pieces, data, reservation);
    } catch (error) {
      // A failed write leaves the members' contents unknown; a pending parity is written back
      // from what the row held before (best effort: if that fails too, the member left service).
      await this.rows.settle(row).catch(() => undefined);
      this.rows.dropKnown(row);
      throw error;
    }
  }

  /**
   * Writes pieces of one row. With a data member out of service, its contents over the range
   * written go to the row log first (durably), and the record is done once the writes are over.
   * True, having written nothing, when that needs room and none is reserved or free.
   */
  async writeRowUncached(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    reservation?: () => void,
  ): Promise<boolean> {
    const unreadable = this.members.unreadableMembers(row * this.geometry.stripeUnitBytes);
    if (unreadable.length > 1)
      throw this.members.lost(row, unreadable, 'too many members out of service to write');
    const missing = this.members.missingDataMember(row);
    const log = this.io.rowLog;
    if (!log || missing === undefined) {
      await this.writeRowUnlogged(row, pieces, data, unreadable);
      return false;
    }
    const own = reservation ? undefined : log.tryReserve(this.geometry.stripeUnitBytes);
    if (!reservation && !own) return true;
    let seq: number;
    try {
      seq = await this.logMissing(row, missing, pieces, data);
    } finally {
      own?.();
    }
    try {
      await this.writeRowUnlogged(row, pieces, data, unreadable);
    } finally {
      log.done(seq);
    }
    return false;
  }

  /**
   * The row log record of a write to a row whose data member `missing` is out of service: that
   * member's contents over the whole 4 KiB blocks the pieces span, as the other members give them
   * now, with the pieces that fall on it applied.
   */
  private async logMissing(
    row: number,
    missing: number,
    pieces: DataPiece[],
    data: Buffer,
  ): Promise<number> {
    const from =
      Math.floor(Math.min(...pieces.map((piece) => piece.offsetInUnit)) / checksumBlockBytes) *
      checksumBlockBytes;
    const to =
      Math.ceil(
        Math.max(...pieces.map((piece) => piece.offsetInUnit + piece.lengthBytes)) /
          checksumBlockBytes,
      ) * checksumBlockBytes;
    const contents = Buffer.allocUnsafe(to - from);
    const onMissing = pieces.filter((piece) => piece.memberIndex === missing);
    const covered = onMissing.reduce((sum, piece) => sum + piece.lengthBytes, 0) === to - from;
    if (!covered)
      await this.reader.reconstruct(
        row,
        missing,
        row * this.geometry.stripeUnitBytes + from,
        contents,
      );
    for (const piece of onMissing)
      data.copy(
        contents,
        piece.offsetInUnit - from,
        piece.requestOffset,
        piece.requestOffset + piece.lengthBytes,
      );
    return this.io.rowLog!.append(row, missing, from, contents);
  }

  /** Writes pieces of one row by the strategy its state calls for (see the file's opening). */
  private async writeRowUnlogged(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    unreadable: number[],
  ): Promise<void> {
    const unitBytes = this.geometry.stripeUnitBytes;
    const rowOffset = row * unitBytes;
    const parityMember = this.geometry.parityMember(row);
    const wholeRow =
      pieces.length === this.geometry.memberCount - 1 &&
      pieces.every((piece) => piece.lengthBytes === unitBytes);
    if (wholeRow) {
      const parity = this.memory.take(unitBytes);
      data.copy(parity, 0, pieces[0]!.requestOffset, pieces[0]!.requestOffset + unitBytes);
      for (const piece of pieces.slice(1))
        xorInto(parity, data.subarray(piece.requestOffset, piece.requestOffset + unitBytes));
      this.rows.dropKnown(row); // the new parity replaces any pending one
      try {
        await this.members.writeUnits(
          row,
          pieces.map(
            (piece) =>
              [
                piece.memberIndex,
                rowOffset,
                data.subarray(piece.requestOffset, piece.requestOffset + unitBytes),
              ] as const,
          ),
          parity,
          unreadable,
        );
      } finally {
        this.memory.give(parity); // the writes are over: nothing refers to it
      }
      return;
    }
    const missing = unreadable[0];
    // degraded rows are not kept in memory
    if (missing !== undefined) await this.rows.forgetRow(row);
    if (missing === parityMember) {
      // No parity to keep: write the data alone.
      await this.members.writeUnits(
        row,
        pieces.map(
          (piece) =>
            [
              piece.memberIndex,
              rowOffset + piece.offsetInUnit,
              data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes),
            ] as const,
        ),
        undefined,
        unreadable,
      );
      return;
    }
    if (missing === undefined || !pieces.some((piece) => piece.memberIndex === missing)) {
      const done = await this.readModifyWrite.readModifyWrite(row, pieces, data, unreadable);
      if (done) return;
    }
    await this.reconstructWrite(row, pieces, data);
  }

  /**
   * Degraded write: every data unit of the row is read (the one unreadable member's, or the one
   * whose read fails, is derived from parity), the write is applied in memory, and the changed
   * units and the parity are written; a unit whose data was corrupt is written whole (repaired).
   */
  private async reconstructWrite(row: number, pieces: DataPiece[], data: Buffer): Promise<void> {
    await this.rows.forgetRow(row);
    const unitBytes = this.geometry.stripeUnitBytes;
    const rowOffset = row * unitBytes;
    const units = new Map<number, Buffer>();
    let derive: number | undefined;
    let corrupt = false;
    for (let index = 0; index < this.geometry.memberCount; index += 1) {
      const unit = Buffer.alloc(unitBytes);
      units.set(index, unit);
      if (!this.io.readable(index, rowOffset)) {
        if (derive !== undefined) throw this.members.lost(row, [derive, index], 'both unreadable');
        derive = index;
        continue;
      }
      try {
        await this.io.read(index, rowOffset, unit);
      } catch (error) {
        if (derive !== undefined)
          throw this.members.lost(row, [derive, index], (error as Error).message);
        corrupt = this.members.noteReadError(index, error);
        derive = index;
      }
    }
    if (derive !== undefined) {
      const derived = units.get(derive)!;
      derived.fill(0);
      for (const [index, unit] of units) if (index !== derive) xorInto(derived, unit);
    }
    const touched = new Set<number>(pieces.map((piece) => piece.memberIndex));
    for (const piece of pieces)
      data.copy(
        units.get(piece.memberIndex)!,
        piece.offsetInUnit,
        piece.requestOffset,
        piece.requestOffset + piece.lengthBytes,
      );
    if (corrupt && derive !== undefined) touched.add(derive);
    const parity = Buffer.alloc(unitBytes);
    for (let unitInRow = 0; unitInRow < this.geometry.memberCount - 1; unitInRow += 1)
      xorInto(parity, units.get(this.geometry.dataMember(row, unitInRow))!);
    const writes = [...touched]
      .filter((index) => index !== this.geometry.parityMember(row))
      .map((index) => [index, rowOffset, units.get(index)!] as const);
    const skip = derive !== undefined && !corrupt ? [derive] : [];
    await this.members.writeUnits(row, writes, parity, skip);
    if (corrupt) this.io.integrity.repairs += 1;
  }
}
