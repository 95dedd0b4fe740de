// The members of one RAID-5 RStore as its engine sees them: MemberIo (reads and writes at an offset
// inside a member's PSEG, and the member's health, provided by RStore), the row log port, and the
// row-level steps every RAID-5 path shares: which members are out, what a failed read means (a
// checksum mismatch keeps the member in service, an I/O error takes it out), the EIO of a row that
// lost two members, and writing a row's units with at most one member lost. No state of its own.

import { isChecksumError } from '../drive/checksum-drive.js';
import { xorInto } from '../native/native-kernels.js';
import { LunfsError } from '../util/errors.js';
import type { IntegrityCounters } from './drive-health.js';
import type { Raid5Geometry } from './raid5-geometry.js';

/** Reads and writes of one member, at an offset inside that member's PSEG, and its health. */
export interface MemberIo {
  read(memberIndex: number, memberOffsetBytes: number, target: Buffer): Promise<void>;
  write(memberIndex: number, memberOffsetBytes: number, data: Buffer): Promise<void>;
  /** Whether the member may be read over this range (online, or rebuilt past its end). */
  readable(memberIndex: number, memberOffsetBytes: number, lengthBytes?: number): boolean;
  writable(memberIndex: number): boolean;
  /**
   * Whether the member is a replacement being rebuilt: written like an online member, but after a
   * power cut none of it is read until the rebuild has passed it again (its watermark is not
   * durable), so its data then lives only in the XOR of the row, as for a member out of service.
   */
  rebuilding(memberIndex: number): boolean;
  /** The member returned an I/O error (not a checksum mismatch): it leaves service. */
  failed(memberIndex: number, error: unknown): void;
  /** Takes the member's data over this range as it is and records fresh checksums for it (resync after a crash). */
  recompute(memberIndex: number, memberOffsetBytes: number, lengthBytes: number): Promise<void>;
  /** Member offsets of the 4 KiB blocks in the range whose data fails its checksum. */
  badBlocks(memberIndex: number, memberOffsetBytes: number, lengthBytes: number): Promise<number[]>;
  readonly integrity: IntegrityCounters;
  /** Names the RStore in messages. */
  readonly name: string;
  /** The pool's degraded-row log (absent outside a pool: then a power cut with a member out is not covered). */
  readonly rowLog?: RowLogPort;
}

/**
 * The degraded-row log (row-log.ts) as one RStore sees it. Before any member of a row is written
 * while a data member of the row is out of service, that member's contents over the range written
 * (as they are once the write is done) are made durable there; done(seq) once the writes are over.
 * Room is reserved first: for every row being written degraded, and for every row whose data and
 * parity differ on the members until a write-back (held units, a pending parity), since a member
 * may leave service before then.
 */
export interface RowLogPort {
  reserve(dataBytes: number): Promise<() => void>;
  tryReserve(dataBytes: number): (() => void) | undefined;
  append(row: number, memberIndex: number, offsetInUnit: number, data: Buffer): Promise<number>;
  done(seq: number): void;
}

export class Raid5Members {
  constructor(
    readonly geometry: Raid5Geometry,
    readonly io: MemberIo,
  ) {}

  /** The members that may not be read at this member offset (out of service, or not rebuilt there). */
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

  /** Records a failed member read; true when it was a checksum mismatch (the drive stays in service). */
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

  /** target ^= member index's bytes at memberOffset (read into scratch); a failed read is EIO naming it and the member already out. */
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
    const results = await Promise.allSettled(
      all.map(async ([memberIndex, offset, bytes]) => {
        if (!this.io.writable(memberIndex)) {
          lost.add(memberIndex);
          return;
        }
        await this.io.write(memberIndex, offset, bytes);
      }),
    );
    results.forEach((result, index) => {
      if (result.status === 'rejected') {
        const memberIndex = all[index]![0];
        this.io.failed(memberIndex, result.reason);
        lost.add(memberIndex);
      }
    });
    if (lost.size > 1) throw this.lost(row, [...lost], 'a write failed on a second member');
  }
}
