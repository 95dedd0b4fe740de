// Format and open, up to the Pool object. Format writes each drive's labels, the first checkpoint
// of the metadata (on the drives holding a quorum copy) and an empty degraded-row log; nothing
// else is written. Open reads: which drive is which (drive-identity.ts), the metadata from its
// copies, and which RAID-0 drives may come back (drive-return.ts); a drive whose label is of this
// pool but not the drive the metadata has at its index is put aside, never read. Only the drives
// in service with this pool's label get a checksum filter. Pool.open then builds the Pool and
// decides whether it can serve.

import { ChecksumDrive, checksumGeometryOf } from '../drive/checksum-drive.js';
import type { Drive } from '../drive/drive.js';
import { isMissingDrive, MissingDrive } from '../drive/missing-drive.js';
import { formatVersion } from '../meta/checksum.js';
import { driveHeaderBytes, type DriveHeader } from '../meta/drive-header.js';
import { writeLabels, type LabelProblem } from '../meta/drive-labels.js';
import { MetadataStore, type CopyReport, type QuorumLayout } from '../meta/metadata-store.js';
import { driveStateOf, type PoolMetadata, type RaidLevel } from '../meta/pool-metadata.js';
import { DegradedRowLog } from '../raid/row-log.js';
import type { DriveGeometry } from '../raid/member-io.js';
import { makeUuid, type Clock } from '../util/clock.js';
import {
  defaultAllocationUnitBytes,
  defaultPsegSizeBytes,
  defaultRssSize,
  defaultStripeUnitBytes,
  maxQuorumCopies,
} from '../util/constants.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { identifyDrives } from './drive-identity.js';
import { decideReturns, type DriveReturn } from './drive-return.js';
import {
  checkGeometry,
  lmapEntryCount,
  planLayout,
  planRedundancySets,
  psegCountFor,
  type DriveLayout,
} from './pool-layout.js';

export interface PoolFormatOptions {
  raidLevel: RaidLevel;
  psegSizeBytes?: number;
  allocationUnitBytes?: number;
  stripeUnitBytes?: number;
  /** Drives per redundancy set (default 8): more drives form several sets. */
  rssSize?: number;
  /** Whether the drives are new sparse files (read as zeros) rather than existing storage. */
  drivesZeroed: boolean;
  clock: Clock;
  random: () => number;
  log: Logger;
}

export interface PoolOpenOptions {
  clock: Clock;
  log: Logger;
  readOnly?: boolean;
  /**
   * Start the write session (crash recovery, the not-clean checkpoint) only at the first commit,
   * so a command refused for bad input writes nothing at all. Nothing may allocate before it.
   */
  deferSession?: boolean;
  /**
   * Open even when a RAID-5 RStore had writes in flight at an unclean shutdown and a drive it
   * uses was found missing only now (refuseIfDirtyDegraded): the data of that drive in those
   * RStores may come back wrong.
   */
  forceDegraded?: boolean;
}

/** Writes labels, a first checkpoint and an empty degraded-row log on fresh drives. */
export async function formatDrives(drives: Drive[], options: PoolFormatOptions): Promise<void> {
  const psegSizeBytes = options.psegSizeBytes ?? defaultPsegSizeBytes;
  const allocationUnitBytes = options.allocationUnitBytes ?? defaultAllocationUnitBytes;
  const stripeUnitBytes = options.stripeUnitBytes ?? defaultStripeUnitBytes;
  checkGeometry(psegSizeBytes, allocationUnitBytes, stripeUnitBytes);
  const minimumDrives = options.raidLevel === 5 ? 3 : options.raidLevel === 1 ? 2 : 1;
  if (drives.length < minimumDrives)
    throw new LunfsError(
      'EINVAL',
      `RAID-${options.raidLevel} needs at least ${minimumDrives} drives, got ${drives.length}`,
    );
  const sets = planRedundancySets(drives.length, options.rssSize ?? defaultRssSize, minimumDrives);
  const layout = planLayout(
    drives.map((drive) => drive.sizeBytes),
    psegSizeBytes,
    allocationUnitBytes,
    stripeUnitBytes,
  );
  const poolUuid = makeUuid(options.random);
  const createdAtMs = options.clock.nowMs();
  const quorumCount = Math.min(maxQuorumCopies, drives.length);
  const headers = formatHeaders(drives, layout, psegSizeBytes, quorumCount, {
    poolUuid,
    createdAtMs,
    random: options.random,
  });
  const metadata: PoolMetadata = {
    config: {
      poolUuid,
      createdAtMs,
      raidLevel: options.raidLevel,
      psegSizeBytes,
      allocationUnitBytes,
      stripeUnitBytes,
      lmapEntryCount,
    },
    drives: headers.map((header) => ({
      index: header.driveIndex,
      uuid: header.driveUuid,
      sizeBytes: header.driveSizeBytes,
      psegCount: header.psegCount,
      zeroedAtCreation: options.drivesZeroed,
      rssId: sets.findIndex((set) => set.includes(header.driveIndex)),
    })),
    rss: sets.map((driveIndexes, id) => ({ id, driveIndexes })),
    rstores: new Map(),
    luns: new Map(),
    snapshots: new Map(),
    nextLunId: 1,
    nextRStoreId: 1,
    nextSnapshotId: 1,
    snapPoints: new Map(),
    nextSnapPointId: 1,
    cleanShutdown: true,
  };
  await Promise.all(drives.map((drive, index) => writeLabels(drive, headers[index]!)));
  const copies = drives.slice(0, quorumCount).map((drive, driveIndex) => ({ drive, driveIndex }));
  await MetadataStore.format(copies, quorumLayoutOf(headers[0]!), metadata, options.log);
  await DegradedRowLog.format(copies, layout.rowLogOffsetBytes, layout.rowLogBytes);
}

/** The label of each new drive: the first quorumCount drives hold a metadata copy. */
function formatHeaders(
  drives: Drive[],
  layout: DriveLayout,
  psegSizeBytes: number,
  quorumCount: number,
  pool: { poolUuid: string; createdAtMs: number; random: () => number },
): DriveHeader[] {
  return drives.map((drive, driveIndex) => {
    const psegCount = psegCountFor(drive.sizeBytes, layout, psegSizeBytes);
    if (psegCount < 1)
      throw new LunfsError(
        'EINVAL',
        `drive ${drive.path} (${drive.sizeBytes} bytes) is too small: it needs at least ${layout.psegAreaOffsetBytes + psegSizeBytes + driveHeaderBytes} bytes (the last 4 KiB hold its tail label)`,
      );
    return {
      poolUuid: pool.poolUuid,
      driveUuid: makeUuid(pool.random),
      driveIndex,
      driveCount: drives.length,
      driveSizeBytes: drive.sizeBytes,
      psegSizeBytes,
      psegCount,
      ...layout,
      holdsQuorumCopy: driveIndex < quorumCount,
      createdAtMs: pool.createdAtMs,
      formatVersion,
    };
  });
}

/** What open read from the drives, for the Pool to be built from. */
export interface LoadedPool {
  /** In drive-index order, a MissingDrive in the place of each drive not taken. */
  drives: Drive[];
  /** What the RStores use: each drive in service behind its ChecksumDrive filter. */
  geometry: DriveGeometry[];
  headers: Array<DriveHeader | undefined>;
  /** Per drive: its labels found damaged, to rewrite when the write session starts. */
  labelDamage: LabelProblem[][];
  metadata: PoolMetadata;
  store: MetadataStore;
  reports: CopyReport[];
  /** RAID-0 drives that return to service (already applied to metadata). */
  returning: DriveReturn[];
}

/**
 * Identifies the drives, then recovers the metadata from the copies present. Refuses when no
 * copy is present or the metadata is of another pool than the labels.
 */
export async function loadPool(
  givenDrives: Drive[],
  options: PoolOpenOptions,
): Promise<LoadedPool> {
  const { drives, headers, labelDamage } = await identifyDrives(givenDrives);
  const first = headers.find((header) => header !== undefined)!;
  const copies = headers.flatMap((header, index) =>
    header?.holdsQuorumCopy ? [{ drive: drives[index]!, driveIndex: index }] : [],
  );
  if (copies.length === 0)
    throw new LunfsError(
      'ECORRUPT',
      `no drive holding a metadata copy is present (missing: ${drives
        .filter(isMissingDrive)
        .map((drive) => drive.path)
        .join(', ')})`,
    );
  const { store, metadata, reports } = await MetadataStore.open(
    copies,
    quorumLayoutOf(first),
    options.log,
  );
  if (metadata.config.poolUuid !== first.poolUuid)
    throw new LunfsError(
      'ECORRUPT',
      `the pool metadata is of pool ${metadata.config.poolUuid}, but the drive labels name pool ${first.poolUuid}`,
    );
  await setAsideReplacedDrives(metadata, drives, headers, labelDamage);
  const returning = decideReturns(metadata, drives, headers, options);
  const geometry = drives.map((drive, index) => {
    const header = headers[index];
    const usable =
      header !== undefined &&
      header.driveUuid === metadata.drives[index]!.uuid &&
      driveStateOf(metadata.drives[index]!) !== 'failed';
    const dataDrive = usable ? new ChecksumDrive(drive, checksumGeometryOf(header)) : drive;
    return {
      drive: dataDrive,
      psegAreaOffsetBytes: first.psegAreaOffsetBytes,
      psegSizeBytes: first.psegSizeBytes,
    };
  });
  return { drives, geometry, headers, labelDamage, metadata, store, reports, returning };
}

/**
 * A drive with an older label of this pool (its drive uuid is not the one the metadata has at its
 * index, which is not failed) is the drive that was there before a replacement, or a copy of it:
 * a MissingDrive takes its place.
 */
async function setAsideReplacedDrives(
  metadata: PoolMetadata,
  drives: Drive[],
  headers: Array<DriveHeader | undefined>,
  labelDamage: LabelProblem[][],
): Promise<void> {
  for (const [index, record] of metadata.drives.entries()) {
    const header = headers[index];
    // failed: the drive a replacement took the place of
    if (!header || header.driveUuid === record.uuid || driveStateOf(record) === 'failed') continue;
    // An older label of this pool: the drive that was at this index before a replacement (or
    // a copy of it). Its contents are not this drive's: it is failed, never read.
    await drives[index]!.close().catch(() => undefined);
    drives[index] = new MissingDrive(
      drives[index]!.path,
      `its label names drive ${header.driveUuid}, but the pool metadata has drive ${record.uuid} at index ${index} (an older label of this pool: the drive was replaced since)`,
      0,
      'unusable',
    );
    headers[index] = undefined;
    labelDamage[index] = [];
  }
}

export function quorumLayoutOf(header: DriveHeader): QuorumLayout {
  return {
    quorumOffsetBytes: header.quorumOffsetBytes,
    checkpointSlotBytes: header.checkpointSlotBytes,
    journalBytes: header.journalBytes,
  };
}
