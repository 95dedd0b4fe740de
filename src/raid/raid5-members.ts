// The members of one RAID-5 RStore as its engine sees them: MemberIo (member-io.ts) and the
// row-level steps every RAID-5 path shares: which members are out, what a failed read means (a
// checksum mismatch keeps the member in service, an I/O error takes it out), the EIO of a row that
// lost two members, and writing a row's units with at most one member lost. No state of its own.

import { isChecksumError } from '../drive/checksum-drive.js';
import { xorInto } from '../native/native-kernels.js';
import { LunfsError } from '../util/errors.js';
import { settleMemberIo, type MemberIo } from './member-io.js';
import type { Raid5Geometry } from './raid5-geometry.js';

export class Raid5Members {
  constructor(
    readonly geometry: Raid5Geometry,
    readonly io: MemberIo,
  ) {}

  /**
   * The members that may not be read at this member offset (out of service, or not rebuilt there).
   */
  unreadableMembers(memberOffset: number): number[] {
    const unreadable: number[] = [];
    for (let index = 0; index < this.geometry.memberCount; index += 1)
      if (!this.io.readable(index, memberOffset)) unreadable.push(index);
    return unreadable;
  }

  /**
   * The data member (not the parity) of this row whose contents a power cut in the middle of a
   * write would leave only in the row's XOR, if any: one out of service, or one on a replacement
   * being rebuilt even where the rebuild has passed (after the power cut the rebuild starts over
   * and reads it from the other members, whose parity a torn write left stale). Its contents go
   * to the row log before the row is written.
   */
  missingDataMember(row: number): number | undefined {
    const missing = this.unreadableMembers(row * this.geometry.stripeUnitBytes);
    if (missing.length === 0) {
      // Every row write asks: a plain loop, no array made (a second member rebuilt is not covered).
      const parityMember = this.geometry.parityMember(row);
      let rebuilding: number | undefined;
      for (let index = 0; index < this.geometry.memberCount; index += 1) {
        if (index === parityMember || !this.io.rebuilding(index)) continue;
        if (rebuilding !== undefined) return undefined;
        rebuilding = index;
      }
      return rebuilding;
    }
    return missing.length === 1 && missing[0] !== this.geometry.parityMember(row)
      ? missing[0]
      : undefined;
  }

  /**
   * Records a failed member read; true when it was a checksum mismatch (the drive stays in
   * service).
   */
  noteReadError(memberIndex: number, error: unknown): boolean {
    if (isChecksumError(error)) {
      this.io.integrity.checksumMismatches += 1;
      return true;
    }
    this.io.failed(memberIndex, error);
    return false;
  }

  /** The EIO of a row that lost more than one member (counted as unrepairable). */
  lost(row: number, members: number[], detail: string): LunfsError {
    this.io.integrity.unrepairable += 1;
    return new LunfsError(
      'EIO',
      `${this.io.name} row ${row}: members ${[...new Set(members)].join(' and ')} cannot be read (${detail}); RAID-5 holds one lost member per row`,
    );
  }

  /**
   * target ^= member index's bytes at memberOffset (read into scratch); a failed read is EIO naming
   * it and the member already out.
   */
  async xorMemberInto(
    target: Buffer,
    scratch: Buffer,
    row: number,
    index: number,
    memberOffset: number,
    out: number,
  ): Promise<void> {
    try {
      await this.io.read(index, memberOffset, scratch);
    } catch (error) {
      this.noteReadError(index, error);
      throw this.lost(row, [out, index], (error as Error).message);
    }
    xorInto(target, scratch);
  }

  /**
   * Writes data pieces and the parity unit (unless undefined) of a row; members out of service
   * are skipped. A member whose write fails leaves service; the row survives one such member in
   * all (counting those already out), more is EIO.
   */
  async writeUnits(
    row: number,
    writes: ReadonlyArray<readonly [number, number, Buffer]>,
    parity: Buffer | undefined,
    outOfService: number[],
  ): Promise<void> {
    const all = parity
      ? [
          ...writes,
          [this.geometry.parityMember(row), row * this.geometry.stripeUnitBytes, parity] as const,
        ]
      : writes;
    const lost = new Set(outOfService);
    const started = all.filter(([memberIndex]) => {
      if (this.io.writable(memberIndex)) return true;
      lost.add(memberIndex);
      return false;
    });
    const errors = await settleMemberIo(this.io, 'write', started);
    errors.forEach((error, index) => {
      if (error === undefined) return;
      const memberIndex = started[index]![0];
      this.io.failed(memberIndex, error);
      lost.add(memberIndex);
    });
    if (lost.size > 1) throw this.lost(row, [...lost], 'a write failed on a second member');
  }
}
