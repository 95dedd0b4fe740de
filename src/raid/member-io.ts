// An RStore's members as its RAID code sees them (MemberIo): reads and writes at an offset inside
// a member's PSEG, turned into drive offsets (PSEG area start + PSEG index * PSEG size), and each
// member's health (DriveHealth, by the member's drive). RStoreMemberIo is the one implementation,
// built once per RStore over the pool's drives; RowLogPort is the pool's degraded-row log as one
// RStore sees it.

import { ChecksumDrive } from '../drive/checksum-drive.js';
import type { Drive } from '../drive/drive.js';
import type { RStoreRecord } from '../meta/pool-metadata.js';
import type { DriveHealth, IntegrityCounters } from './drive-health.js';
import type { DegradedRowLog } from './row-log.js';

/**
 * Runs reads or writes of members, each at once where its drive serves it inline (no promise, no
 * turn of the event loop: a random 4 KiB RAID-5 write does four), the others through the promise
 * API, all side by side. Resolves, never rejects, to each one's error in order (undefined: done).
 */
export async function settleMemberIo(
  io: MemberIo,
  kind: 'read' | 'write',
  requests: ReadonlyArray<readonly [memberIndex: number, memberOffsetBytes: number, bytes: Buffer]>,
): Promise<unknown[]> {
  const errors: unknown[] = new Array<unknown>(requests.length).fill(undefined);
  let pending: Array<Promise<void>> | undefined;
  requests.forEach(([memberIndex, offset, bytes], index) => {
    try {
      const done =
        kind === 'read'
          ? io.readInline?.(memberIndex, offset, bytes)
          : io.writeInline?.(memberIndex, offset, bytes);
      if (done) return;
      const request =
        kind === 'read'
          ? io.read(memberIndex, offset, bytes)
          : io.write(memberIndex, offset, bytes);
      (pending ??= []).push(
        request.catch((error: unknown) => {
          errors[index] = error ?? new Error('member I/O failed');
        }),
      );
    } catch (error) {
      errors[index] = error ?? new Error('member I/O failed');
    }
  });
  if (pending) await Promise.all(pending);
  return errors;
}

/** Where a drive's PSEG area starts and how big a PSEG is: from its header. */
export interface DriveGeometry {
  drive: Drive;
  psegAreaOffsetBytes: number;
  psegSizeBytes: number;
}

/** Reads and writes of one member, at an offset inside that member's PSEG, and its health. */
export interface MemberIo {
  read(memberIndex: number, memberOffsetBytes: number, target: Buffer): Promise<void>;
  write(memberIndex: number, memberOffsetBytes: number, data: Buffer): Promise<void>;
  /**
   * Optional: the read done at once, with sync calls, when the member's drive serves it inline
   * (Drive.readInline); false, having done nothing, when it must go through read(). Throws what
   * read() would reject with.
   */
  readInline?(memberIndex: number, memberOffsetBytes: number, target: Buffer): boolean;
  /** Optional: the same for a write. */
  writeInline?(memberIndex: number, memberOffsetBytes: number, data: Buffer): boolean;
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
  /**
   * Takes the member's data over this range as it is and records fresh checksums for it (resync
   * after a crash).
   */
  recompute(memberIndex: number, memberOffsetBytes: number, lengthBytes: number): Promise<void>;
  /** Member offsets of the 4 KiB blocks in the range whose data fails its checksum. */
  badBlocks(memberIndex: number, memberOffsetBytes: number, lengthBytes: number): Promise<number[]>;
  readonly integrity: IntegrityCounters;
  /** Names the RStore in messages. */
  readonly name: string;
  /**
   * The pool's degraded-row log (absent outside a pool: then a power cut with a member out is not
   * covered).
   */
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

/** MemberIo over the pool's drives: one per RStore. */
export class RStoreMemberIo implements MemberIo {
  readonly integrity: IntegrityCounters;
  readonly name: string;
  readonly rowLog?: RowLogPort;

  constructor(
    private readonly record: RStoreRecord,
    private readonly drives: ReadonlyArray<DriveGeometry>,
    private readonly health: DriveHealth,
    rowLog?: DegradedRowLog,
  ) {
    this.integrity = health.integrity;
    this.name = `RStore ${record.id}`;
    this.rowLog = rowLog && {
      reserve: (dataBytes) => rowLog.reserve(dataBytes),
      tryReserve: (dataBytes) => rowLog.tryReserve(dataBytes),
      append: (row, memberIndex, offsetInUnit, data) =>
        rowLog.append({ rstoreId: record.id, row, memberIndex, offsetInUnit, data }),
      done: (seq) => rowLog.done(seq),
    };
  }

  read(memberIndex: number, memberOffsetBytes: number, target: Buffer): Promise<void> {
    return this.drive(memberIndex).read(
      this.physicalOffset(memberIndex, memberOffsetBytes),
      target,
    );
  }

  write(memberIndex: number, memberOffsetBytes: number, data: Buffer): Promise<void> {
    return this.drive(memberIndex).write(this.physicalOffset(memberIndex, memberOffsetBytes), data);
  }

  readInline(memberIndex: number, memberOffsetBytes: number, target: Buffer): boolean {
    const drive = this.drive(memberIndex);
    return drive.readInline?.(this.physicalOffset(memberIndex, memberOffsetBytes), target) ?? false;
  }

  writeInline(memberIndex: number, memberOffsetBytes: number, data: Buffer): boolean {
    const drive = this.drive(memberIndex);
    return drive.writeInline?.(this.physicalOffset(memberIndex, memberOffsetBytes), data) ?? false;
  }

  readable(memberIndex: number, memberOffsetBytes: number, lengthBytes?: number): boolean {
    return this.health.readable(
      this.driveIndexOf(memberIndex),
      this.record.id,
      memberOffsetBytes,
      lengthBytes,
    );
  }

  writable(memberIndex: number): boolean {
    return this.health.writable(this.driveIndexOf(memberIndex));
  }

  rebuilding(memberIndex: number): boolean {
    return this.health.state(this.driveIndexOf(memberIndex)) === 'rebuilding';
  }

  failed(memberIndex: number, error: unknown): void {
    this.health.fail(this.driveIndexOf(memberIndex), error);
  }

  async badBlocks(
    memberIndex: number,
    memberOffsetBytes: number,
    lengthBytes: number,
  ): Promise<number[]> {
    const drive = this.drive(memberIndex);
    if (!(drive instanceof ChecksumDrive)) return [];
    const start = this.physicalOffset(memberIndex, 0);
    return (
      await drive.verify(this.physicalOffset(memberIndex, memberOffsetBytes), lengthBytes)
    ).map((offset) => offset - start);
  }

  async recompute(
    memberIndex: number,
    memberOffsetBytes: number,
    lengthBytes: number,
  ): Promise<void> {
    const drive = this.drive(memberIndex);
    if (drive instanceof ChecksumDrive)
      await drive.recompute(this.physicalOffset(memberIndex, memberOffsetBytes), lengthBytes);
  }

  /** The member's drive. */
  drive(memberIndex: number): Drive {
    return this.drives[this.record.members[memberIndex]!.driveIndex]!.drive;
  }

  private driveIndexOf(memberIndex: number): number {
    return this.record.members[memberIndex]!.driveIndex;
  }

  private physicalOffset(memberIndex: number, memberOffsetBytes: number): number {
    const member = this.record.members[memberIndex]!;
    const geometry = this.drives[member.driveIndex]!;
    return (
      geometry.psegAreaOffsetBytes + member.psegIndex * geometry.psegSizeBytes + memberOffsetBytes
    );
  }
}
