// Drive work on an open pool: replacing a failed drive (its label and an all-zero checksum table
// written before the replacement is committed as 'rebuilding'), rebuilding it from redundancy
// RStore by RStore, scrubbing every RStore, and keeping the metadata copies on drives in service.
// Invariants: only a failed drive of a RAID-1/5 pool whose RStores all keep their data is
// replaced; a rebuilt drive is marked online only after its data is flushed; rebuild and scrub
// stop at the next RStore once the pool is stopping (both start again from the top).

import { ChecksumDrive, checksumGeometryOf } from '../drive/checksum-drive.js';
import type { Drive } from '../drive/drive.js';
import { driveHeaderBytes, labelCountOf, type DriveHeader } from '../meta/drive-header.js';
import { writeLabels } from '../meta/drive-labels.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import type { MetadataOp, PoolMetadata, RStoreRecord } from '../meta/pool-metadata.js';
import type { DriveHealth } from '../raid/drive-health.js';
import type { DegradedRowLog } from '../raid/row-log.js';
import type { DriveGeometry } from '../raid/member-io.js';
import type { RStore } from '../raid/rstore.js';
import { assert } from '../util/assert.js';
import type { Clock } from '../util/clock.js';
import { maxQuorumCopies } from '../util/constants.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { psegCountFor } from './pool-layout.js';

/** What a scrub found and repaired. */
export interface ScrubReport {
  rstores: number;
  /** Rows (RAID-5) or stripe units (RAID-0/1) read and checked. */
  rows: number;
  /** Rows left unchecked because a member is out of service. */
  degradedRows: number;
  checksumRepairs: number;
  /** RAID-5 parities, or RAID-1 mirrors, found inconsistent and rewritten. */
  parityRepairs: number;
  /** Places no redundancy could repair (reads there fail with EIO). */
  unrepairable: number;
}

/** What drive replacement, rebuild and scrub need of the pool. */
export interface DriveWorkContext {
  readonly metadata: PoolMetadata;
  /** The drives as opened; a replacement takes its place here, in headers and in geometry. */
  readonly drives: Drive[];
  readonly headers: Array<DriveHeader | undefined>;
  readonly geometry: DriveGeometry[];
  readonly health: DriveHealth;
  readonly clock: Clock;
  readonly log: Logger;
  /** A header of a present drive: every drive of a pool has the same layout. */
  layoutHeader(): DriveHeader;
  rstore(rstoreId: number): RStore;
  lostRStores(): RStore[];
  commitOp(op: MetadataOp): Promise<void>;
  commit(): Promise<void>;
  flushDataDrives(): Promise<void>;
  /** Whether rebuilds and scrubs are asked to stop (close, unmount). */
  stopping(): boolean;
}

/** Where the metadata copies and the degraded-row log's copies live. */
export interface MetadataCopies {
  store: MetadataStore;
  rowLog: DegradedRowLog | undefined;
}

/**
 * Keeps as many metadata copies as the pool had (up to three, one per drive in service): when a
 * drive holding one failed, the lowest online drive without one gets a fresh copy and its header
 * says so. Any one good copy suffices to open the pool.
 */
export async function ensureMetadataCopies(
  context: DriveWorkContext,
  copies: MetadataCopies,
): Promise<void> {
  const online = context.metadata.drives
    .map((_, index) => index)
    .filter((index) => context.health.state(index) === 'online');
  const wanted = Math.min(maxQuorumCopies, online.length);
  for (const driveIndex of online) {
    const holding = copies.store.copyDriveIndexes.filter(
      (index) => context.health.state(index) === 'online',
    );
    if (holding.length >= wanted) return;
    if (holding.includes(driveIndex)) continue;
    await copies.store.addCopy({ drive: context.drives[driveIndex]!, driveIndex });
    await copies.rowLog?.addCopy({ drive: context.drives[driveIndex]!, driveIndex });
    await rewriteHeader(context, driveIndex, { holdsQuorumCopy: true });
    context.log.warn(
      { driveIndex, drive: context.drives[driveIndex]!.path },
      'metadata copy placed on drive',
    );
  }
}

async function rewriteHeader(
  context: DriveWorkContext,
  driveIndex: number,
  change: Partial<DriveHeader>,
): Promise<void> {
  const header = { ...context.headers[driveIndex]!, ...change };
  await writeLabels(context.drives[driveIndex]!, header);
  context.headers[driveIndex] = header;
}

/**
 * Puts newDrive in the place of failed drive driveIndex (checked by the caller): writes its
 * header, clears its checksum table, and commits it as 'rebuilding'.
 */
export async function installReplacement(
  context: DriveWorkContext,
  driveIndex: number,
  newDrive: Drive,
  driveUuid: string,
): Promise<void> {
  const record = context.metadata.drives[driveIndex]!;
  const layout = context.layoutHeader();
  const psegCount = psegCountFor(
    newDrive.sizeBytes,
    layout,
    layout.psegSizeBytes,
    labelCountOf(layout) >= 2,
  );
  if (psegCount < record.psegCount) {
    throw new LunfsError(
      'EINVAL',
      `drive ${newDrive.path} (${newDrive.sizeBytes} bytes) is too small to replace drive ${driveIndex}: it needs at least ${layout.psegAreaOffsetBytes + record.psegCount * layout.psegSizeBytes + (labelCountOf(layout) >= 2 ? driveHeaderBytes : 0)} bytes`,
    );
  }
  const header: DriveHeader = {
    ...layout,
    driveUuid,
    driveIndex,
    driveSizeBytes: newDrive.sizeBytes,
    psegCount: record.psegCount,
    holdsQuorumCopy: false,
    createdAtMs: context.clock.nowMs(),
  };
  const geometry = checksumGeometryOf(header);
  // an all-zero table: no checksum known yet
  await newDrive.discard(geometry.tableOffsetBytes, geometry.tableBytes);
  await writeLabels(newDrive, header);
  const old = context.drives[driveIndex]!;
  context.drives[driveIndex] = newDrive;
  context.headers[driveIndex] = header;
  context.geometry[driveIndex]!.drive = new ChecksumDrive(newDrive, geometry);
  await context.commitOp({
    kind: 'drive-replace',
    driveIndex,
    uuid: driveUuid,
    sizeBytes: newDrive.sizeBytes,
    psegCount: record.psegCount,
  });
  await old.close().catch(() => {});
  context.log.warn(
    { driveIndex, drive: newDrive.path, replaced: old.path },
    'drive replaced; rebuild starts',
  );
}

/** Refuses a replacement of driveIndex unless it failed and the rest of the pool can rebuild it. */
export function checkReplaceable(context: DriveWorkContext, driveIndex: number): void {
  const record = context.metadata.drives[driveIndex];
  if (!record)
    throw new LunfsError(
      'ENOENT',
      `the pool has no drive ${driveIndex} (it has ${context.metadata.drives.length})`,
    );
  const state = context.health.state(driveIndex);
  if (state === 'online')
    throw new LunfsError(
      'EINVAL',
      `drive ${driveIndex} (${context.drives[driveIndex]!.path}) is in service; only a failed drive can be replaced`,
    );
  if (state === 'rebuilding')
    throw new LunfsError('EBUSY', `drive ${driveIndex} is being rebuilt already`);
  if (context.metadata.config.raidLevel === 0)
    throw new LunfsError('EINVAL', 'a RAID-0 pool has no redundancy to rebuild a drive from');
  const lost = context.lostRStores();
  if (lost.length > 0)
    throw new LunfsError(
      'EIO',
      `cannot rebuild: ${lost.length} RStore(s) have lost more members than their redundancy covers`,
    );
}

/** Bytes a rebuild of driveIndex writes: one PSEG per RStore with a member there. */
export function rebuildBytes(metadata: PoolMetadata, driveIndex: number): number {
  let count = 0;
  for (const record of metadata.rstores.values())
    if (record.members.some((member) => member.driveIndex === driveIndex)) count += 1;
  return count * metadata.config.psegSizeBytes;
}

/**
 * Rebuilds a replacement drive from redundancy, RStore by RStore, while I/O goes on; then makes
 * it durable, marks the drive online and restores the metadata copies.
 */
export async function rebuildDrive(
  context: DriveWorkContext,
  copies: MetadataCopies,
  driveIndex: number,
  progress: (bytes: number) => void | Promise<void>,
): Promise<void> {
  assert(
    context.health.state(driveIndex) === 'rebuilding',
    `rebuild of drive ${driveIndex}, which is not being replaced`,
  );
  // RStores made while the rebuild runs have a member on the drive too, and until the drive is
  // online their writes leave that member alone where it is not rebuilt (a parity or data unit
  // there is derived from the others): they are rebuilt as well, until none is left. Marking the
  // drive online follows the last check with no await between, so no RStore is made in the gap.
  const rebuilt = new Set<number>();
  const notRebuilt = (): RStoreRecord[] =>
    [...context.metadata.rstores.values()].filter(
      (record) =>
        !rebuilt.has(record.id) &&
        context.rstore(record.id).memberIndexOn(driveIndex) !== undefined,
    );
  try {
    for (;;) {
      for (let pending = notRebuilt(); pending.length > 0; pending = notRebuilt()) {
        for (const record of pending) {
          if (context.stopping())
            throw new LunfsError(
              'EBUSY',
              `rebuild of drive ${driveIndex} interrupted by the shutdown; it starts again at the next mount`,
            );
          const rstore = context.rstore(record.id);
          await rstore.rebuildMember(rstore.memberIndexOn(driveIndex)!, progress);
          rebuilt.add(record.id);
        }
      }
      await context.flushDataDrives();
      if (notRebuilt().length === 0) break;
    }
    await context.commitOp({ kind: 'drive-rebuilt', driveIndex });
  } finally {
    context.health.clearRebuilt();
  }
  context.log.warn(
    { driveIndex, drive: context.drives[driveIndex]!.path },
    'drive rebuilt: in service',
  );
  await ensureMetadataCopies(context, copies);
}

/** Reads every RStore member, verifies checksums, parity and mirrors, repairs what it can. */
export async function scrub(
  context: DriveWorkContext,
  progress: (bytes: number) => void | Promise<void>,
): Promise<ScrubReport> {
  const report: ScrubReport = {
    rstores: 0,
    rows: 0,
    degradedRows: 0,
    checksumRepairs: 0,
    parityRepairs: 0,
    unrepairable: 0,
  };
  for (const record of [...context.metadata.rstores.values()]) {
    if (context.stopping()) throw new LunfsError('EBUSY', 'scrub interrupted by the shutdown');
    const found = await context.rstore(record.id).scrub(progress);
    report.rstores += 1;
    report.rows += found.rows;
    report.degradedRows += found.degradedRows;
    report.checksumRepairs += found.checksumRepairs;
    report.parityRepairs += found.parityRepairs;
    report.unrepairable += found.unrepairable;
  }
  await context.commit();
  return report;
}

/** Bytes a scrub reads: every member of every RStore. */
export function scrubBytes(metadata: PoolMetadata): number {
  let members = 0;
  for (const record of metadata.rstores.values()) members += record.members.length;
  return members * metadata.config.psegSizeBytes;
}
