// The one place that knows the order of the layers. A LUN's stack, top to bottom:
//   WriteBackCache -> DestagePipeline -> ThinVolume (L2MAP/LMAP) -> RStore (RAID) -> Drive
// The pipeline and the cache share the LUN's SnapshotSet (epochs, chunk locks, target volume);
// a snapshot is served by a SnapshotVolume over the same stack.
// The pool supplies the RStores and drives; everything above is built here.

import { CacheBudget } from '../cache/cache-budget.js';
import { WriteBackCache } from '../cache/write-back-cache.js';
import { DestagePipeline } from '../destage/destage-pipeline.js';
import { ThinVolume } from '../map/thin-volume.js';
import { driveStateOf, type LunRecord } from '../meta/pool-metadata.js';
import type { Clock } from '../util/clock.js';
import { layerLogger } from '../util/logger.js';
import type { SnapshotSet } from '../snapshot/snapshot-set.js';
import { SnapPointTracker } from '../snapshot/snap-point-tracker.js';
import type { Pool } from '../pool/pool.js';
import { cachePageBytes } from '../util/constants.js';

export interface LunStack {
  record: LunRecord;
  thin: ThinVolume;
  pipeline: DestagePipeline;
  cache: WriteBackCache;
  snapshots: SnapshotSet;
}

export interface CacheSettings {
  budget: CacheBudget;
  clock: Clock;
  /** Dirty data older than this is destaged even when the cache is not under pressure. */
  expireMs?: number;
  /**
   * Whole-page writes go straight to the drives (see WriteBackCache's writeThrough). Default:
   * when every drive of the pool is served inline (memory, where the cache copy is the cost).
   */
  writeThrough?: boolean;
}

/**
 * A change's range widened to whole allocation units at its ends where the unit lies on a degraded
 * RAID-5 RStore (SnapPointTracker's widen): a copier reading a neighbour of the change in the same
 * row rebuilds it from members that change.
 */
function widenDegraded(
  pool: Pool,
  record: LunRecord,
  offsetBytes: number,
  lengthBytes: number,
): [number, number] {
  const metadata = pool.metadata;
  if (metadata.config.raidLevel !== 5) return [offsetBytes, lengthBytes];
  const unitBytes = pool.allocationUnitBytes;
  const degraded = (unitIndex: number): boolean => {
    const entry = record.map.get(unitIndex);
    const rstore = entry && metadata.rstores.get(entry.rstoreId);
    return (
      rstore?.members.some(
        (member) => driveStateOf(metadata.drives[member.driveIndex]!) !== 'online',
      ) === true
    );
  };
  let start = offsetBytes;
  let end = offsetBytes + lengthBytes;
  if (degraded(Math.floor(start / unitBytes))) start = Math.floor(start / unitBytes) * unitBytes;
  if (degraded(Math.floor((end - 1) / unitBytes)))
    end = Math.min(record.sizeBytes, Math.ceil(end / unitBytes) * unitBytes);
  return [start, end - start];
}

export function makeCacheBudget(capacityBytes: number): CacheBudget {
  const budget = new CacheBudget(capacityBytes, cachePageBytes);
  budget.pageBuffers.reserve(Math.ceil(capacityBytes / cachePageBytes));
  return budget;
}

export function assembleLunStack(
  pool: Pool,
  record: LunRecord,
  settings: CacheSettings,
  snapshots: SnapshotSet,
  /** The LUN's thin volume (a snapclone's CloneVolume); default a plain ThinVolume. */
  thin: ThinVolume = new ThinVolume(pool, record),
): LunStack {
  const pipeline = new DestagePipeline(
    thin,
    snapshots,
    new SnapPointTracker(pool, record, (offset, length) =>
      widenDegraded(pool, record, offset, length),
    ),
  );
  const capacity = settings.budget.capacityBytes;
  const writeThrough =
    settings.writeThrough ??
    pool.drives.every((drive) => (drive as { inline?: boolean }).inline === true);
  const cache = new WriteBackCache(pipeline, {
    budget: settings.budget,
    pageBytes: cachePageBytes,
    dirtyLimitBytes: Math.floor(capacity / 2),
    // Background destage starts past 96 dirty pages (12 MiB) at most: that backlog is what a
    // flush, and so the taking of a snapshot, has to destage while writes go on. Fewer (32) cost
    // 4 KiB random writes over a 256 MiB region a third of their IOPS (less rewriting absorbed).
    dirtyBackgroundBytes: Math.min(Math.floor(capacity / 8), 96 * cachePageBytes),
    expireMs: settings.expireMs ?? 1000,
    // While the LUN has snapshots, a destage that preserves an original waits for its batch's
    // commit (preservation-batch.ts): more destages in flight make larger batches, and a batch's
    // commit costs the same however many preservations it records. Measured with bench/
    // snapshots.sh part a (2 rounds): 64 instead of 16 made batches of 12 instead of 4.6, the CPU
    // per preservation 295-340 us instead of 403-475, and randwrite4k 0.61-0.63x instead of
    // 0.56-0.58x of no snapshots. Without snapshots 16 stays: 64 doubled the p99 there.
    maxInflightDestages: () => (snapshots.active ? 64 : 16),
    clock: settings.clock,
    log: layerLogger('cache', { lun: record.name }),
    epoch: () => snapshots.epoch,
    writeThrough: () => writeThrough && snapshots.allowsWriteThrough,
  });
  return { record, thin, pipeline, cache, snapshots };
}
