// Sealing and checking on-disk structures: every structure starts with an 8-byte magic and a
// format version and carries a crc32c computed with its own checksum field zeroed. A structure
// is checked right after every read and sealed right before every write.

import { crc32c } from '../native/native-kernels.js';

/**
 * The version written by this build. 2 since the drive header names the checksum table (bytes
 * 156-171); 3 since target journal records carry preserve crcs and unpreserve ops; 4 since the
 * drive header names the degraded-row log (bytes 172-187); 5 since every drive carries its label
 * twice, at its start and in its last 4 KiB, and the PSEG area stops short of the tail label;
 * 6 since the pool metadata's JSON spells RStore one way (nextRStoreId, missedWriteRStores) and a
 * snapshot record names the volume it was taken of as sourceId (format 5: predecessorId, the
 * wrong way round for seed 004). A format-5 build refuses a format-6 structure rather than
 * misreading those fields.
 */
export const formatVersion = 6;

/**
 * The oldest version this build reads. A format-4 pool differs from a format-5 one only in its
 * drive labels (one, at the start: its PSEG area may reach the drive's last 4 KiB); the metadata
 * JSON of both is read by pool-metadata.ts's upgrade functions. Their other structures read as
 * they are, and new ones are written at the current version.
 */
export const oldestReadableFormatVersion = 4;

export function isReadableFormatVersion(version: number): boolean {
  return version >= oldestReadableFormatVersion && version <= formatVersion;
}

/** Writes crc32c(buffer with the 4 checksum bytes zeroed) at checksumOffset. */
export function seal(buffer: Buffer, checksumOffset: number): void {
  buffer.writeUInt32LE(0, checksumOffset);
  buffer.writeUInt32LE(crc32c(buffer), checksumOffset);
}

/** True when the stored crc32c matches; leaves the buffer unchanged. */
export function checkSeal(buffer: Buffer, checksumOffset: number): boolean {
  const stored = buffer.readUInt32LE(checksumOffset);
  buffer.writeUInt32LE(0, checksumOffset);
  const actual = crc32c(buffer);
  buffer.writeUInt32LE(stored, checksumOffset);
  return stored === actual;
}

export function writeMagic(buffer: Buffer, magic: string): void {
  buffer.write(magic.padEnd(8, '\0'), 0, 8, 'latin1');
}

export function hasMagic(buffer: Buffer, magic: string): boolean {
  return buffer.toString('latin1', 0, 8) === magic.padEnd(8, '\0');
}
