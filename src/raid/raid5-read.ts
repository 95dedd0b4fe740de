// RAID-5 reads and reconstruction (seed 004 [0059]-[0062]): a unit on an unreadable member (out of
// service, or a replacement not rebuilt there) is the XOR of the same range of every other member
// of the row, data and parity, read under the row's lock. A read that fails its checksum is
// reconstructed the same way and the good data, in whole 4 KiB blocks, is written back (repair);
// a member that returns an I/O error leaves service (MemberIo.failed). A row whose units are held
// back in memory reaches the members first (settle), so reads always see the members' bytes.

import type { ChunkLockManager } from '../util/chunk-locks.js';
import { checksumBlockBytes, type DataPiece, type Raid5Geometry } from './raid5-geometry.js';
import type { MemberIo } from './member-io.js';
import type { Raid5Members } from './raid5-members.js';

/**
 * What reads need of the rows kept in memory (raid5-row-cache.ts). The caller holds the row's lock
 * for the two writes.
 */
export interface RowsInMemory {
  /** Whether units of the row are held back, not on the members yet. */
  isHeld(row: number): boolean;
  /** Writes the row's held units and pending parity to the members. */
  settle(row: number): Promise<void>;
  /** settle, then drops the row from memory (before its members are rewritten). */
  forgetRow(row: number): Promise<void>;
}

export class Raid5Reader {
  private readonly geometry: Raid5Geometry;
  private readonly io: MemberIo;

  constructor(
    private readonly members: Raid5Members,
    private readonly rowLocks: ChunkLockManager,
    private readonly rows: RowsInMemory,
  ) {
    this.geometry = members.geometry;
    this.io = members.io;
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const piece of this.geometry.pieces(offsetBytes, target.length)) {
      const slice = target.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes);
      const memberOffset = piece.row * this.geometry.stripeUnitBytes + piece.offsetInUnit;
      if (!this.io.readable(piece.memberIndex, memberOffset)) {
        pending.push(
          this.rowLocks.withChunks([piece.row], () =>
            this.reconstruct(piece.row, piece.memberIndex, memberOffset, slice),
          ),
        );
        continue;
      }
      if (this.rows.isHeld(piece.row)) {
        // Units held back reach the members first (settle), then the read goes on as usual.
        pending.push(
          this.rowLocks
            .withChunks([piece.row], () => this.rows.settle(piece.row))
            .then(() => this.io.read(piece.memberIndex, memberOffset, slice))
            .catch((error: unknown) => this.recoverRead(piece, memberOffset, slice, error)),
        );
        continue;
      }
      pending.push(
        this.io
          .read(piece.memberIndex, memberOffset, slice)
          .catch((error: unknown) => this.recoverRead(piece, memberOffset, slice, error)),
      );
    }
    await Promise.all(pending);
  }

  /**
   * A member's read failed: its range is rebuilt from the other members, and written back when only
   * its data was bad.
   */
  private recoverRead(
    piece: DataPiece,
    memberOffset: number,
    slice: Buffer,
    error: unknown,
  ): Promise<void> {
    const corrupt = this.members.noteReadError(piece.memberIndex, error);
    return this.rowLocks.withChunks([piece.row], async () => {
      if (!corrupt) {
        await this.reconstruct(piece.row, piece.memberIndex, memberOffset, slice);
        return;
      }
      // A checksum covers a whole 4 KiB block: rebuild and rewrite whole blocks (a stripe unit is
      // a multiple of 4 KiB, so they stay inside the unit).
      const start = Math.floor(memberOffset / checksumBlockBytes) * checksumBlockBytes;
      const end =
        Math.ceil((memberOffset + slice.length) / checksumBlockBytes) * checksumBlockBytes;
      const whole =
        start === memberOffset && end === memberOffset + slice.length
          ? slice
          : Buffer.allocUnsafe(end - start);
      await this.reconstruct(piece.row, piece.memberIndex, start, whole);
      if (whole !== slice)
        whole.copy(slice, 0, memberOffset - start, memberOffset - start + slice.length);
      await this.repair(piece.memberIndex, start, whole);
    });
  }

  /**
   * The data of memberIndex at memberOffset is the XOR of the same range on every other member of
   * the row (data and parity). The caller holds the row lock. A second unreadable member is EIO.
   */
  async reconstruct(
    row: number,
    memberIndex: number,
    memberOffset: number,
    slice: Buffer,
  ): Promise<void> {
    await this.rows.settle(row); // the parity on the member must be the row's
    const other = Buffer.allocUnsafe(slice.length);
    slice.fill(0);
    for (let index = 0; index < this.geometry.memberCount; index += 1) {
      if (index === memberIndex) continue;
      if (!this.io.readable(index, memberOffset))
        throw this.members.lost(row, [memberIndex, index], 'both unreadable');
      await this.members.xorMemberInto(slice, other, row, index, memberOffset, memberIndex);
    }
  }

  /** Writes reconstructed data over a range whose checksum failed. */
  async repair(memberIndex: number, memberOffset: number, data: Buffer): Promise<void> {
    // the caller holds the row lock
    await this.rows.forgetRow(Math.floor(memberOffset / this.geometry.stripeUnitBytes));
    try {
      await this.io.write(memberIndex, memberOffset, data);
      this.io.integrity.repairs += 1;
    } catch (error) {
      this.io.failed(memberIndex, error);
    }
  }
}
