// Space in the pool for thin volumes and snapshots: the RSEG a volume's unit is bound to (through
// the RsegAllocator, with the room held back for reserved snapshots), and whether the metadata
// can take one more snapshot record. Invariants: a unit is never placed where it cannot be kept
// (an RStore that lost members beyond its redundancy: EIO, and no space because drives are gone
// is EIO too, never ENOSPC); a new RStore is queued for the commit with the mapping that uses it;
// a checkpoint always fits its slot.

import type { Drive } from '../drive/drive.js';
import type { MetadataOp, PoolMetadata } from '../meta/pool-metadata.js';
import type { DriveHealth } from '../raid/drive-health.js';
import type { RStore } from '../raid/rstore.js';
import { LunfsError } from '../util/errors.js';
import { failedDriveNames, setBeyondRedundancy } from './pool-drive-failure.js';
import { snapshotRecordBytes } from './pool-layout.js';
import type { RsegAllocation, RsegAllocator, RsegRef } from './rseg-allocator.js';

/** What an allocation needs of the pool. */
export interface SpaceContext {
  readonly metadata: PoolMetadata;
  readonly allocator: RsegAllocator;
  readonly health: DriveHealth;
  /** The drives as opened (their paths for messages). */
  readonly drives: ReadonlyArray<Drive>;
  rstore(rstoreId: number): RStore;
  queue(op: MetadataOp): void;
}

/**
 * An RSEG for a thin volume's unit. reservedUnits (undefined when the allocation may use the
 * reservation: a snapshot target volume) is how many units are held back for reserved snapshots.
 */
export function allocateRseg(
  context: SpaceContext,
  hint: RsegRef | undefined,
  reservedUnits: (() => number) | undefined,
): RsegAllocation {
  const { metadata, allocator } = context;
  const allocationUnitBytes = metadata.config.allocationUnitBytes;
  if (reservedUnits) {
    const reserved = reservedUnits();
    if (
      reserved > 0 &&
      allocator.freeBytes() - reserved * allocationUnitBytes < allocationUnitBytes
    ) {
      throw new LunfsError(
        'ENOSPC',
        `the pool is full: its remaining free space is reserved for snapshots (${reserved} units)`,
      );
    }
  }
  let allocation: RsegAllocation;
  try {
    allocation = allocator.allocate(hint);
  } catch (error) {
    // No space because drives are gone beyond redundancy is a failure, not a full pool: the
    // writer must see EIO, not ENOSPC (which says "delete something and try again").
    if (
      error instanceof LunfsError &&
      error.code === 'ENOSPC' &&
      setBeyondRedundancy(metadata, context.health)
    ) {
      throw new LunfsError(
        'EIO',
        `no new space can be allocated: RAID-${metadata.config.raidLevel} cannot do without failed drive(s) ${failedDriveNames(context.health, context.drives)}`,
        { cause: error },
      );
    }
    throw error;
  }
  // A free RSEG of an RStore that lost members beyond its redundancy cannot hold data: refuse
  // the write now (EIO) rather than take it into the cache and fail it at destage.
  if (!allocation.createdRStore && context.rstore(allocation.rstoreId).lost) {
    allocator.release([allocation]);
    throw new LunfsError(
      'EIO',
      `RStore ${allocation.rstoreId} has lost drive(s) ${failedDriveNames(context.health, context.drives)} beyond its redundancy: no new data can be placed there`,
    );
  }
  if (allocation.createdRStore) {
    const record = allocation.createdRStore;
    context.queue({
      kind: 'rstore-create',
      rstore: { ...record, members: record.members.map((member) => ({ ...member })) },
    });
  }
  return allocation;
}

/**
 * Whether the pool metadata has room for one more snapshot record: a checkpoint must always
 * fit its slot (estimated: map entries, RSDs, snapshot records, and 64 KiB for the rest).
 */
export function hasRoomForSnapshotRecord(
  metadata: PoolMetadata,
  checkpointSlotBytes: number,
): boolean {
  let mapped = 0;
  for (const lun of metadata.luns.values()) mapped += lun.map.mappedCount;
  const snapshotsBytes = JSON.stringify([...metadata.snapshots.values()]).length;
  const estimate =
    64 * 1024 +
    mapped * 12 +
    metadata.rstores.size * 160 +
    metadata.luns.size * 200 +
    snapshotsBytes +
    snapPointsBytes(metadata);
  return estimate + snapshotRecordBytes <= checkpointSlotBytes - 64;
}

/** Checkpoint room snap-point maps may take: a record and every bit of the LUN each. */
function snapPointsBytes(metadata: PoolMetadata): number {
  let bytes = 0;
  for (const snapPoint of metadata.snapPoints.values()) {
    const lun = metadata.luns.get(snapPoint.lunId);
    bytes += snapPointRecordBytes + Math.ceil((lun?.sizeBytes ?? 0) / snapPoint.grainBytes / 8);
  }
  return bytes;
}

const snapPointRecordBytes = 256;

/**
 * Whether the pool metadata has room for one more snap-point map of a LUN of sizeBytes, with room
 * left for one more snapshot record (the estimate of hasRoomForSnapshotRecord).
 */
export function hasRoomForSnapPoint(
  metadata: PoolMetadata,
  checkpointSlotBytes: number,
  sizeBytes: number,
  grainBytes: number,
): boolean {
  const extra = snapPointRecordBytes + Math.ceil(sizeBytes / grainBytes / 8);
  return hasRoomForSnapshotRecord(metadata, checkpointSlotBytes - extra);
}
