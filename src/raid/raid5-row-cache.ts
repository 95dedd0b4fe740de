// The rows one RAID-5 RStore keeps in memory (md's stripe cache, in miniature), each used and
// changed only under the row's lock:
// - held rows: whole data units of a row not complete yet, held back from the members until the
//   row is complete (then written whole, parity from the new data alone, no reads) or anything
//   else touches the row (settle: they go to the members by read-modify-write);
// - known rows: after a read-modify-write, the row's parity and the data units known whole,
//   exactly as on the members, or with the parity pending (not written yet: the one here is the
//   row's parity until written back).
// Held units and pending parity are written back (writeBackKnownRows) before every drive flush,
// when a third row is held or kept, and when the pool's Raid5Memory lets the RStore's rows go.
// While rows differ on the members from their parity, room in the row log is reserved for them.
// A held row counts as held for readers (isHeld) and for flushes (hasPendingParity) until its
// units are on the members: a reader or a flush that finds it takes the row's lock, so while the
// write that completes or settles its row is on its way, an acknowledged unit never reads as the
// member's older bytes, nor does a flush return before the unit is on the members.

import { xorInto } from '../native/native-kernels.js';
import { assert } from '../util/assert.js';
import type { ChunkLockManager } from '../util/chunk-locks.js';
import type { DataPiece, Raid5Geometry } from './raid5-geometry.js';
import type { MemberIo } from './member-io.js';
import type { Raid5Members } from './raid5-members.js';
import { copyOf, type Raid5Memory, type RowHolder } from './raid5-memory.js';
import type { RowsInMemory } from './raid5-read.js';

/**
 * A row the layout holds in memory after a read-modify-write (the stripe cache of md): its
 * parity and the data units known whole, exactly as they are (or, for a pending parity, are about
 * to be) on the members. Used and changed only under the row's lock.
 */
export interface KnownRow {
  row: number;
  parity: Buffer;
  /**
   * The parity on the parity member is stale: the one here is the row's parity until written back.
   */
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

/** Rows whose data units one layout holds back at most (see Raid5RowCache.hold). */
const heldRowsPerLayout = 2;

/** Rows one layout keeps (a sequential stream needs one; two lets the next row start meanwhile). */
const knownRowsPerLayout = 2;

/**
 * What the row cache needs of the writes (raid5-write.ts): a row's pieces written to the members,
 * not held.
 */
export interface UncachedRowWriter {
  /**
   * As Raid5Writer.writeRowUncached: true, having written nothing, when the row log has no room.
   */
  writeRowUncached(
    row: number,
    pieces: DataPiece[],
    data: Buffer,
    reservation?: () => void,
  ): Promise<boolean>;
}

export class Raid5RowCache implements RowsInMemory, RowHolder {
  /** Rows held in memory, least recently written first (see KnownRow). */
  private readonly known = new Map<number, KnownRow>();
  /**
   * Rows not complete yet whose whole data units are held back, not on the members (see hold()).
   */
  private readonly held = new Map<number, HeldRow>();
  /**
   * Rows whose held units are being written to the members now (under the row's lock): readers
   * still take the row's lock for them, so none reads a member before the units it acknowledged
   * are there.
   */
  private readonly writingHeld = new Set<number>();
  private readonly geometry: Raid5Geometry;
  private readonly io: MemberIo;

  constructor(
    private readonly members: Raid5Members,
    private readonly rowLocks: ChunkLockManager,
    /** The pool's: spare buffers, and the RStores holding rows. */
    private readonly memory: Raid5Memory,
    private readonly writer: UncachedRowWriter,
  ) {
    this.geometry = members.geometry;
    this.io = members.io;
  }

  isHeld(row: number): boolean {
    return this.held.has(row) || this.writingHeld.has(row);
  }

  /** The row kept in memory, if any. */
  knownRow(row: number): KnownRow | undefined {
    return this.known.get(row);
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
  async hold(row: number, pieces: DataPiece[], data: Buffer): Promise<boolean> {
    const unitBytes = this.geometry.stripeUnitBytes;
    if (!pieces.every((piece) => piece.offsetInUnit === 0 && piece.lengthBytes === unitBytes))
      return false;
    let held = this.held.get(row);
    if (!held) {
      if (this.known.has(row) || pieces.length === this.geometry.memberCount - 1) return false;
      if (!pieces.some((piece) => piece.memberIndex === this.geometry.dataMember(row, 0)))
        return false;
    }
    // A row with a member out of service is held too: written whole, it needs no reads, and its
    // row log record is the new data of the missing member (see writeRowUncached).
    if (this.members.unreadableMembers(row * unitBytes).length > 1) return false;
    if (!held) {
      const reservation = this.io.rowLog?.tryReserve(unitBytes);
      // no room to cover the row if a member left before its write
      if (this.io.rowLog && !reservation) return false;
      held = {
        data: this.memory.take((this.geometry.memberCount - 1) * unitBytes),
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
    if (held.pieces.size === this.geometry.memberCount - 1) {
      // The row is complete: written whole, parity from the new data alone.
      await this.writeHeld(row, held);
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

  /** Room in the row log for a row whose parity is to stay pending; false when there is none. */
  reserveWhilePending(known: KnownRow): boolean {
    const log = this.io.rowLog;
    if (!log) return true;
    // With a data member out of service or being rebuilt, a power cut before the write-back would
    // leave that member's contents in no place but a stale XOR: the parity goes with the data.
    if (this.members.missingDataMember(known.row) !== undefined) return false;
    known.reservation ??= log.tryReserve(this.geometry.stripeUnitBytes);
    return known.reservation !== undefined;
  }

  /** Forgets a known row and the room it held (its parity is not pending, or is replaced). */
  dropKnown(row: number): void {
    const known = this.known.get(row);
    if (!known) return;
    this.known.delete(row);
    known.reservation?.();
  }

  /**
   * Keeps a row in memory as the most recent; rows beyond the per-layout bound are written back.
   */
  keep(known: KnownRow): void {
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
   * Writes a held row's units (out of this.held now, in writingHeld until they are on the
   * members), then gives back buffer and reservation. The caller holds the row's lock.
   */
  private async writeHeld(row: number, held: HeldRow): Promise<void> {
    this.writingHeld.add(row);
    try {
      await this.writer.writeRowUncached(
        row,
        [...held.pieces.values()],
        held.data,
        held.reservation,
      );
    } finally {
      this.writingHeld.delete(row);
      held.reservation?.();
      this.memory.give(held.data);
    }
  }

  /**
   * Writes a row's held-back units (read-modify-write) and its pending parity to the members.
   * The caller holds the row's lock.
   */
  async settle(row: number): Promise<void> {
    const held = this.held.get(row);
    if (held) {
      this.held.delete(row);
      await this.writeHeld(row, held);
    }
    const known = this.known.get(row);
    if (!known?.parityPending) return;
    // Pending until written: a flush meanwhile (hasPendingParity) waits for this row's lock.
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
        await this.io.write(parityMember, row * this.geometry.stripeUnitBytes, known.parity);
      } catch (error) {
        this.io.failed(parityMember, error);
      } finally {
        if (seq !== undefined) this.io.rowLog!.done(seq);
      }
    } finally {
      known.parityPending = false;
      known.reservation?.();
      known.reservation = undefined;
    }
  }

  /**
   * The row log record of a pending parity once data member `missing` left service: its unit is the
   * parity XOR the other data units.
   */
  private async logPendingParity(row: number, missing: number, known: KnownRow): Promise<number> {
    assert(
      known.reservation !== undefined,
      `RAID-5 row ${row}: a pending parity without room in the row log`,
    );
    const rowOffset = row * this.geometry.stripeUnitBytes;
    const contents = copyOf(known.parity);
    const unit = Buffer.allocUnsafe(this.geometry.stripeUnitBytes);
    for (let unitInRow = 0; unitInRow < this.geometry.memberCount - 1; unitInRow += 1) {
      const memberIndex = this.geometry.dataMember(row, unitInRow);
      if (memberIndex === missing) continue;
      const knownUnit = known.units.get(memberIndex);
      if (knownUnit) xorInto(contents, knownUnit);
      else await this.members.xorMemberInto(contents, unit, row, memberIndex, rowOffset, missing);
    }
    return this.io.rowLog!.append(row, missing, 0, contents);
  }

  /**
   * Writes back a row's pending parity and drops the row from memory. The caller holds the row's
   * lock.
   */
  async forgetRow(row: number): Promise<void> {
    await this.settle(row);
    this.dropKnown(row);
  }

  /**
   * Writes back every held unit and pending parity (before the drives are flushed) and drops the
   * rows; a row whose held units are being written by another request is waited for.
   */
  async writeBackKnownRows(): Promise<void> {
    for (const row of new Set([...this.held.keys(), ...this.writingHeld, ...this.known.keys()]))
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
    if (this.held.size > 0 || this.writingHeld.size > 0) return true;
    for (const known of this.known.values()) if (known.parityPending) return true;
    return false;
  }
}
