// RAID-5 inside one RStore (seed 004 [0044], [0059]-[0062]): n members, the data space cut into
// stripe units; each row holds n - 1 data units and one parity unit (the XOR of the row's data),
// and the parity rotates over the members, left-symmetric as in md: row r keeps its parity on
// member n - 1 - (r mod n) and its data units on the members after it, wrapping. A write that
// covers a whole row computes the parity from the new data; a smaller one reads the old data and
// the old parity and writes new parity = old parity ^ old data ^ new data. Writes to one row are
// serialised (the read-modify-write must not interleave). The XOR runs in the native kernel.
//
// A member that fails a read is reconstructed from the others (degraded read). Not here yet
// (issue 4): writes with a member gone (the failed member must then be marked failed, durably,
// so it is never read stale), rebuild, and the write-intent record that closes the write hole.

import { forEachPiece } from '../block/block-device.js';
import { xorInto } from '../native/native-kernels.js';
import { ChunkLockManager } from '../snapshot/lock-manager.js';
import { LunfsError } from '../util/errors.js';

/** Reads and writes of one member, at an offset inside that member's PSEG. */
export interface MemberIo {
  read(memberIndex: number, memberOffsetBytes: number, target: Buffer): Promise<void>;
  write(memberIndex: number, memberOffsetBytes: number, data: Buffer): Promise<void>;
}

/** Where one piece of a data range lives. */
interface DataPiece {
  row: number;
  memberIndex: number;
  offsetInUnit: number;
  lengthBytes: number;
  requestOffset: number;
}

export class Raid5Layout {
  private readonly rowLocks = new ChunkLockManager();

  constructor(
    readonly memberCount: number,
    readonly stripeUnitBytes: number,
    private readonly io: MemberIo,
  ) {}

  parityMember(row: number): number {
    return this.memberCount - 1 - (row % this.memberCount);
  }

  /** The member holding data unit k (0 .. n-2) of a row. */
  dataMember(row: number, unitInRow: number): number {
    return (this.parityMember(row) + 1 + unitInRow) % this.memberCount;
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const piece of this.pieces(offsetBytes, target.length)) {
      const slice = target.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes);
      pending.push(this.io.read(piece.memberIndex, piece.row * this.stripeUnitBytes + piece.offsetInUnit, slice).catch((error: unknown) => this.reconstruct(piece, slice, error)));
    }
    await Promise.all(pending);
  }

  /**
   * A member failed to read: its data is the XOR of the same range on every other member of the
   * row (data and parity), read under the row lock so that no write changes the row meanwhile.
   * A second failure in the row is EIO.
   */
  private reconstruct(piece: DataPiece, slice: Buffer, cause: unknown): Promise<void> {
    return this.rowLocks.withChunks([piece.row], async () => {
      const offset = piece.row * this.stripeUnitBytes + piece.offsetInUnit;
      const other = Buffer.alloc(slice.length);
      slice.fill(0);
      for (let memberIndex = 0; memberIndex < this.memberCount; memberIndex += 1) {
        if (memberIndex === piece.memberIndex) continue;
        try {
          await this.io.read(memberIndex, offset, other);
        } catch (error) {
          throw new LunfsError('EIO', `RAID-5 row ${piece.row}: members ${piece.memberIndex} and ${memberIndex} both failed to read (${(cause as Error).message}; ${(error as Error).message})`, { cause: error });
        }
        xorInto(slice, other);
      }
    });
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    const byRow = new Map<number, DataPiece[]>();
    for (const piece of this.pieces(offsetBytes, data.length)) {
      let list = byRow.get(piece.row);
      if (!list) byRow.set(piece.row, (list = []));
      list.push(piece);
    }
    await Promise.all([...byRow].map(([row, pieces]) => this.rowLocks.withChunks([row], () => this.writeRow(row, pieces, data))));
  }

  /**
   * Makes the parity of rows [firstRow, endRow) the XOR of their data again: after a crash a row
   * whose data and parity writes were not both on disk has stale parity (the write hole).
   */
  async resyncRows(firstRow: number, endRow: number): Promise<void> {
    const unitBytes = this.stripeUnitBytes;
    const unit = Buffer.alloc(unitBytes);
    for (let row = firstRow; row < endRow; row += 1) {
      await this.rowLocks.withChunks([row], async () => {
        const parity = Buffer.alloc(unitBytes);
        for (let unitInRow = 0; unitInRow < this.memberCount - 1; unitInRow += 1) {
          await this.io.read(this.dataMember(row, unitInRow), row * unitBytes, unit);
          xorInto(parity, unit);
        }
        await this.io.write(this.parityMember(row), row * unitBytes, parity);
      });
    }
  }

  /** The first row in [firstRow, endRow) whose parity is not the XOR of its data (for scrub and tests). */
  async firstInconsistentRow(firstRow: number, endRow: number): Promise<number | undefined> {
    const unitBytes = this.stripeUnitBytes;
    const unit = Buffer.alloc(unitBytes);
    for (let row = firstRow; row < endRow; row += 1) {
      const xor = Buffer.alloc(unitBytes);
      for (let memberIndex = 0; memberIndex < this.memberCount; memberIndex += 1) {
        await this.io.read(memberIndex, row * unitBytes, unit);
        xorInto(xor, unit);
      }
      if (!xor.every((byte) => byte === 0)) return row;
    }
    return undefined;
  }

  private async writeRow(row: number, pieces: DataPiece[], data: Buffer): Promise<void> {
    const unitBytes = this.stripeUnitBytes;
    const rowOffset = row * unitBytes;
    const parity = Buffer.alloc(unitBytes);
    const wholeRow = pieces.length === this.memberCount - 1 && pieces.every((piece) => piece.lengthBytes === unitBytes);
    if (wholeRow) {
      for (const piece of pieces) xorInto(parity, data.subarray(piece.requestOffset, piece.requestOffset + unitBytes));
    } else {
      // parity ^= old ^ new over each piece's range in the unit
      await this.io.read(this.parityMember(row), rowOffset, parity);
      await Promise.all(pieces.map(async (piece) => {
        const old = Buffer.alloc(piece.lengthBytes);
        await this.io.read(piece.memberIndex, rowOffset + piece.offsetInUnit, old);
        xorInto(old, data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes));
        xorInto(parity.subarray(piece.offsetInUnit, piece.offsetInUnit + piece.lengthBytes), old);
      }));
    }
    await Promise.all([
      ...pieces.map((piece) => this.io.write(piece.memberIndex, rowOffset + piece.offsetInUnit, data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes))),
      this.io.write(this.parityMember(row), rowOffset, parity),
    ]);
  }

  private pieces(offsetBytes: number, lengthBytes: number): DataPiece[] {
    const pieces: DataPiece[] = [];
    const dataUnitsPerRow = this.memberCount - 1;
    forEachPiece(offsetBytes, lengthBytes, this.stripeUnitBytes, (unitIndex, offsetInUnit, length, requestOffset) => {
      const row = Math.floor(unitIndex / dataUnitsPerRow);
      pieces.push({ row, memberIndex: this.dataMember(row, unitIndex % dataUnitsPerRow), offsetInUnit, lengthBytes: length, requestOffset });
    });
    return pieces;
  }
}
