// The commit of a pool: the one place where metadata becomes durable. Metadata ops are queued as
// they are applied in memory; a commit flushes every data drive in service (RAID-5 parities held
// in memory written to their members first), then appends the queued ops to the metadata store,
// then runs their afterCommit hooks. Invariants: an op is durable only after the data it refers
// to (the flush comes first); a failed commit keeps its ops queued, ahead of newer ones, for the
// next commit; commits run one at a time.

import type { Drive } from '../drive/drive.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import { applyMetadataOp, type MetadataOp, type PoolMetadata } from '../meta/pool-metadata.js';
import type { DriveHealth } from '../raid/drive-health.js';
import type { DegradedRowLog } from '../raid/row-log.js';
import type { RStore } from '../raid/rstore.js';
import type { WriteIntent } from '../raid/write-intent.js';
import { LunfsError } from '../util/errors.js';
import { Mutex } from '../util/mutex.js';

/** What the commit needs of the pool. */
export interface CommitContext {
  readonly metadata: PoolMetadata;
  readonly store: MetadataStore;
  readonly health: DriveHealth;
  /** The RStores' write intent; undefined on a read-only pool. */
  readonly intent: WriteIntent | undefined;
  /** The degraded-row log (undefined on a read-only pool, and until open has read it). */
  rowLog(): DegradedRowLog | undefined;
  /** The drive as the RStores see it (behind its checksum filter). */
  dataDrive(driveIndex: number): Drive;
  /** The RStores made so far (those that may hold a parity in memory). */
  openRStores(): Iterable<RStore>;
  lostRStores(): RStore[];
  /** Runs as a commit starts, before it takes the queued ops (it may queue more). */
  beforeCommit?(): void;
}

export class PoolCommit {
  private pending: Array<{ op: MetadataOp; afterCommit?: () => void }> = [];
  private readonly mutex = new Mutex();

  constructor(private readonly pool: CommitContext) {}

  queue(op: MetadataOp, afterCommit?: () => void): void {
    this.pending.push({ op, afterCommit });
  }

  /**
   * Flushes every data drive, then makes the queued metadata durable, then runs afterCommit hooks.
   */
  commit(): Promise<void> {
    return this.mutex.run(async () => {
      // RStores idle since before this commit's flush are consistent on the drives once it is done.
      const idle = this.pool.intent?.takeIdle();
      if (idle && idle.rstoreIds.length > 0) {
        const op: MetadataOp = { kind: 'rstore-intent', rstoreIds: idle.rstoreIds, dirty: false };
        applyMetadataOp(this.pool.metadata, op);
        this.pending.push({ op });
      }
      this.pool.beforeCommit?.();
      const batch = this.pending;
      this.pending = [];
      try {
        await this.flushDataDrives();
        await this.pool.store.commit(batch.map((entry) => entry.op));
      } catch (error) {
        this.pending = batch.concat(this.pending); // not durable: try again at the next commit
        idle?.done(false);
        throw error;
      }
      idle?.done(true);
      for (const entry of batch) entry.afterCommit?.();
    });
  }

  /**
   * Flushes every drive in service (data, then checksum tables). A drive whose flush fails leaves
   * service; that is an error for the caller only when some RStore lost data with it.
   */
  async flushDataDrives(): Promise<void> {
    // Row log records whose writes are over now are obsolete once this flush is done.
    const rowLog = this.pool.rowLog();
    const clearable = rowLog?.clearableSeq();
    await this.flushDataDrivesOnly();
    if (clearable !== undefined) await rowLog!.clearThrough(clearable);
  }

  private async flushDataDrivesOnly(): Promise<void> {
    // RAID-5 parities held in memory go to their members first: after the flush every row on the
    // drives is consistent.
    await Promise.all([...this.pool.openRStores()].map((rstore) => rstore.writeBackParity()));
    const indexes = this.pool.metadata.drives
      .map((_, index) => index)
      .filter((index) => this.pool.health.writable(index));
    const results = await Promise.allSettled(
      indexes.map((index) => this.pool.dataDrive(index).flush()),
    );
    results.forEach((result, position) => {
      if (result.status === 'rejected') this.pool.health.fail(indexes[position]!, result.reason);
    });
    if (
      results.some((result) => result.status === 'rejected') &&
      this.pool.lostRStores().length > 0
    ) {
      const reason = (
        results.find((result) => result.status === 'rejected') as PromiseRejectedResult
      ).reason as Error;
      throw new LunfsError(
        'EIO',
        `flush failed and the pool has no redundancy left for it: ${reason.message}`,
        { cause: reason },
      );
    }
  }
}
