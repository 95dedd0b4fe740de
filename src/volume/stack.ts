// The one place that knows the order of the layers. A LUN's stack, top to bottom:
//   WriteBackCache -> DestagePipeline -> ThinVolume (L2MAP/LMAP) -> RStore (RAID) -> Drive
// The pipeline and the cache share the LUN's SnapshotSet (epochs, chunk locks, target volume);
// a snapshot is served by a SnapshotVolume over the same stack.
// The pool supplies the RStores and drives; everything above is built here.

import { CacheBudget } from '../cache/cache-budget.js';
import { WriteBackCache } from '../cache/write-back-cache.js';
import { DestagePipeline } from '../destage/destage-pipeline.js';
import { ThinVolume } from '../map/thin-volume.js';
import type { LunRecord } from '../meta/pool-metadata.js';
import type { Clock } from '../util/clock.js';
import { layerLogger } from '../util/logger.js';
import type { SnapshotSet } from '../snapshot/snapshot-set.js';
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
): LunStack {
  const thin = new ThinVolume(pool, record);
  const pipeline = new DestagePipeline(thin, snapshots);
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
    maxInflightDestages: 16,
    clock: settings.clock,
    log: layerLogger('cache', { lun: record.name }),
    epoch: () => snapshots.epoch,
    writeThrough: () => writeThrough && snapshots.allowsWriteThrough,
  });
  return { record, thin, pipeline, cache, snapshots };
}
