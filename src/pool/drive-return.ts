// RAID-0 drives that come back (issue 17). RAID-0 has no redundancy to rebuild a failed drive
// from, so a drive recorded failed that is present again with its own label (same drive UUID) is
// the only copy of its data. Whether it may return to service is decided here, at open, from what
// the metadata recorded when it left: absent (its file went away) or an I/O error, and the RStores
// whose writes it missed (drive-missed-writes). takeBack (pool-drive-failure.ts) then puts it back.

import type { Drive } from '../drive/drive.js';
import type { DriveHeader } from '../meta/drive-header.js';
import { applyMetadataOp, driveStateOf, type PoolMetadata } from '../meta/pool-metadata.js';
import { LunfsError } from '../util/errors.js';
import type { PoolOpenOptions } from './pool-open.js';

/** Names of the user LUNs (and LUN@snapshots' owners) with data in these RStores. */
export function lunsOnRStores(metadata: PoolMetadata, rstoreIds: number[]): string[] {
  const ids = new Set(rstoreIds);
  const names = new Set<string>();
  for (const lun of metadata.luns.values()) {
    let hit = false;
    lun.map.forEachMapped((_, entry) => {
      if (ids.has(entry.rstoreId)) hit = true;
    });
    if (!hit) continue;
    const owner = lun.role === 'target' ? metadata.luns.get(lun.ownerLunId!) : lun;
    if (owner) names.add(lun.role === 'target' ? `${owner.name} (snapshots)` : owner.name);
  }
  return [...names].sort();
}

export interface DriveReturn {
  driveIndex: number;
  /** RStores whose blocks on the drive missed writes (taken back with --force-degraded). */
  lossyRStoreIds: number[];
}

/**
 * RAID-0 drives recorded as failed that are back, with their own label: a drive that left only
 * because it was absent and missed no write holds exactly what the pool wrote to it, and returns
 * to service (applied to metadata here). One that missed writes, or failed with an I/O error,
 * returns only with forceDegraded (the loss accepted and reported); otherwise the open is refused
 * with a message saying which LUNs are affected and how to proceed. A read-only open takes back
 * only the clean ones and refuses nothing. RAID-1/5 rebuild a failed drive instead (drive replace).
 */
export function decideReturns(
  metadata: PoolMetadata,
  drives: Drive[],
  headers: ReadonlyArray<DriveHeader | undefined>,
  options: PoolOpenOptions,
): DriveReturn[] {
  if (metadata.config.raidLevel !== 0) return [];
  const returning: DriveReturn[] = [];
  for (const [driveIndex, record] of metadata.drives.entries()) {
    const header = headers[driveIndex];
    if (
      driveStateOf(record) !== 'failed' ||
      header === undefined ||
      header.driveUuid !== record.uuid
    )
      continue;
    const missed = record.missedWriteRStores ?? [];
    const clean = record.failedAbsent === true && missed.length === 0;
    if (!clean && (options.readOnly || !options.forceDegraded)) {
      if (options.readOnly) continue;
      const path = drives[driveIndex]!.path;
      const luns = lunsOnRStores(metadata, missed);
      const why =
        missed.length > 0
          ? `writes meant for it were missed while it was out of service (RStore(s) ${missed.join(', ')}${luns.length > 0 ? `, data of LUN(s) ${luns.join(', ')}` : ''}): those blocks on it hold older data`
          : `it left service after an I/O error (${record.failedReason ?? 'failed'}), so what it holds cannot be trusted as current`;
      throw new LunfsError(
        'EIO',
        `drive ${driveIndex} (${path}) is back with its own label, but ${why}. Mount with --force-degraded to take it back into service and accept the loss of those writes${luns.length > 0 ? ` in ${luns.join(', ')}` : ''}.`,
      );
    }
    applyMetadataOp(metadata, { kind: 'drive-return', driveIndex });
    returning.push({ driveIndex, lossyRStoreIds: clean ? [] : missed });
  }
  return returning;
}
