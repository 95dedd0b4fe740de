// Drives out of service. At open: the drives found missing are failed (their metadata copies
// dropped), the open is refused when a RAID-5 RStore was dirty and a drive it used is newly
// missing (unless forced), or when some RStore or redundancy set lost more drives than its level
// covers; RAID-0 drives that came back (drive-return.ts) are taken back into service. While the
// pool runs: a drive failure and a write a RAID-0 drive missed are recorded (in memory at once,
// durably with the next commit). Invariant: a drive whose data may be stale is never read as
// current without the caller's --force-degraded, and then the loss is logged with the LUNs it
// touches.

import { ChecksumDrive } from '../drive/checksum-drive.js';
import type { Drive } from '../drive/drive.js';
import { isMissingDrive } from '../drive/missing-drive.js';
import {
  applyMetadataOp,
  driveStateOf,
  type MetadataOp,
  type PoolMetadata,
} from '../meta/pool-metadata.js';
import type { DriveHealth } from '../raid/drive-health.js';
import type { RStore } from '../raid/rstore.js';
import { LunfsError } from '../util/errors.js';
import type { Clock } from '../util/clock.js';
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

/**
 * EIO (ENOENT when the drives are only absent) naming what is lost: lost are the RStores with more
 * members out of service than their RAID level covers.
 */
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
  // Drives that are simply not there are the caller's to bring back (ENOENT); drives that failed in
  // service are EIO.
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

/** What recording a drive failure or a missed write needs of the pool. */
export interface FailureRecordContext {
  readonly metadata: PoolMetadata;
  readonly drives: ReadonlyArray<Drive>;
  readonly clock: Clock;
  readonly log: Logger;
  /** A read-only pool records in memory only. */
  readonly readOnly: boolean;
  queue(op: MetadataOp): void;
  /** The drive as the RStores see it (behind its checksum filter). */
  dataDrive(driveIndex: number): Drive;
  /** Drops the drive's metadata copy and its copy of the degraded-row log, if it held them. */
  dropCopies(driveIndex: number): void;
  /** While Pool.open runs: drives found missing are reported once it has decided to open. */
  opening(): boolean;
  /** The pool's hooks (Pool.onDriveFailure, Pool.onMissedWrite), read at each call. */
  onDriveFailure(driveIndex: number, reason: string): void;
  onMissedWrite(driveIndex: number): void;
}

/**
 * A drive left service: recorded at once in memory (no RStore reads or writes it from now on)
 * and durably with the next commit. Its metadata copy, if it held one, is dropped.
 */
export function recordDriveFailure(
  context: FailureRecordContext,
  driveIndex: number,
  reason: string,
  absent: boolean,
): void {
  const op: MetadataOp = {
    kind: 'drive-fail',
    driveIndex,
    reason,
    atMs: context.clock.nowMs(),
    ...(absent ? { absent } : {}),
  };
  applyMetadataOp(context.metadata, op);
  context.dropCopies(driveIndex);
  if (!context.readOnly) context.queue(op);
  if (!context.opening())
    context.log.error(
      { drive: context.drives[driveIndex]!.path, driveIndex, reason },
      'drive failed: out of service',
    );
  context.onDriveFailure(driveIndex, reason);
}

/**
 * A write meant for RStore rstoreId's member on driveIndex did not reach it (RAID-0: the drive
 * is out of service, or the write failed): recorded in the drive's record and made durable with
 * the next commit, so a drive that comes back is not taken as holding current data there.
 */
export function recordMissedWrite(
  context: FailureRecordContext,
  driveIndex: number,
  rstoreId: number,
): void {
  if (context.metadata.drives[driveIndex]!.missedWriteRStores?.includes(rstoreId)) return;
  const op: MetadataOp = { kind: 'drive-missed-writes', driveIndex, rstoreIds: [rstoreId] };
  applyMetadataOp(context.metadata, op);
  if (context.readOnly) return;
  context.queue(op);
  context.log.error(
    {
      drive: context.drives[driveIndex]!.path,
      driveIndex,
      rstore: rstoreId,
      luns: lunsOnRStores(context.metadata, [rstoreId]),
    },
    "a write missed the drive: its blocks there are older than the pool's",
  );
  context.onMissedWrite(driveIndex);
}

/**
 * The last flush of a drive that just left service: writes that reached it before it left (and
 * their checksum table entries) become durable on it, so that if it comes back (a RAID-0 drive
 * file moved away and put back) it holds everything written to it. If that fails, every RStore
 * with a member there may have missed a write.
 */
export async function flushLeavingDrive(
  context: FailureRecordContext,
  driveIndex: number,
): Promise<void> {
  // Only a RAID-0 drive can come back (decideReturns); RAID-1/5 rebuild theirs from redundancy.
  if (context.metadata.config.raidLevel !== 0 || isMissingDrive(context.drives[driveIndex]!))
    return;
  try {
    await context.dataDrive(driveIndex).flush();
  } catch (error) {
    context.log.warn(
      { err: error, driveIndex },
      'the last flush of a drive that left service failed',
    );
    for (const record of context.metadata.rstores.values()) {
      if (record.members.some((member) => member.driveIndex === driveIndex))
        recordMissedWrite(context, driveIndex, record.id);
    }
  }
}
