// The on-disk layout of a snapshot target volume (docs/on-disk-format.md, "Address space"): its
// geometry and how it is planned from the pool's size, the 4 KiB header that records it (magic,
// version, checksum, owner LUN), the place of the target's own MetadataStore in it, and the
// target as that store's one drive.
//
//   [0, 4 KiB)             target header
//   [unit, dataStartBytes) a MetadataStore: two checkpoint slots and a journal (one copy: the
//                          RAID under the target is its redundancy)
//   [dataStartBytes, ...)  data slots of chunkBytes each; slot k at dataStart + k * chunkBytes

import type { BlockDevice } from '../block/block-device.js';
import {
  checkSeal,
  formatVersion,
  hasMagic,
  isReadableFormatVersion,
  seal,
  writeMagic,
} from '../meta/checksum.js';
import type { QuorumLayout } from '../meta/metadata-store.js';
import type { LunRecord } from '../meta/pool-metadata.js';
import type { ThinVolume } from '../map/thin-volume.js';
import { maxSnapshotsPerLun } from '../util/constants.js';
import { LunfsError } from '../util/errors.js';
import { alignUp, MiB } from '../util/sizes.js';

export const targetHeaderBytes = 4096;
/** The journal holds at most this much; small pools get a smaller one (1/64 of the pool). */
export const targetJournalBytesMax = 8 * MiB;
const targetMagic = 'LUNFSTGT';

export interface TargetGeometry {
  chunkBytes: number;
  quorumOffsetBytes: number;
  checkpointSlotBytes: number;
  journalBytes: number;
  dataStartBytes: number;
}

/** The geometry for a pool of poolCapacityBytes, and the target's virtual size. */
export function planTarget(
  chunkBytes: number,
  unitBytes: number,
  poolCapacityBytes: number,
): { geometry: TargetGeometry; sizeBytes: number } {
  const chunks = Math.ceil(poolCapacityBytes / chunkBytes);
  const checkpointSlotBytes = alignUp(
    MiB + maxSnapshotsPerLun * (Math.ceil(chunks / 8) + chunks * 8 + 64),
    unitBytes,
  );
  const quorumOffsetBytes = unitBytes;
  const journalBytes = alignUp(
    Math.min(targetJournalBytesMax, Math.max(256 * 1024, Math.floor(poolCapacityBytes / 64))),
    unitBytes,
  );
  const dataStartBytes = alignUp(
    quorumOffsetBytes + 2 * checkpointSlotBytes + journalBytes,
    unitBytes,
  );
  // Room for twice the pool: a target can never hold more than the pool, and slots are reused
  // lowest first, so the used part of the range stays compact.
  const sizeBytes = dataStartBytes + alignUp(2 * poolCapacityBytes, unitBytes);
  return {
    geometry: { chunkBytes, quorumOffsetBytes, checkpointSlotBytes, journalBytes, dataStartBytes },
    sizeBytes,
  };
}

/** The header that records the geometry and the owner LUN, sealed with its checksum. */
export function encodeHeader(geometry: TargetGeometry, ownerLunId: number): Buffer {
  const header = Buffer.alloc(targetHeaderBytes);
  writeMagic(header, targetMagic);
  header.writeUInt32LE(formatVersion, 8);
  header.writeUInt32LE(ownerLunId, 16);
  header.writeUInt32LE(geometry.chunkBytes, 20);
  header.writeBigUInt64LE(BigInt(geometry.quorumOffsetBytes), 24);
  header.writeBigUInt64LE(BigInt(geometry.checkpointSlotBytes), 32);
  header.writeBigUInt64LE(BigInt(geometry.journalBytes), 40);
  header.writeBigUInt64LE(BigInt(geometry.dataStartBytes), 48);
  seal(header, 12);
  return header;
}

/** The geometry a header records; ECORRUPT unless it is a sound header of ownerLunId's target. */
export function decodeHeader(header: Buffer, ownerLunId: number): TargetGeometry {
  if (!hasMagic(header, targetMagic))
    throw new LunfsError(
      'ECORRUPT',
      `snapshot target of LUN ${ownerLunId}: header has the wrong magic (damaged)`,
    );
  if (!isReadableFormatVersion(header.readUInt32LE(8)))
    throw new LunfsError(
      'ECORRUPT',
      `snapshot target of LUN ${ownerLunId}: unsupported format version ${header.readUInt32LE(8)}`,
    );
  if (!checkSeal(header, 12))
    throw new LunfsError(
      'ECORRUPT',
      `snapshot target of LUN ${ownerLunId}: header checksum mismatch (damaged)`,
    );
  if (header.readUInt32LE(16) !== ownerLunId)
    throw new LunfsError(
      'ECORRUPT',
      `snapshot target of LUN ${ownerLunId}: header names LUN ${header.readUInt32LE(16)}`,
    );
  return {
    chunkBytes: header.readUInt32LE(20),
    quorumOffsetBytes: Number(header.readBigUInt64LE(24)),
    checkpointSlotBytes: Number(header.readBigUInt64LE(32)),
    journalBytes: Number(header.readBigUInt64LE(40)),
    dataStartBytes: Number(header.readBigUInt64LE(48)),
  };
}

/** Where the target's MetadataStore lies in it. */
export function quorumLayout(geometry: TargetGeometry): QuorumLayout {
  return {
    quorumOffsetBytes: geometry.quorumOffsetBytes,
    checkpointSlotBytes: geometry.checkpointSlotBytes,
    journalBytes: geometry.journalBytes,
  };
}

/**
 * The target volume as the one "drive" of its metadata store. Space for a write is taken at once
 * (from the reservation of reserved snapshots, when there are some), so ENOSPC comes before any
 * byte is written.
 */
export function targetDevice(
  thin: ThinVolume,
  record: LunRecord,
  reservation: { use: boolean },
): BlockDevice & { path: string } {
  return {
    path: `snapshot target of LUN ${record.ownerLunId}`,
    get sizeBytes() {
      return thin.sizeBytes;
    },
    read: (offsetBytes, target) => thin.read(offsetBytes, target),
    write: (offsetBytes, data) => {
      thin.useReservation = reservation.use;
      try {
        thin.prepareWrite(offsetBytes, data.length);
      } finally {
        thin.useReservation = false;
      }
      return thin.write(offsetBytes, data);
    },
    flush: () => thin.flush(),
    discard: (offsetBytes, lengthBytes) => thin.discard(offsetBytes, lengthBytes),
  };
}
