// Where things go on a drive, decided once at pool creation: the 4 KiB header, the quorum area
// (two checkpoint slots sized for the metadata of a fully allocated pool, and the journal), the
// degraded-row log (src/raid/row-log.ts), the checksum table (one u32 per 4 KiB of PSEG area,
// src/drive/checksum-table.ts), then the PSEG
// area, which ends before the drive's last whole 4 KiB: the tail label (src/meta/drive-labels.ts;
// a format-4 pool has none, and its PSEGs may reach the end). Every drive of a pool gets the same
// layout (the table is sized for the largest drive), so
// a metadata copy can move to any drive.

import { checksumTableBytesFor, tablePageBytes } from '../drive/checksum-table.js';
import { driveHeaderBytes, tailLabelReserveBytes } from '../meta/drive-header.js';
import { rowLogBytesFor } from '../raid/row-log.js';
import { alignUp, KiB, MiB } from '../util/sizes.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import { maxRssSize } from '../util/constants.js';

export const lmapEntryCount = 2048; // one L2MAP slot covers 2 GiB at 1 MiB units, as in [0065]

export interface DriveLayout {
  quorumOffsetBytes: number;
  checkpointSlotBytes: number;
  journalBytes: number;
  /**
   * The degraded-row log (src/raid/row-log.ts): right after the journal, on the drives holding a
   * metadata copy.
   */
  rowLogOffsetBytes: number;
  rowLogBytes: number;
  /**
   * The checksum table: right after the journal, whole 4 KiB pages, one entry per 4 KiB of PSEG
   * area.
   */
  checksumTableOffsetBytes: number;
  checksumTableBytes: number;
  /** The first MiB boundary at or after the end of the checksum table. */
  psegAreaOffsetBytes: number;
}

/** Sizes the quorum area for a pool whose drives have these sizes. */
export function planLayout(
  driveSizesBytes: number[],
  psegSizeBytes: number,
  allocationUnitBytes: number,
  stripeUnitBytes: number,
): DriveLayout {
  const totalBytes = driveSizesBytes.reduce((a, b) => a + b, 0);
  const maxUnits = Math.ceil(totalBytes / allocationUnitBytes);
  const maxRStores = Math.ceil(totalBytes / psegSizeBytes);
  // Per unit: a 12-byte map entry plus room; per RStore: its RSD in JSON; per snapshot record
  // (about 300 bytes of JSON) room for a quarter as many snapshots as units, 64 to 4096.
  const checkpointSlotBytes = alignUp(
    256 * KiB +
      maxUnits * 16 +
      maxRStores * 160 +
      snapshotRecordRoom(maxUnits) * snapshotRecordBytes,
    64 * KiB,
  );
  const journalBytes = Math.min(
    64 * MiB,
    alignUp(Math.max(2 * MiB, checkpointSlotBytes), 64 * KiB),
  );
  const quorumOffsetBytes = driveHeaderBytes;
  // The table starts right where the journal ends (4 KiB aligned, as slots and journal are 64 KiB
  // multiples after the 4 KiB header) and the PSEG area at the next MiB boundary after it, so a
  // small table lives in the slack that MiB alignment leaves anyway and costs no PSEG. It is sized
  // as if everything after its start on the largest drive were PSEG area: an upper bound, so it
  // never falls short of the PSEGs behind it.
  const rowLogOffsetBytes = quorumOffsetBytes + 2 * checkpointSlotBytes + journalBytes;
  const rowLogBytes = rowLogBytesFor(stripeUnitBytes, Math.min(...driveSizesBytes));
  const checksumTableOffsetBytes = rowLogOffsetBytes + rowLogBytes;
  const largestDriveBytes = Math.max(0, ...driveSizesBytes);
  const checksumTableBytes = checksumTableBytesFor(
    Math.max(0, largestDriveBytes - checksumTableOffsetBytes),
  );
  const psegAreaOffsetBytes = alignUp(checksumTableOffsetBytes + checksumTableBytes, MiB);
  assert(
    checksumTableOffsetBytes % tablePageBytes === 0,
    `checksum table offset ${checksumTableOffsetBytes} is not 4 KiB aligned`,
  );
  return {
    quorumOffsetBytes,
    checkpointSlotBytes,
    journalBytes,
    rowLogOffsetBytes,
    rowLogBytes,
    checksumTableOffsetBytes,
    checksumTableBytes,
    psegAreaOffsetBytes,
  };
}

/** Room reserved in a checkpoint slot per snapshot record. */
export const snapshotRecordBytes = 384;

export function snapshotRecordRoom(maxUnits: number): number {
  return Math.min(4096, Math.max(64, Math.floor(maxUnits / 4)));
}

/**
 * PSEGs that fit a drive between the PSEG area's start and its tail label (format 4: the drive's
 * end).
 */
export function psegCountFor(
  driveSizeBytes: number,
  layout: DriveLayout,
  psegSizeBytes: number,
  tailLabel = true,
): number {
  const endBytes = driveSizeBytes - (tailLabel ? tailLabelReserveBytes(driveSizeBytes) : 0);
  return Math.max(0, Math.floor((endBytes - layout.psegAreaOffsetBytes) / psegSizeBytes));
}

/**
 * Splits drives 0..driveCount-1 into redundancy sets of at most rssSize drives, as even as
 * possible, in drive order. Each set must hold the drives one RStore of the RAID level needs.
 */
export function planRedundancySets(
  driveCount: number,
  rssSize: number,
  minimumPerSet: number,
): number[][] {
  if (!Number.isSafeInteger(rssSize) || rssSize < 1 || rssSize > maxRssSize)
    throw new LunfsError(
      'EINVAL',
      `RSS size ${rssSize} must be a whole number from 1 to ${maxRssSize}`,
    );
  const setCount = Math.ceil(driveCount / rssSize);
  const base = Math.floor(driveCount / setCount);
  const larger = driveCount % setCount;
  const sets: number[][] = [];
  let next = 0;
  for (let index = 0; index < setCount; index += 1) {
    const size = base + (index < larger ? 1 : 0);
    if (size < minimumPerSet)
      throw new LunfsError(
        'EINVAL',
        `${driveCount} drives in redundancy sets of at most ${rssSize} leave a set of ${size} drive(s); this RAID level needs ${minimumPerSet} per set`,
      );
    sets.push([...Array(size).keys()].map((offset) => next + offset));
    next += size;
  }
  return sets;
}

export function checkGeometry(
  psegSizeBytes: number,
  allocationUnitBytes: number,
  stripeUnitBytes: number,
): void {
  const powerOfTwo = (value: number): boolean =>
    Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0;
  if (!powerOfTwo(stripeUnitBytes) || stripeUnitBytes < 4 * KiB)
    throw new LunfsError(
      'EINVAL',
      `stripe unit ${stripeUnitBytes} must be a power of two of at least 4 KiB`,
    );
  if (!powerOfTwo(allocationUnitBytes) || allocationUnitBytes < stripeUnitBytes)
    throw new LunfsError(
      'EINVAL',
      `allocation unit ${allocationUnitBytes} must be a power of two and at least the stripe unit`,
    );
  if (!powerOfTwo(psegSizeBytes) || psegSizeBytes < allocationUnitBytes)
    throw new LunfsError(
      'EINVAL',
      `PSEG size ${psegSizeBytes} must be a power of two and at least the allocation unit`,
    );
}
