// RAID-5 inside one RStore (seed 004 [0044], [0059]-[0062]): n members, the data space cut into
// stripe units; each row holds n - 1 data units and one parity unit (the XOR of the row's data),
// and the parity rotates over the members, left-symmetric as in md: row r keeps its parity on
// member n - 1 - (r mod n) and its data units on the members after it, wrapping. Every access to
// a row that reads or changes parity holds the row's lock.
//
// Writes: a whole row computes parity from the new data; a smaller write whose members can all
// be read reads the old data and old parity and writes new parity = old ^ old data ^ new data
// (read-modify-write). With one member unreadable (failed, not yet rebuilt, or returning data
// that fails its checksum) the row is written degraded: the unreadable member's unit is derived
// from the others, the write is applied to the whole row in memory, and every readable member's
// changed units and the parity are written (reconstruct-write). A parity member that is gone is
// simply not written. Two unreadable members in a row: EIO, nothing written.
//
// Reads: a unit on an unreadable member is the XOR of the same range of every other member. A
// read that fails its checksum is reconstructed the same way and the good data is written back
// (repair). A member that returns an I/O error leaves service (MemberIo.failed).

import { xorInto } from '../native/native-kernels.js';
import { ChunkLockManager } from '../util/chunk-locks.js';
import { assert } from '../util/assert.js';
import { Raid5Members, type MemberIo } from './raid5-members.js';
import { Raid5Reader } from './raid5-read.js';
import { Raid5Repair } from './raid5-repair.js';
import type { RowScrubReport } from './scrub-report.js';
import { checksumBlockBytes, Raid5Geometry, type DataPiece } from './raid5-geometry.js';
import { copyOf, Raid5Memory } from './raid5-memory.js';

/**
 * A row the layout holds in memory after a read-modify-write (the stripe cache of md): its
 * parity and the data units known whole, exactly as they are (or, for a pending parity, are about
 * to be) on the members. Used and changed only under the row's lock.
 */
interface KnownRow {
  row: number;
  parity: Buffer;
  /** The parity on the parity member is stale: the one here is the row's parity until written back. */
  parityPending: boolean;
  /** memberIndex -> the unit's contents, exactly as on that member. */
  units: Map<number, Buffer>;
  /** Room in the row log while the parity is pending (see RowLogPort). */
  reservation?: () => void;
}

/** A row's data units held back: data unit k (0 .. n-2) of the row at k * unit in data. */
interface HeldRow {
  data: Buffer;
  /** The held units' pieces, as writeRowUncached takes them (requestOffset into data). */
  pieces: Map<number, DataPiece>;
  /** Room in the row log while the units are held (see RowLogPort). */
  reservation?: () => void;
}

/** Rows whose data units one layout holds back at most (see Raid5Engine.hold). */
const heldRowsPerLayout = 2;

/** Rows one layout keeps (a sequential stream needs one; two lets the next row start meanwhile). */
const knownRowsPerLayout = 2;

export class Raid5Engine {
  private readonly rowLocks = new ChunkLockManager();
  /** Rows held in memory, least recently written first (see KnownRow). */
  private readonly known = new Map<number, KnownRow>();
  /** Rows not complete yet whose whole data units are held back, not on the members (see hold()). */
  private readonly held = new Map<number, HeldRow>();

  private readonly geometry: Raid5Geometry;
  private readonly members: Raid5Members;
  private readonly reader: Raid5Reader;
  private readonly repair: Raid5Repair;

  constructor(
    readonly memberCount: number,
    readonly stripeUnitBytes: number,
    private readonly io: MemberIo,
    /** The pool's; a layout outside a pool (tests) has its own. */
    private readonly memory: Raid5Memory = new Raid5Memory(),
  ) {
    this.geometry = new Raid5Geometry(memberCount, stripeUnitBytes);
    this.members = new Raid5Members(this.geometry, io);
    const rows = {
      isHeld: (row: number) => this.held.has(row),
      settle: (row: number) => this.settle(row),
      forgetRow: (row: number) => this.forgetRow(row),
      writeBackKnownRows: () => this.writeBackKnownRows(),
    };
    this.reader = new Raid5Reader(this.members, this.rowLocks, rows);
    this.repair = new Raid5Repair(this.members, this.rowLocks, rows, this.reader);
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    return this.reader.read(offsetBytes, target);
  }

  /**
   * Rebuild of member memberIndex for rows [firstRow, endRow) (see Raid5Repair); rebuilt(row) is
   * told under the row's lock, so a write waiting for the row sees the member in service.
   */
  rebuildRows(
    memberIndex: number,
    firstRow: number,
    endRow: number,
    rebuilt: (row: number) => void,
  ): Promise<void> {
    return this.repair.rebuildRows(memberIndex, firstRow, endRow, rebuilt);
  }

  /** Replays a row log record after a power cut; false when nothing was written (see Raid5Repair). */
  replayRowLog(
    row: number,
    memberIndex: number,
    offsetInUnit: number,
    contents: Buffer,
  ): Promise<boolean> {
    return this.repair.replayRowLog(row, memberIndex, offsetInUnit, contents);
  }

  /** Recomputes the parity of rows [firstRow, endRow) after an unclean shutdown. */
  resyncRows(firstRow: number, endRow: number): Promise<void> {
    return this.repair.resyncRows(firstRow, endRow);
  }

  /** Scrub of rows [firstRow, endRow): checksums verified and repaired, parity made consistent. */
  scrubRows(
    firstRow: number,
    endRow: number,
    options: { trustData?: boolean } = {},
  ): Promise<RowScrubReport> {
    return this.repair.scrubRows(firstRow, endRow, options);
  }

  /** The first row in [firstRow, endRow) whose parity is not the XOR of its data (for tests). */
  firstInconsistentRow(firstRow: number, endRow: number): Promise<number | undefined> {
    return this.repair.firstInconsistentRow(firstRow, endRow);
  }

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
        ? await log.reserve(this.stripeUnitBytes)
        : undefined;
    try {
      while (
        await this.rowLocks.withChunks([row], () => this.writeRow(row, pieces, data, reservation))
      ) {
        reservation ??= await log!.reserve(this.stripeUnitBytes);
      }
    } finally {
      reservation?.();
    }
  }

  /** True, having written nothing, when the row needs room in the row log that the caller has not reserved. */
  private async writeRow(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    reservation: (() => void) | undefined,
  ): Promise<boolean> {
    try {
      if (await this.hold(row, pieces, data)) return false;
      if (this.held.has(row)) await this.settle(row);
      return await this.writeRowUncached(row, pieces, data, reservation);
    } catch (error) {
      // A failed write leaves the members' contents unknown; a pending parity is written back
      // from what the row held before (best effort: if that fails too, the member left service).
      await this.settle(row).catch(() => undefined);
      this.dropKnown(row);
      throw error;
    }
  }

  /**
   * Writes pieces of one row. With a data member out of service, its contents over the range
   * written go to the row log first (durably), and the record is done once the writes are over.
   * True, having written nothing, when that needs room and none is reserved or free.
   */
  private async writeRowUncached(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    reservation?: () => void,
  ): Promise<boolean> {
    const unreadable = this.members.unreadableMembers(row * this.stripeUnitBytes);
    if (unreadable.length > 1)
      throw this.members.lost(row, unreadable, 'too many members out of service to write');
    const missing = this.members.missingDataMember(row);
    const log = this.io.rowLog;
    if (!log || missing === undefined) {
      await this.writeRowUnlogged(row, pieces, data, unreadable);
      return false;
    }
    const own = reservation ? undefined : log.tryReserve(this.stripeUnitBytes);
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
      await this.reader.reconstruct(row, missing, row * this.stripeUnitBytes + from, contents);
    for (const piece of onMissing)
      data.copy(
        contents,
        piece.offsetInUnit - from,
        piece.requestOffset,
        piece.requestOffset + piece.lengthBytes,
      );
    return this.io.rowLog!.append(row, missing, from, contents);
  }

  private async writeRowUnlogged(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    unreadable: number[],
  ): Promise<void> {
    const unitBytes = this.stripeUnitBytes;
    const rowOffset = row * unitBytes;
    const parityMember = this.geometry.parityMember(row);
    const wholeRow =
      pieces.length === this.memberCount - 1 &&
      pieces.every((piece) => piece.lengthBytes === unitBytes);
    if (wholeRow) {
      const parity = this.memory.take(unitBytes);
      data.copy(parity, 0, pieces[0]!.requestOffset, pieces[0]!.requestOffset + unitBytes);
      for (const piece of pieces.slice(1))
        xorInto(parity, data.subarray(piece.requestOffset, piece.requestOffset + unitBytes));
      this.dropKnown(row); // the new parity replaces any pending one
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
    if (missing !== undefined) await this.forgetRow(row); // degraded rows are not kept in memory
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
      const done = await this.readModifyWrite(row, pieces, data, unreadable);
      if (done) return;
    }
    await this.reconstructWrite(row, pieces, data);
  }

  /**
   * A sequential stream writes a row unit by unit (128 KiB at a time, as FUSE and the cache send
   * them): its units are held back in memory until the row is complete, and the whole row is then
   * written with parity computed from the new data alone (no old data or parity read, as md's
   * stripe cache waits for a full stripe). Only whole units of a row with at most one member out
   * of service are held, starting with a write that covers the row's first data unit; the units
   * go to the members (settle: read-modify-write of what is held) when anything else touches the
   * row, when a third row is held, and before every drive flush (writeBackKnownRows), so a flush
   * still covers them. True when the write was taken (held, or the row completed and written).
   */
  private async hold(row: number, pieces: DataPiece[], data: Buffer): Promise<boolean> {
    const unitBytes = this.stripeUnitBytes;
    if (!pieces.every((piece) => piece.offsetInUnit === 0 && piece.lengthBytes === unitBytes))
      return false;
    let held = this.held.get(row);
    if (!held) {
      if (this.known.has(row) || pieces.length === this.memberCount - 1) return false;
      if (!pieces.some((piece) => piece.memberIndex === this.geometry.dataMember(row, 0)))
        return false;
    }
    // A row with a member out of service is held too: written whole, it needs no reads, and its
    // row log record is the new data of the missing member (see writeRowUncached).
    if (this.members.unreadableMembers(row * unitBytes).length > 1) return false;
    if (!held) {
      const reservation = this.io.rowLog?.tryReserve(unitBytes);
      if (this.io.rowLog && !reservation) return false; // no room to cover the row if a member left before its write
      held = {
        data: this.memory.take((this.memberCount - 1) * unitBytes),
        pieces: new Map(),
        reservation,
      };
    }
    for (const piece of pieces) {
      const requestOffset = this.geometry.unitInRow(row, piece.memberIndex) * unitBytes;
      data.copy(held.data, requestOffset, piece.requestOffset, piece.requestOffset + unitBytes);
      held.pieces.set(piece.memberIndex, { ...piece, requestOffset });
    }
    this.held.delete(row);
    if (held.pieces.size === this.memberCount - 1) {
      // The row is complete: written whole, parity from the new data alone.
      try {
        await this.writeRowUncached(row, [...held.pieces.values()], held.data, held.reservation);
      } finally {
        held.reservation?.();
        this.memory.give(held.data);
      }
      return true;
    }
    this.held.set(row, held);
    for (const [oldest] of this.held) {
      if (this.held.size <= heldRowsPerLayout) break;
      if (oldest === row) continue;
      void this.rowLocks.withChunks([oldest], () => this.settle(oldest)).catch(() => undefined);
      break;
    }
    this.memory.touch(this);
    return true;
  }

  /**
   * parity ^= old ^ new over each piece. Returns false, having written nothing, when an old data
   * or parity read fails (the failure is recorded and the caller reconstructs instead).
   *
   * The row last written this way is remembered (RecentRow: its parity and the data units known
   * whole, exactly as on the members), so a sequential stream of unit-sized writes, as the cache
   * and FUSE send them (128 KiB), reads neither the parity again nor, for the row's last unit,
   * any old data: the parity is then the XOR of the known units and the new one.
   */
  private async readModifyWrite(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    unreadable: number[],
  ): Promise<boolean> {
    const unitBytes = this.stripeUnitBytes;
    const rowOffset = row * unitBytes;
    const recent = unreadable.length === 0 ? this.known.get(row) : undefined;
    const pieceData = (piece: DataPiece): Buffer =>
      data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes);
    const dataWrites = pieces.map(
      (piece) => [piece.memberIndex, rowOffset + piece.offsetInUnit, pieceData(piece)] as const,
    );
    if (recent && this.knowsRowWith(recent, row, pieces)) {
      // Reconstruct-write from memory: every data unit is known or written whole now.
      const units = new Map<number, Buffer>();
      for (let unitInRow = 0; unitInRow < this.memberCount - 1; unitInRow += 1) {
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
      recent.parityPending = this.reserveWhilePending(recent);
      await this.members.writeUnits(
        row,
        dataWrites,
        recent.parityPending ? undefined : recent.parity,
        unreadable,
      );
      this.keep(recent);
      return true;
    }
    if (!recent && !pieces.some((piece) => piece.lengthBytes === unitBytes))
      return this.readModifyWriteSpan(row, pieces, data, unreadable);
    const parity = recent ? recent.parity : Buffer.allocUnsafe(unitBytes);
    const olds = await this.readOld(row, pieces, recent ? undefined : parity, 0, recent);
    if (!olds) {
      await this.forgetRow(row);
      return false;
    }
    pieces.forEach((piece, index) => {
      const old = olds[index]!;
      xorInto(old, pieceData(piece));
      xorInto(parity.subarray(piece.offsetInUnit, piece.offsetInUnit + piece.lengthBytes), old);
    });
    const row_: KnownRow = recent ?? { row, parity, parityPending: false, units: new Map() };
    // Degraded, or without room in the row log, the parity goes with the data.
    row_.parityPending = unreadable.length === 0 && this.reserveWhilePending(row_);
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
    this.keep(row_);
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
    const rowOffset = row * this.stripeUnitBytes;
    const parityMember = this.geometry.parityMember(row);
    const from = Math.min(...pieces.map((piece) => piece.offsetInUnit));
    const to = Math.max(...pieces.map((piece) => piece.offsetInUnit + piece.lengthBytes));
    const parity = Buffer.allocUnsafe(to - from);
    const pieceData = (piece: DataPiece): Buffer =>
      data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes);
    const olds = await this.readOld(row, pieces, parity, from);
    if (!olds) return false;
    pieces.forEach((piece, index) => {
      const old = olds[index]!;
      xorInto(old, pieceData(piece));
      xorInto(
        parity.subarray(piece.offsetInUnit - from, piece.offsetInUnit - from + piece.lengthBytes),
        old,
      );
    });
    const writes = pieces.map(
      (piece) => [piece.memberIndex, rowOffset + piece.offsetInUnit, pieceData(piece)] as const,
    );
    await this.members.writeUnits(
      row,
      [...writes, [parityMember, rowOffset + from, parity] as const],
      undefined,
      unreadable,
    );
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
    const rowOffset = row * this.stripeUnitBytes;
    const parityMember = this.geometry.parityMember(row);
    const reads = await Promise.allSettled([
      parity ? this.io.read(parityMember, rowOffset + parityFromBytes, parity) : Promise.resolve(),
      ...pieces.map(async (piece) => {
        const unit = known?.units.get(piece.memberIndex);
        if (unit)
          return copyOf(unit.subarray(piece.offsetInUnit, piece.offsetInUnit + piece.lengthBytes));
        const old = Buffer.allocUnsafe(piece.lengthBytes);
        await this.io.read(piece.memberIndex, rowOffset + piece.offsetInUnit, old);
        return old;
      }),
    ]);
    const members = [parityMember, ...pieces.map((piece) => piece.memberIndex)];
    let failed = false;
    reads.forEach((result, index) => {
      if (result.status === 'rejected') {
        this.members.noteReadError(members[index]!, result.reason);
        failed = true;
      }
    });
    if (failed) return undefined;
    return reads.slice(1).map((result) => (result as PromiseFulfilledResult<Buffer>).value);
  }

  /** Whether every data unit of the row is known in recent or written whole by these pieces. */
  private knowsRowWith(recent: KnownRow, row: number, pieces: DataPiece[]): boolean {
    for (let unitInRow = 0; unitInRow < this.memberCount - 1; unitInRow += 1) {
      const memberIndex = this.geometry.dataMember(row, unitInRow);
      if (recent.units.has(memberIndex)) continue;
      const whole = pieces.some(
        (piece) =>
          piece.memberIndex === memberIndex &&
          piece.offsetInUnit === 0 &&
          piece.lengthBytes === this.stripeUnitBytes,
      );
      if (!whole) return false;
    }
    return true;
  }

  /** Room in the row log for a row whose parity is to stay pending; false when there is none. */
  private reserveWhilePending(known: KnownRow): boolean {
    const log = this.io.rowLog;
    if (!log) return true;
    // With a data member out of service or being rebuilt, a power cut before the write-back would
    // leave that member's contents in no place but a stale XOR: the parity goes with the data.
    if (this.members.missingDataMember(known.row) !== undefined) return false;
    known.reservation ??= log.tryReserve(this.stripeUnitBytes);
    return known.reservation !== undefined;
  }

  /** Forgets a known row and the room it held (its parity is not pending, or is replaced). */
  private dropKnown(row: number): void {
    const known = this.known.get(row);
    if (!known) return;
    this.known.delete(row);
    known.reservation?.();
  }

  /** Keeps a row in memory as the most recent; rows beyond the per-layout bound are written back. */
  private keep(known: KnownRow): void {
    this.known.delete(known.row);
    this.known.set(known.row, known);
    for (const [row] of this.known) {
      if (this.known.size <= knownRowsPerLayout) break;
      if (row === known.row) continue;
      void this.rowLocks.withChunks([row], () => this.forgetRow(row)).catch(() => undefined);
      break;
    }
    this.memory.touch(this);
  }

  /**
   * Writes a row's held-back units (read-modify-write) and its pending parity to the members.
   * The caller holds the row's lock.
   */
  private async settle(row: number): Promise<void> {
    const held = this.held.get(row);
    if (held) {
      this.held.delete(row);
      try {
        await this.writeRowUncached(row, [...held.pieces.values()], held.data, held.reservation);
      } finally {
        held.reservation?.();
        this.memory.give(held.data);
      }
    }
    const known = this.known.get(row);
    if (!known?.parityPending) return;
    known.parityPending = false;
    try {
      const parityMember = this.geometry.parityMember(row);
      if (!this.io.writable(parityMember)) return;
      // A data member that left service since: the parity about to be written is the only
      // place its data lives, so it is logged first.
      const missing = this.members.missingDataMember(row);
      const seq =
        missing !== undefined && this.io.rowLog
          ? await this.logPendingParity(row, missing, known)
          : undefined;
      try {
        await this.io.write(parityMember, row * this.stripeUnitBytes, known.parity);
      } catch (error) {
        this.io.failed(parityMember, error);
      } finally {
        if (seq !== undefined) this.io.rowLog!.done(seq);
      }
    } finally {
      known.reservation?.();
      known.reservation = undefined;
    }
  }

  /** The row log record of a pending parity once data member `missing` left service: its unit is the parity XOR the other data units. */
  private async logPendingParity(row: number, missing: number, known: KnownRow): Promise<number> {
    assert(
      known.reservation !== undefined,
      `RAID-5 row ${row}: a pending parity without room in the row log`,
    );
    const rowOffset = row * this.stripeUnitBytes;
    const contents = copyOf(known.parity);
    const unit = Buffer.allocUnsafe(this.stripeUnitBytes);
    for (let unitInRow = 0; unitInRow < this.memberCount - 1; unitInRow += 1) {
      const memberIndex = this.geometry.dataMember(row, unitInRow);
      if (memberIndex === missing) continue;
      const knownUnit = known.units.get(memberIndex);
      if (knownUnit) xorInto(contents, knownUnit);
      else await this.members.xorMemberInto(contents, unit, row, memberIndex, rowOffset, missing);
    }
    return this.io.rowLog!.append(row, missing, 0, contents);
  }

  /** Writes back a row's pending parity and drops the row from memory. The caller holds the row's lock. */
  private async forgetRow(row: number): Promise<void> {
    await this.settle(row);
    this.dropKnown(row);
  }

  /** Writes back every pending parity (before the drives are flushed) and drops the rows. */
  async writeBackKnownRows(): Promise<void> {
    for (const row of new Set([...this.held.keys(), ...this.known.keys()]))
      await this.rowLocks.withChunks([row], () => this.forgetRow(row));
    if (this.known.size === 0 && this.held.size === 0) this.memory.forget(this);
  }

  /** Forgets every row without writing anything (the session was abandoned: a simulated crash). */
  discardKnownRows(): void {
    for (const known of this.known.values()) known.reservation?.();
    for (const held of this.held.values()) held.reservation?.();
    this.known.clear();
    this.held.clear();
    this.memory.forget(this);
  }

  /** Whether a parity is waiting to be written back. */
  get hasPendingParity(): boolean {
    if (this.held.size > 0) return true;
    for (const known of this.known.values()) if (known.parityPending) return true;
    return false;
  }

  /**
   * Degraded write: every data unit of the row is read (the one unreadable member's, or the one
   * whose read fails, is derived from parity), the write is applied in memory, and the changed
   * units and the parity are written; a unit whose data was corrupt is written whole (repaired).
   */
  private async reconstructWrite(row: number, pieces: DataPiece[], data: Buffer): Promise<void> {
    await this.forgetRow(row);
    const unitBytes = this.stripeUnitBytes;
    const rowOffset = row * unitBytes;
    const units = new Map<number, Buffer>();
    let derive: number | undefined;
    let corrupt = false;
    for (let index = 0; index < this.memberCount; index += 1) {
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
    for (let unitInRow = 0; unitInRow < this.memberCount - 1; unitInRow += 1)
      xorInto(parity, units.get(this.geometry.dataMember(row, unitInRow))!);
    const writes = [...touched]
      .filter((index) => index !== this.geometry.parityMember(row))
      .map((index) => [index, rowOffset, units.get(index)!] as const);
    const skip = derive !== undefined && !corrupt ? [derive] : [];
    await this.members.writeUnits(row, writes, parity, skip);
    if (corrupt) this.io.integrity.repairs += 1;
  }
}
