// The drive header (the drive's label): 4 KiB that name the pool and the drive's place in it, and
// give the layout of the rest: the quorum area (two checkpoint slots and the metadata journal),
// the degraded-row log, the checksum table and the PSEG area. From format 5 on every drive carries
// it twice, the same bytes at the drive's start and in its last 4 KiB (src/meta/drive-labels.ts);
// a format-4 drive has only the first. Byte layout in docs/on-disk-format.md.

import {
  checkSeal,
  formatVersion,
  isReadableFormatVersion,
  hasMagic,
  seal,
  writeMagic,
} from './checksum.js';

export const driveHeaderBytes = 4096;
const magic = 'LUNFSDRV';

export interface DriveHeader {
  /** 5: labels at both ends; 4: an older pool's single label at the start (kept as it is). */
  formatVersion: number;
  poolUuid: string;
  driveUuid: string;
  driveIndex: number;
  driveCount: number;
  driveSizeBytes: number;
  psegSizeBytes: number;
  psegCount: number;
  quorumOffsetBytes: number;
  checkpointSlotBytes: number;
  journalBytes: number;
  psegAreaOffsetBytes: number;
  holdsQuorumCopy: boolean;
  createdAtMs: number;
  /** The per-block data checksum table of the PSEG area (src/drive/checksum-table.ts). */
  checksumTableOffsetBytes: number;
  checksumTableBytes: number;
  /** The degraded-row log (src/raid/row-log.ts). */
  rowLogOffsetBytes: number;
  rowLogBytes: number;
}

export function encodeDriveHeader(header: DriveHeader): Buffer {
  const buffer = Buffer.alloc(driveHeaderBytes);
  writeMagic(buffer, magic);
  buffer.writeUInt32LE(header.formatVersion, 8);
  buffer.write(header.poolUuid.padEnd(36, ' '), 16, 36, 'latin1');
  buffer.write(header.driveUuid.padEnd(36, ' '), 52, 36, 'latin1');
  buffer.writeUInt32LE(header.driveIndex, 88);
  buffer.writeUInt32LE(header.driveCount, 92);
  buffer.writeBigUInt64LE(BigInt(header.driveSizeBytes), 96);
  buffer.writeUInt32LE(header.psegSizeBytes, 104);
  buffer.writeUInt32LE(header.psegCount, 108);
  buffer.writeBigUInt64LE(BigInt(header.quorumOffsetBytes), 112);
  buffer.writeBigUInt64LE(BigInt(header.checkpointSlotBytes), 120);
  buffer.writeBigUInt64LE(BigInt(header.journalBytes), 128);
  buffer.writeBigUInt64LE(BigInt(header.psegAreaOffsetBytes), 136);
  buffer.writeUInt32LE(header.holdsQuorumCopy ? 1 : 0, 144);
  buffer.writeBigUInt64LE(BigInt(header.createdAtMs), 148);
  buffer.writeBigUInt64LE(BigInt(header.checksumTableOffsetBytes), 156);
  buffer.writeBigUInt64LE(BigInt(header.checksumTableBytes), 164);
  buffer.writeBigUInt64LE(BigInt(header.rowLogOffsetBytes), 172);
  buffer.writeBigUInt64LE(BigInt(header.rowLogBytes), 180);
  seal(buffer, 12);
  return buffer;
}

export type DecodedDriveHeader = { ok: true; header: DriveHeader } | { ok: false; reason: string };

export function decodeDriveHeader(buffer: Buffer): DecodedDriveHeader {
  if (!hasMagic(buffer, magic))
    return { ok: false, reason: 'no lunfs drive header (wrong magic): not a lunfs drive' };
  const version = buffer.readUInt32LE(8);
  if (!isReadableFormatVersion(version))
    return {
      ok: false,
      reason: `drive header format version ${version} is not supported (expected ${formatVersion})`,
    };
  if (!checkSeal(buffer, 12))
    return { ok: false, reason: 'drive header checksum mismatch: header is damaged' };
  return {
    ok: true,
    header: {
      formatVersion: version,
      poolUuid: buffer.toString('latin1', 16, 52).trimEnd(),
      driveUuid: buffer.toString('latin1', 52, 88).trimEnd(),
      driveIndex: buffer.readUInt32LE(88),
      driveCount: buffer.readUInt32LE(92),
      driveSizeBytes: Number(buffer.readBigUInt64LE(96)),
      psegSizeBytes: buffer.readUInt32LE(104),
      psegCount: buffer.readUInt32LE(108),
      quorumOffsetBytes: Number(buffer.readBigUInt64LE(112)),
      checkpointSlotBytes: Number(buffer.readBigUInt64LE(120)),
      journalBytes: Number(buffer.readBigUInt64LE(128)),
      psegAreaOffsetBytes: Number(buffer.readBigUInt64LE(136)),
      holdsQuorumCopy: buffer.readUInt32LE(144) === 1,
      createdAtMs: Number(buffer.readBigUInt64LE(148)),
      checksumTableOffsetBytes: Number(buffer.readBigUInt64LE(156)),
      checksumTableBytes: Number(buffer.readBigUInt64LE(164)),
      rowLogOffsetBytes: Number(buffer.readBigUInt64LE(172)),
      rowLogBytes: Number(buffer.readBigUInt64LE(180)),
    },
  };
}

/**
 * The label a drive header carries, in words (pool uuid, drive index, created), or undefined when
 * it is not a lunfs header.
 */
export function describeDriveLabel(buffer: Buffer): string | undefined {
  const decoded = decodeDriveHeader(buffer);
  if (!decoded.ok) return undefined;
  const { poolUuid, driveIndex, driveCount, createdAtMs } = decoded.header;
  return `pool ${poolUuid}, drive ${driveIndex} of ${driveCount}, created ${new Date(createdAtMs).toISOString()}`;
}

/** Drive offset of the tail label: the last whole 4 KiB of a drive of this size. */
export function tailLabelOffsetBytes(driveSizeBytes: number): number {
  return Math.floor(driveSizeBytes / driveHeaderBytes) * driveHeaderBytes - driveHeaderBytes;
}

/** Bytes at the end of a drive of this size that the tail label keeps from the PSEG area. */
export function tailLabelReserveBytes(driveSizeBytes: number): number {
  return driveSizeBytes - tailLabelOffsetBytes(driveSizeBytes);
}

/** How many labels a drive of this format carries. */
export function labelCountOf(header: DriveHeader): number {
  return header.formatVersion >= 5 ? 2 : 1;
}
