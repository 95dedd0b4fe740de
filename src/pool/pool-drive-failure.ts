// Drives out of service, at open: the drives found missing are failed (their metadata copies
// dropped), the open is refused when a RAID-5 RStore was dirty and a drive it used is newly
// missing (unless forced), or when some RStore or redundancy set lost more drives than its level
// covers; RAID-0 drives that came back (drive-return.ts) are taken back into service. Invariant:
// a drive whose data may be stale is never read as current without the caller's --force-degraded,
// and then the loss is logged with the LUNs it touches.

import { ChecksumDrive } from '../drive/checksum-drive.js';
import type { Drive } from '../drive/drive.js';
import { isMissingDrive } from '../drive/missing-drive.js';
import { driveStateOf, type MetadataOp, type PoolMetadata } from '../meta/pool-metadata.js';
import type { DriveHealth } from '../raid/drive-health.js';
import type { RStore } from '../raid/rstore.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { lunsOnRStores, type DriveReturn } from './drive-return.js';
import type { PoolOpenOptions } from './pool-open.js';

/** What the open-time drive checks need of the pool. */
export interface DriveFailureContext {
  readonly metadata: PoolMetadata;
  /** The drives as opened (MissingDrive stand-ins included). */
  readonly drives: ReadonlyArray<Drive>;
  readonly health: DriveHealth;
  readonly log: Logger;
  /** The drive as the RStores see it (behind its checksum filter). */
  dataDrive(driveIndex: number): Drive;
  rstore(rstoreId: number): RStore;
  memberPhysicalOffset(rstore: RStore, memberIndex: number): number;
  queue(op: MetadataOp): void;
}

/**
 * Drives absent at open (or present but failed before) are out of service; their metadata
 * copies too (dropCopy). Returns the drives whose absence was not recorded before (found missing
 * now).
 */
export function markMissingDrives(
  context: DriveFailureContext,
  dropCopy: (driveIndex: number) => void,
): number[] {
  const newlyMissing: number[] = [];
  context.drives.forEach((drive, index) => {
    const record = context.metadata.drives[index]!;
    if (isMissingDrive(drive)) {
      drive.sizeBytes = record.sizeBytes;
      if (driveStateOf(record) !== 'failed') {
        newlyMissing.push(index);
        context.health.fail(
          index,
          new Error(
            `${drive.cause === 'unusable' ? 'unusable' : 'missing'} when the pool was opened: ${drive.reason}`,
          ),
          { absent: drive.cause === 'absent' },
        );
      }
    }
    if (driveStateOf(record) === 'failed') dropCopy(index);
  });
  return newlyMissing;
}

/**
 * The case neither the write intent nor the degraded-row log covers (md refuses it too: a dirty
 * degraded array): a RAID-5 RStore had writes in flight when the power went, and a drive it
 * uses was in service then but is missing now. Its rows' data and parity may disagree, and
 * without the drive they cannot be made to agree: the drive's data, rebuilt from them, could
 * be wrong. With the drive back, the rows are resynchronised as after any crash. Refused with a
 * message naming the drive, unless forceDegraded (then the risk is logged).
 */
export function refuseIfDirtyDegraded(
  context: DriveFailureContext,
  newlyMissing: number[],
  options: Pick<PoolOpenOptions, 'forceDegraded' | 'readOnly'>,
): void {
  const { metadata } = context;
  if (metadata.cleanShutdown || newlyMissing.length === 0) return;
  const atRisk = [...metadata.rstores.values()].filter(
    (record) =>
      record.raidLevel === 5 &&
      record.dirty &&
      record.members.some((member) => newlyMissing.includes(member.driveIndex)),
  );
  if (atRisk.length === 0) return;
  const drives = newlyMissing
    .map((index) => `${index} (${context.drives[index]!.path})`)
    .join(', ');
  const luns = lunsOnRStores(
    metadata,
    atRisk.map((record) => record.id),
  );
  const what = `the pool was not shut down cleanly while RAID-5 RStore(s) ${atRisk.map((record) => record.id).join(', ')}${luns.length > 0 ? ` (data of ${luns.join(', ')})` : ''} had writes in flight, and drive(s) ${drives}, in service then, are missing now: without them the parity of those writes cannot be made consistent, and their data rebuilt from it could be wrong`;
  if (options.forceDegraded || options.readOnly) {
    context.log.error(
      { rstores: atRisk.map((record) => record.id), drives: newlyMissing },
      `${what}; opened anyway (--force-degraded)`,
    );
    return;
  }
  throw new LunfsError(
    'ENOENT',
    `${what}. Bring the drive(s) back and mount again, or mount with --force-degraded to accept that risk.`,
  );
}

/** EIO (ENOENT when the drives are only absent) naming what is lost: lost are the RStores with more members out of service than their RAID level covers. */
export function refuseIfDataLost(context: DriveFailureContext, lost: RStore[]): void {
  const { metadata, health, drives } = context;
  // RAID-0 has no redundancy at all: a drive out means part of the address space is gone, and no
  // new RStore could be made either, so the pool is refused even before any data lies there.
  // Likewise a redundancy set with more drives out than its level covers.
  if (lost.length === 0 && !setBeyondRedundancy(metadata, health)) return;
  const failed = health
    .failedDrives()
    .map(
      (index) =>
        `${index} (${drives[index]!.path}: ${metadata.drives[index]!.failedReason ?? 'failed'})`,
    );
  const luns = lunsOnRStores(
    metadata,
    lost.map((rstore) => rstore.record.id),
  );
  // Drives that are simply not there are the caller's to bring back (ENOENT); drives that failed in service are EIO.
  const code = health.failedDrives().every((index) => isMissingDrive(drives[index]!))
    ? 'ENOENT'
    : 'EIO';
  throw new LunfsError(
    code,
    `the pool cannot be served: RAID-${metadata.config.raidLevel} cannot do without drive(s) ${failed.join(', ')}; ${lost.length} RStore(s) lost members beyond their redundancy${luns.length > 0 ? `, holding data of ${luns.join(', ')}` : ''}. Bring the drive back and mount again.`,
  );
}

/**
 * Whether some redundancy set has more drives out of service than its level covers (RAID-0:
 * one, RAID-5: two): no new RStore can be made there, whether or not data lies there yet.
 */
export function setBeyondRedundancy(metadata: PoolMetadata, health: DriveHealth): boolean {
  const tolerated =
    metadata.config.raidLevel === 0
      ? 0
      : metadata.config.raidLevel === 5
        ? 1
        : Number.MAX_SAFE_INTEGER;
  return metadata.rss.some(
    (rss) =>
      rss.driveIndexes.filter((index) => health.state(index) === 'failed').length > tolerated,
  );
}

/** The failed drives, each as 'INDEX (PATH)', for messages. */
export function failedDriveNames(health: DriveHealth, drives: ReadonlyArray<Drive>): string {
  return health
    .failedDrives()
    .map((index) => `${index} (${drives[index]!.path})`)
    .join(', ');
}

/**
 * Puts back in service the RAID-0 drives decideReturns let return (recorded with the next
 * commit). Where writes were missed (--force-degraded), the checksums of the drive's members in
 * those RStores are recomputed: their blocks read as the drive holds them (older data where a
 * write was missed) instead of failing their checksum.
 */
export async function takeBack(
  context: DriveFailureContext,
  returning: DriveReturn[],
): Promise<void> {
  for (const { driveIndex, lossyRStoreIds } of returning) {
    context.queue({ kind: 'drive-return', driveIndex });
    const drive = context.dataDrive(driveIndex);
    for (const rstoreId of lossyRStoreIds) {
      const rstore = context.rstore(rstoreId);
      const memberIndex = rstore.memberIndexOn(driveIndex);
      if (memberIndex !== undefined && drive instanceof ChecksumDrive)
        await drive.recompute(
          context.memberPhysicalOffset(rstore, memberIndex),
          rstore.memberBytes,
        );
    }
    const path = context.drives[driveIndex]!.path;
    if (lossyRStoreIds.length > 0) {
      const luns = lunsOnRStores(context.metadata, lossyRStoreIds);
      context.log.error(
        { driveIndex, drive: path, rstores: lossyRStoreIds, luns },
        `drive ${driveIndex} taken back into service with --force-degraded: writes it missed are lost; LUNs affected: ${luns.join(', ') || 'none'}`,
      );
    } else {
      context.log.warn(
        { driveIndex, drive: path },
        'drive back with its own label and no missed writes: in service again',
      );
    }
  }
}
