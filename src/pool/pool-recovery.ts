// The repairs a write session starts with (Pool.startSession): damaged drive labels rewritten from
// the good one, and after an unclean shutdown, checksums lost with a torn table page taken from
// the data, then the RStores that had writes in flight made consistent (mirrors made equal, RAID-5
// parity recomputed, degraded rows replayed from the row log). Invariants: the clean-shutdown flag
// stays false until all of it is done, so a crash during it repeats it; RAID-5 data is never
// rebuilt from a parity that is not yet recomputed; drives out of service are left alone.

import { ChecksumDrive } from '../drive/checksum-drive.js';
import type { Drive } from '../drive/drive.js';
import type { DriveHeader } from '../meta/drive-header.js';
import { writeLabels, type LabelProblem } from '../meta/drive-labels.js';
import type { PoolMetadata } from '../meta/pool-metadata.js';
import type { DriveHealth } from '../raid/drive-health.js';
import type { DegradedRowLog, RowLogEntry } from '../raid/row-log.js';
import type { RStore } from '../raid/rstore.js';
import type { Logger } from '../util/logger.js';

/** What the session's repairs need of the pool. */
export interface SessionRecoveryContext {
  readonly metadata: PoolMetadata;
  /** The drives as opened (their labels, their paths for the log). */
  readonly drives: ReadonlyArray<Drive>;
  readonly headers: ReadonlyArray<DriveHeader | undefined>;
  readonly health: DriveHealth;
  readonly log: Logger;
  /** The drive as the RStores see it (behind its checksum filter). */
  dataDrive(driveIndex: number): Drive;
  rstore(rstoreId: number): RStore;
  memberPhysicalOffset(rstore: RStore, memberIndex: number): number;
  flushDataDrives(): Promise<void>;
}

/**
 * Rewrites each damaged label of a drive in service from its good one (logged, counted in
 * integrity.labelRepairs).
 */
export async function repairLabels(
  context: SessionRecoveryContext,
  labelDamage: LabelProblem[][],
): Promise<void> {
  for (const [driveIndex, damaged] of labelDamage.entries()) {
    if (damaged.length === 0 || context.health.state(driveIndex) === 'failed') continue;
    try {
      await writeLabels(
        context.drives[driveIndex]!,
        context.headers[driveIndex]!,
        damaged.map((problem) => problem.position),
      );
    } catch (error) {
      context.health.fail(driveIndex, error);
      continue;
    }
    context.health.integrity.labelRepairs += damaged.length;
    context.log.warn(
      { driveIndex, drive: context.drives[driveIndex]!.path, repaired: damaged },
      'drive label rewritten from the good one',
    );
  }
}

/**
 * After an unclean shutdown: checksum entries lost with a damaged table page
 * (src/drive/checksum-table.ts) are taken from the data as it is, since a page torn by the power
 * cut is the likely cause, and where the pool runs degraded or has no redundancy nothing could
 * rebuild the blocks. (After a clean shutdown a damaged page is damage: its blocks are rebuilt
 * from redundancy when read, and read EIO where there is none.)
 */
export async function recomputeLostChecksums(context: SessionRecoveryContext): Promise<void> {
  for (const driveIndex of context.drives.keys()) {
    const drive = context.dataDrive(driveIndex);
    if (!(drive instanceof ChecksumDrive) || !context.health.writable(driveIndex)) continue;
    const count = await drive.recomputeLost();
    if (count > 0)
      context.log.warn(
        { driveIndex, drive: context.drives[driveIndex]!.path, blocks: count },
        'checksums lost with a damaged table page after an unclean shutdown: taken from the data as it is',
      );
  }
}

/**
 * After a crash, in the RStores whose write intent was set (no other RStore had a write in
 * flight): a block and its checksum may disagree where a write was torn, the mirrors of a RAID-1
 * unit may differ, and a RAID-5 row's parity may not be the XOR of its data. RAID-0/1 RStores
 * are scrubbed with trustData (RStore.scrub): a mirror whose block fails its checksum is
 * rewritten from one that verifies (so a bit flip at rest is repaired, not taken for data);
 * where none verifies, the data is taken as it is; mirrors are made equal. RAID-5 RStores take
 * every member's data as it is (checksums recomputed) and recompute parity. The clean-shutdown flag
 * stays false until this
 * is done, so a crash during it repeats it.
 */
export async function resyncMirrors(
  context: SessionRecoveryContext,
  rowLog: DegradedRowLog | undefined,
  rowLogReplay: RowLogEntry[],
): Promise<void> {
  const logged = new Set(rowLogReplay.map((entry) => entry.rstoreId));
  const dirty = [...context.metadata.rstores.values()]
    .filter((record) => record.dirty || logged.has(record.id))
    .map((record) => context.rstore(record.id));
  if (dirty.length === 0) return;
  context.log.warn(
    { rstores: dirty.length },
    'resynchronising the RStores that had writes in flight',
  );
  for (const rstore of dirty) {
    if (rstore.degraded)
      context.log.error(
        { rstore: rstore.record.id },
        'RStore had writes in flight while a member was out of service: its rows are made consistent from the degraded-row log',
      );
    if (rstore.record.raidLevel !== 5) {
      await rstore.scrub(() => {}, { trustData: true });
      continue;
    }
    await resyncRaid5(context, rstore, rowLog, rowLogReplay);
  }
  await context.flushDataDrives();
}

/**
 * One RAID-5 RStore of resyncMirrors: data taken as it is, the row log replayed, parity recomputed.
 */
async function resyncRaid5(
  context: SessionRecoveryContext,
  rstore: RStore,
  rowLog: DegradedRowLog | undefined,
  rowLogReplay: RowLogEntry[],
): Promise<void> {
  // RAID-5: never rebuild data from parity here. With parity held back per row (the stripe
  // cache), a crash can leave one member's block new and the parity old; a block of another
  // member rebuilt from those two would hold bytes never written. Every member's data is
  // taken as it is (each sector holds a value written to it), then parity recomputed.
  for (const [memberIndex, member] of rstore.record.members.entries()) {
    if (!context.health.writable(member.driveIndex)) continue;
    const drive = context.dataDrive(member.driveIndex);
    if (drive instanceof ChecksumDrive)
      await drive.recompute(context.memberPhysicalOffset(rstore, memberIndex), rstore.memberBytes);
  }
  // Rows written with a member out of service: their parity cannot be recomputed from the
  // data (the member is gone), but the row log says what the member held (src/raid/row-log.ts).
  let replayed = 0;
  for (const entry of rowLogReplay)
    if (entry.rstoreId === rstore.record.id && (await rstore.replayRowLog(entry))) replayed += 1;
  if (replayed > 0) {
    rowLog!.noteReplayed(replayed);
    context.log.warn(
      { rstore: rstore.record.id, records: replayed },
      'degraded rows made consistent from the row log',
    );
  }
  await rstore.resyncParity();
}
