// RAID-5 read-modify-write (seed 004 [0044]): a write smaller than its row, every member of the
// row readable, reads the old data and old parity and writes new parity = old parity ^ old data ^
// new data, with the native XOR kernel. A random small write reads and writes only the span of
// the parity its pieces cover; a write of whole units keeps the row in memory (raid5-row-cache.ts)
// with its parity pending, so that a sequential stream reads neither the parity again nor, once
// the row's other units are known, any old data, and writes the parity once per row. A failed
// read writes nothing and sends the caller to reconstruct-write instead. The caller holds the
// row's lock.

import { xorInto } from '../native/native-kernels.js';
import type { DataPiece, Raid5Geometry } from './raid5-geometry.js';
import { settleMemberIo, type MemberIo } from './member-io.js';
import type { Raid5Members } from './raid5-members.js';
import { copyOf, type Raid5Memory } from './raid5-memory.js';
import type { KnownRow, Raid5RowCache } from './raid5-row-cache.js';

/** What read-modify-write needs of the row cache. */
export type KnownRows = Pick<
  Raid5RowCache,
  'knownRow' | 'keep' | 'reserveWhilePending' | 'forgetRow'
>;

export class Raid5ReadModifyWrite {
  private readonly geometry: Raid5Geometry;
  private readonly io: MemberIo;

  constructor(
    private readonly members: Raid5Members,
    private readonly rows: KnownRows,
    /** The pool's: the old data and parity of a small write are read into its spare buffers. */
    private readonly memory: Raid5Memory,
  ) {
    this.geometry = members.geometry;
    this.io = members.io;
  }

  /**
   * parity ^= old ^ new over each piece. Returns false, having written nothing, when an old data
   * or parity read fails (the failure is recorded and the caller reconstructs instead).
   *
   * The row last written this way is remembered (a KnownRow: its parity and the data units known
   * whole, exactly as on the members), so a sequential stream of unit-sized writes, as the cache
   * and FUSE send them (128 KiB), reads neither the parity again nor, for the row's last unit,
   * any old data: the parity is then the XOR of the known units and the new one.
   */
  async readModifyWrite(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    unreadable: number[],
  ): Promise<boolean> {
    const unitBytes = this.geometry.stripeUnitBytes;
    const rowOffset = row * unitBytes;
    const recent = unreadable.length === 0 ? this.rows.knownRow(row) : undefined;
    const pieceData = (piece: DataPiece): Buffer =>
      data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes);
    const dataWrites = pieces.map(
      (piece) => [piece.memberIndex, rowOffset + piece.offsetInUnit, pieceData(piece)] as const,
    );
    if (recent && this.knowsRowWith(recent, row, pieces)) {
      // Reconstruct-write from memory: every data unit is known or written whole now.
      const units = new Map<number, Buffer>();
      for (let unitInRow = 0; unitInRow < this.geometry.memberCount - 1; unitInRow += 1) {
        const memberIndex = this.geometry.dataMember(row, unitInRow);
        units.set(memberIndex, recent.units.get(memberIndex) ?? Buffer.allocUnsafe(unitBytes));
      }
      for (const piece of pieces)
        pieceData(piece).copy(units.get(piece.memberIndex)!, piece.offsetInUnit);
      let first = true;
      for (const unit of units.values()) {
        if (first) unit.copy(recent.parity);
        else xorInto(recent.parity, unit);
        first = false;
      }
      recent.units = units;
      // The parity is written back later, once for the row (with room in the row log, else now).
      recent.parityPending = this.rows.reserveWhilePending(recent);
      await this.members.writeUnits(
        row,
        dataWrites,
        recent.parityPending ? undefined : recent.parity,
        unreadable,
      );
      this.rows.keep(recent);
      return true;
    }
    if (!recent && !pieces.some((piece) => piece.lengthBytes === unitBytes))
      return this.readModifyWriteSpan(row, pieces, data, unreadable);
    const parity = recent ? recent.parity : Buffer.allocUnsafe(unitBytes);
    const olds = await this.readOld(row, pieces, recent ? undefined : parity, 0, recent);
    if (!olds) {
      await this.rows.forgetRow(row);
      return false;
    }
    pieces.forEach((piece, index) => {
      const old = olds[index]!;
      xorInto(old, pieceData(piece));
      xorInto(parity.subarray(piece.offsetInUnit, piece.offsetInUnit + piece.lengthBytes), old);
    });
    const row_: KnownRow = recent ?? { row, parity, parityPending: false, units: new Map() };
    // Degraded, or without room in the row log, the parity goes with the data.
    row_.parityPending = unreadable.length === 0 && this.rows.reserveWhilePending(row_);
    await this.members.writeUnits(
      row,
      dataWrites,
      row_.parityPending ? undefined : parity,
      unreadable,
    );
    for (const piece of pieces) {
      const unit = row_.units.get(piece.memberIndex);
      if (unit) pieceData(piece).copy(unit, piece.offsetInUnit);
      else if (piece.offsetInUnit === 0 && piece.lengthBytes === unitBytes)
        row_.units.set(piece.memberIndex, copyOf(pieceData(piece)));
    }
    this.rows.keep(row_);
    return true;
  }

  /**
   * Read-modify-write of writes smaller than a unit in a row not held in memory (random small
   * writes): only the span of the parity unit the pieces cover is read and written, at once; the
   * row is not kept (a 4 KiB write costs two 4 KiB reads and two 4 KiB writes, not a whole unit
   * of parity read and written back).
   */
  private async readModifyWriteSpan(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    unreadable: number[],
  ): Promise<boolean> {
    const rowOffset = row * this.geometry.stripeUnitBytes;
    const parityMember = this.geometry.parityMember(row);
    const from = Math.min(...pieces.map((piece) => piece.offsetInUnit));
    const to = Math.max(...pieces.map((piece) => piece.offsetInUnit + piece.lengthBytes));
    const parity = this.memory.take(to - from);
    const pieceData = (piece: DataPiece): Buffer =>
      data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes);
    const olds = await this.readOld(row, pieces, parity, from);
    if (!olds) {
      this.memory.give(parity);
      return false;
    }
    pieces.forEach((piece, index) => {
      const old = olds[index]!;
      xorInto(old, pieceData(piece));
      xorInto(
        parity.subarray(piece.offsetInUnit - from, piece.offsetInUnit - from + piece.lengthBytes),
        old,
      );
      this.memory.give(old);
    });
    const writes = pieces.map(
      (piece) => [piece.memberIndex, rowOffset + piece.offsetInUnit, pieceData(piece)] as const,
    );
    try {
      await this.members.writeUnits(
        row,
        [...writes, [parityMember, rowOffset + from, parity] as const],
        undefined,
        unreadable,
      );
    } finally {
      // The writes have settled, failed or not: nothing refers to it.
      this.memory.give(parity);
    }
    return true;
  }

  /**
   * Reads the old parity (into parity, from parityFromBytes in the unit; none when parity is
   * undefined: it is known) and each piece's old data (from known's units where it holds them).
   * Undefined, with the failure recorded, when any read fails.
   */
  private async readOld(
    row: number,
    pieces: DataPiece[],
    parity: Buffer | undefined,
    parityFromBytes: number,
    known?: KnownRow,
  ): Promise<Buffer[] | undefined> {
    const rowOffset = row * this.geometry.stripeUnitBytes;
    const parityMember = this.geometry.parityMember(row);
    const olds: Buffer[] = [];
    const reads: Array<readonly [number, number, Buffer]> = [];
    if (parity) reads.push([parityMember, rowOffset + parityFromBytes, parity]);
    for (const piece of pieces) {
      const unit = known?.units.get(piece.memberIndex);
      if (unit) {
        olds.push(
          copyOf(unit.subarray(piece.offsetInUnit, piece.offsetInUnit + piece.lengthBytes)),
        );
        continue;
      }
      const old = this.memory.take(piece.lengthBytes);
      olds.push(old);
      reads.push([piece.memberIndex, rowOffset + piece.offsetInUnit, old]);
    }
    const errors = await settleMemberIo(this.io, 'read', reads);
    let failed = false;
    errors.forEach((error, index) => {
      if (error === undefined) return;
      this.members.noteReadError(reads[index]![0], error);
      failed = true;
    });
    return failed ? undefined : olds;
  }

  /** Whether every data unit of the row is known in recent or written whole by these pieces. */
  private knowsRowWith(recent: KnownRow, row: number, pieces: DataPiece[]): boolean {
    for (let unitInRow = 0; unitInRow < this.geometry.memberCount - 1; unitInRow += 1) {
      const memberIndex = this.geometry.dataMember(row, unitInRow);
      if (recent.units.has(memberIndex)) continue;
      const whole = pieces.some(
        (piece) =>
          piece.memberIndex === memberIndex &&
          piece.offsetInUnit === 0 &&
          piece.lengthBytes === this.geometry.stripeUnitBytes,
      );
      if (!whole) return false;
    }
    return true;
  }
}
