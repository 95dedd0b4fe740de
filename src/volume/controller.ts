// The controller: one open pool and the stacks of its LUNs, with the actions the FUSE front and
// the CLI (through the control socket) both use. It is the only owner of the pool in a process.

import { isMissingDrive } from '../drive/missing-drive.js';
import { labelCountOf } from '../meta/drive-header.js';
import { kernelImplementation } from '../native/native-kernels.js';
import { sharingChainOf, type LunRecord, type SnapshotRecord } from '../meta/pool-metadata.js';
import { SnapshotSet } from '../snapshot/snapshot-set.js';
import type { TargetVolume } from '../snapshot/target-volume.js';
import { isLunfsError, LunfsError } from '../util/errors.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/logger.js';
import { checkLunName } from '../pool/pool-luns.js';
import type { Pool } from '../pool/pool.js';
import { SnapshotVolume } from './snapshot-volume.js';
import { CloneVolume } from '../map/clone-volume.js';
import { ThinVolume } from '../map/thin-volume.js';
import { zeroSlot } from '../snapshot/log-file.js';
import { assembleLunStack, makeCacheBudget, type LunStack } from './stack.js';
import { DriveService, type DriveServiceSettings } from './drive-service.js';
import type { JobStatus } from './background-jobs.js';
import type { IntegrityCounters } from '../raid/drive-health.js';
import { defaultChunkBytes } from '../util/constants.js';
import { SnapPointService, type SnapPointStatus } from './snap-points.js';
import { MigrationService } from './migration.js';

export interface SnapshotStatus {
  /** LUN@NAME, the file name under snapshots/. */
  name: string;
  lun: string;
  snapshot: string;
  sizeBytes: number;
  createdAt: string;
  state: 'valid' | 'invalid';
  invalidReason?: string;
  /** Preserved or written data only this snapshot points at. */
  exclusiveBytes: number;
  /** Preserved data this snapshot shares with other snapshots of the LUN (one copy for all). */
  sharedBytes: number;
  reserved: boolean;
  reservedBytes: number;
  epoch: number;
  /** The volume it was taken of: 'lun:NAME', or a snapshot of the same LUN, LUN@NAME. */
  source: string;
  /**
   * Seed 004's sharing chain (a snapshot is the predecessor of the volume it was taken of):
   * predecessor, the next older snapshot of the same source (LUN@NAME) or null for the oldest;
   * successor, the next newer one, or the source for the newest.
   */
  predecessor: string | null;
  successor: string;
  /** The snapshots taken of this one, oldest first (its own chain; the newest of them is this
   * one's predecessor in seed 004's sense). */
  snapshotsOf: string[];
  /** 1 for a snapshot of the LUN, 2 for a snapshot of such a snapshot, and so on. */
  depth: number;
  open: number;
}

/** Splits LUN@NAME; EINVAL for anything else. */
export function parseSnapshotName(fullName: string): { lun: string; snapshot: string } {
  const at = fullName.indexOf('@');
  if (at <= 0 || at === fullName.length - 1)
    throw new LunfsError('EINVAL', `'${fullName}' is not a snapshot name: use LUN@NAME`);
  const lun = fullName.slice(0, at);
  const snapshot = fullName.slice(at + 1);
  checkLunName(lun);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(snapshot))
    throw new LunfsError(
      'EINVAL',
      `invalid snapshot name '${snapshot}': use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  return { lun, snapshot };
}

/**
 * A snapshot to take: LUN@NAME (of the LUN), or LUN@SOURCE@NAME (of its snapshot LUN@SOURCE, the
 * form `touch control/snapshot/...` takes); EINVAL for anything else.
 */
export function parseSnapshotRequest(spec: string): {
  lun: string;
  snapshot: string;
  source?: string;
} {
  const parts = spec.split('@');
  if (parts.length === 3) {
    const source = parseSnapshotName(`${parts[0]}@${parts[1]}`);
    const made = parseSnapshotName(`${parts[0]}@${parts[2]}`);
    return { ...made, source: source.snapshot };
  }
  if (parts.length > 3)
    throw new LunfsError(
      'EINVAL',
      `'${spec}' is not a snapshot name: use LUN@NAME, or LUN@SOURCE@NAME for a snapshot of snapshot LUN@SOURCE`,
    );
  return parseSnapshotName(spec);
}

export interface StatusJson {
  pool: {
    uuid: string;
    raid: string;
    /**
     * online; degraded (a drive out of service); rebuilding (a replacement being filled); failed
     * (data lost).
     */
    state: 'online' | 'degraded' | 'rebuilding' | 'failed';
    /** LUNs with data on RStores that run without a member: one more failure there loses data. */
    atRiskLuns: string[];
    /**
     * LUNs with data on RStores that lost more members than their redundancy covers: that data is
     * gone.
     */
    lostLuns: string[];
    totalBytes: number;
    freeBytes: number;
    /** Part of freeBytes held back for reserved snapshots. */
    reservedBytes: number;
    allocatedBytes: number;
    psegSizeBytes: number;
    allocationUnitBytes: number;
    createdAt: string;
    /**
     * The on-disk format of the drive labels: 5 (a label at each end of every drive) or 4 (an older
     * pool: one label, at the start).
     */
    formatVersion: number;
  };
  /**
   * labelCopies: the labels the drive carries when whole (2, or 1 in a format-4 pool; 0 for a
   * drive not taken at open). labelsDamagedAtOpen: which were found damaged (position: reason);
   * rewritten from the good one when the write session starts (integrity.labelRepairs).
   */
  drives: Array<{
    labelCopies: number;
    labelsDamagedAtOpen?: string[];
    index: number;
    path: string;
    sizeBytes: number;
    state: 'online' | 'failed' | 'rebuilding';
    failedReason?: string;
    failedAt?: string;
    missedWriteLuns?: string[];
    io: 'inline' | 'async' | 'missing';
    psegCount: number;
    rss: number;
    holdsMetadataCopy: boolean;
    metadataCopy?: string;
  }>;
  /**
   * snapshotNames: the LUN's snapshots (LUN@NAME), snapshots of snapshots included, oldest
   * first. predecessor: the newest of those taken of the LUN itself
   * (seed 004: a snapshot is the predecessor of the volume it was taken of), null when it has
   * none. atRisk: see pool.atRiskLuns. preservations: originals copied to the snapshot target
   * since it was opened (this mount, or the LUN's first snapshot since), in how many batches, and
   * the most one batch held (issue 14).
   */
  luns: Array<{
    name: string;
    sizeBytes: number;
    allocatedBytes: number;
    createdAt: string;
    open: number;
    snapshots: number;
    snapshotNames: string[];
    predecessor: string | null;
    atRisk: boolean;
    lost: boolean;
    preservations: { count: number; batches: number; largestBatch: number };
    /** The snapshot a rollback under way copies back (the LUN is not served until it ends). */
    rollingBackTo: string | null;
    /**
     * A snapclone whose BGCOPY has not ended (served under clones/): what it was taken of, and the
     * bytes BGCOPY still has to copy (its job in jobs[] has the progress). null for other LUNs.
     */
    clone: { source: string; pendingBytes: number | null } | null;
  }>;
  /** What the data checksums found since the mount, and what was repaired from redundancy. */
  integrity: IntegrityCounters;
  /** Rebuilds and scrubs of this mount, with their progress. */
  jobs: JobStatus[];
  /** RStores whose write-intent record is set (written since they were last known consistent). */
  writeIntent: { dirtyRStores: number };
  snapshots: SnapshotStatus[];
  /** Snap-point maps (issue 16): changed-block tracking since each one's creation. */
  snapPoints: SnapPointStatus[];
  /** writtenThroughBytes: whole-page writes sent straight to memory drives since the mount. */
  cache: {
    capacityBytes: number;
    cachedBytes: number;
    dirtyBytes: number;
    writtenThroughBytes: number;
  };
  metadata: { journalFillRatio: number };
  kernels: string;
  /** Things the owner should fix, e.g. a drive file other users can read (pool-permissions.ts). */
  warnings: string[];
}

function preservationCounts(target: TargetVolume | undefined): {
  count: number;
  batches: number;
  largestBatch: number;
} {
  const counters = target?.batchCounters;
  return {
    count: counters?.preservations ?? 0,
    batches: counters?.batches ?? 0,
    largestBatch: counters?.largest ?? 0,
  };
}

export class Controller {
  private readonly stacks = new Map<string, LunStack>();
  private readonly openCounts = new Map<string, number>();
  private readonly snapshotSets = new Map<number, SnapshotSet>();
  /** LUNs (ids) whose rollback runs in this process. */
  private readonly rollingBack = new Set<number>();
  /** LUNs held by an import (not served meanwhile), with what holds them. */
  private readonly held = new Map<number, string>();
  /** Clones (LUN ids) whose BGCOPY must stop, and the BGCOPYs running (their ends). */
  private readonly stoppedClones = new Set<number>();
  private readonly bgcopies = new Map<number, Promise<void>>();
  private closing = false;
  private readonly budget;

  /** Drive failures, replacement and rebuild, scrub. */
  readonly drives: DriveService;
  /** Snap-point maps (issue 16). */
  readonly snapPoints: SnapPointService;
  /** The server's side of migrations by a copier process (issue 16). */
  readonly migrations: MigrationService = new MigrationService(this);

  constructor(
    readonly pool: Pool,
    /** writeThrough: see CacheSettings (default: decided by the drives). */
    private readonly settings: {
      cacheBytes: number;
      clock: Clock;
      log: Logger;
      writeThrough?: boolean;
      random?: () => number;
      driveSettings?: Partial<DriveServiceSettings>;
      warnings?: (drivePaths: string[]) => string[];
    },
  ) {
    this.budget = makeCacheBudget(settings.cacheBytes);
    this.snapPoints = new SnapPointService({
      pool,
      clock: settings.clock,
      log: settings.log,
      epochOf: (lunName) => this.snapshotSet(lunName).epoch,
    });
    this.drives = new DriveService(pool, {
      clock: settings.clock,
      log: settings.log,
      random: settings.random ?? Math.random,
      foregroundOps: () => this.foregroundOps(),
      ...settings.driveSettings,
    });
    pool.reservedUnits = () => {
      let units = 0;
      for (const set of this.snapshotSets.values()) units += set.reservedUnits();
      // what the snapclones' BGCOPYs still have to copy
      for (const stack of this.stacks.values())
        if (stack.record.cloneOf && stack.thin instanceof CloneVolume)
          units += stack.thin.pending.size;
      return units;
    };
  }

  /** Reads and writes of the LUNs' caches so far (the pace of rebuilds and scrubs follows it). */
  foregroundOps(): number {
    let ops = 0;
    for (const stack of this.stacks.values())
      ops += stack.cache.stats.readHits + stack.cache.stats.readMisses + stack.cache.stats.writes;
    return ops;
  }

  /**
   * Opens the snapshot target volumes of every LUN that has one (reads bitmaps and log files),
   * after
   * the crash recovery when the pool was not shut down cleanly: a CLI command that opens a crashed
   * pool itself (deferSession) read the targets before it, and wrote that view back (test:
   * test/e2e/offline-after-crash.test.ts, found by the crash soak).
   */
  async openSnapshots(readOnly = false): Promise<void> {
    if (!readOnly) await this.pool.recoverIfUnclean();
    for (const lun of this.pool.userLuns())
      if (this.pool.targetOf(lun.id)) await this.snapshotSet(lun.name).open(readOnly);
    if (!readOnly) await this.resumeRollbacks();
  }

  /** The LUN's snapshot set (its target must have been opened by openSnapshots). */
  snapshotSet(lunName: string): SnapshotSet {
    const lun = this.pool.lunByName(lunName);
    let set = this.snapshotSets.get(lun.id);
    if (!set) {
      set = new SnapshotSet(
        this.pool,
        lun,
        Math.min(defaultChunkBytes, this.pool.allocationUnitBytes),
        this.settings.log.child({ lun: lun.name }),
      );
      this.snapshotSets.set(lun.id, set);
    }
    return set;
  }

  /** The LUN's stack, assembled on first use. */
  stack(name: string): LunStack {
    let stack = this.stacks.get(name);
    if (!stack) {
      const record = this.pool.lunByName(name);
      stack = assembleLunStack(
        this.pool,
        record,
        {
          budget: this.budget,
          clock: this.settings.clock,
          writeThrough: this.settings.writeThrough,
        },
        this.snapshotSet(name),
        this.thinOf(record),
      );
      this.stacks.set(name, stack);
    }
    return stack;
  }

  // ---- snapshots ----

  /**
   * Takes a snapshot of a LUN: O(1) in the LUN's size, and no I/O pauses. Writes acknowledged
   * before the call are in it, writes issued after are not; it returns once the snapshot and the
   * data it holds are durable.
   */
  async createSnapshot(
    spec: string,
    options: { reserve?: boolean; source?: string; origin?: SnapshotRecord['origin'] } = {},
  ): Promise<SnapshotStatus> {
    const request = parseSnapshotRequest(spec);
    return this.takeSnapshot(request.lun, request.snapshot, {
      ...options,
      source: options.source ?? request.source,
    });
  }

  /** createSnapshot with the names checked; role marks a snapclone's hidden base. */
  private async takeSnapshot(
    lunName: string,
    snapshotName: string,
    options: {
      reserve?: boolean;
      source?: string;
      role?: SnapshotRecord['role'];
      origin?: SnapshotRecord['origin'];
    },
  ): Promise<SnapshotStatus> {
    const names = { lun: lunName, snapshot: snapshotName };
    const fullName = `${names.lun}@${names.snapshot}`;
    const lun = this.pool.lunByName(names.lun);
    const set = this.snapshotSet(names.lun);
    const sourceName = options.source;
    const source = sourceName === undefined ? undefined : set.byName(sourceName);
    if (source?.role) throw new LunfsError('ENOENT', `no snapshot ${names.lun}@${source.name}`);
    if (set.all().some((snapshot) => snapshot.name === names.snapshot))
      throw new LunfsError('EEXIST', `snapshot ${fullName} exists already`);
    if (!this.pool.hasRoomForSnapshotRecord())
      throw new LunfsError(
        'ENOSPC',
        `the pool metadata has no room for another snapshot (${this.pool.metadata.snapshots.size} exist); delete some first`,
      );
    let reservedBytes = 0;
    if (options.reserve) {
      reservedBytes = lun.sizeBytes;
      const unitBytes = this.pool.allocationUnitBytes;
      const neededUnits =
        Math.ceil(lun.sizeBytes / unitBytes) +
        16 +
        2 * Math.ceil(((lun.sizeBytes / set.chunkBytes) * 8.2) / unitBytes);
      const availableUnits =
        Math.floor(this.pool.freeBytes() / unitBytes) - this.pool.reservedUnits();
      if (neededUnits > availableUnits)
        throw new LunfsError(
          'ENOSPC',
          `a reservation for ${fullName} needs ${neededUnits * unitBytes} bytes; the pool has ${Math.max(0, availableUnits) * unitBytes} bytes not yet reserved`,
        );
    }
    if (source)
      return this.createSnapshotOf(set, source, names.snapshot, reservedBytes, options.role);
    const stack = this.stack(names.lun);
    set.creating += 1;
    let record: SnapshotRecord;
    try {
      await stack.cache.quiesceWriteThrough();
      await set.ensureTarget();
      if (set.all().some((snapshot) => snapshot.name === names.snapshot))
        throw new LunfsError('EEXIST', `snapshot ${fullName} exists already`);
      // The snapshot instant: from here on, new writes carry the next epoch.
      record = set.take(
        this.pool.metadata.nextSnapshotId,
        names.snapshot,
        reservedBytes,
        this.settings.clock.nowMs(),
      );
      if (options.role) record.role = options.role;
      if (options.origin) record.origin = options.origin;
      this.pool.metadata.snapshots.set(record.id, record);
      this.pool.metadata.nextSnapshotId += 1;
      set.updateReservationUse();
    } finally {
      set.creating -= 1;
    }
    try {
      await stack.cache.flush(); // what the snapshot holds is durable before it is
      this.pool.queue({ kind: 'snapshot-create', snapshot: { ...record } });
      await this.pool.commit();
    } catch (error) {
      await set.abandon(record);
      throw error;
    }
    this.settings.log.info(
      { snapshot: fullName, epoch: record.epoch, reservedBytes },
      'snapshot created',
    );
    return this.snapshotStatus(set, record);
  }

  /**
   * A snapshot of a snapshot (issue 15): a copy of the source's bitmap and log file, sharing every
   * slot, at the source's epoch (it holds the same LUN writes). No flush of the LUN: what the
   * source holds of the LUN's cache was made durable when the source was taken.
   */
  private async createSnapshotOf(
    set: SnapshotSet,
    source: SnapshotRecord,
    name: string,
    reservedBytes: number,
    role?: SnapshotRecord['role'],
  ): Promise<SnapshotStatus> {
    const fullName = `${set.lun.name}@${name}`;
    const record = await set.takeOf(
      source,
      { name, reservedBytes, createdAtMs: this.settings.clock.nowMs() },
      (fields) => {
        if (set.all().some((snapshot) => snapshot.name === name))
          throw new LunfsError('EEXIST', `snapshot ${fullName} exists already`);
        const made: SnapshotRecord = {
          id: this.pool.metadata.nextSnapshotId,
          ...fields,
          ...(role ? { role } : {}),
        };
        this.pool.metadata.snapshots.set(made.id, made);
        this.pool.metadata.nextSnapshotId += 1;
        set.updateReservationUse();
        return made;
      },
    );
    try {
      this.pool.queue({ kind: 'snapshot-create', snapshot: { ...record } });
      await this.pool.commit();
    } catch (error) {
      await set.abandon(record);
      throw error;
    }
    this.settings.log.info(
      { snapshot: fullName, of: `${set.lun.name}@${source.name}`, reservedBytes },
      'snapshot of a snapshot created',
    );
    return this.snapshotStatus(set, record);
  }

  /**
   * Rolls LUN back to its snapshot LUN@NAME (issue 15): the LUN's content becomes the snapshot's.
   * Refused while the LUN is open (through the mount or a rollback already under way). Every
   * snapshot stays valid, the later ones included: each chunk written back is one more change of
   * the LUN, so its original is preserved for the snapshots that need it as for any write.
   *
   * After a flush of the LUN's cache, the LUN differs from the snapshot only in the chunks whose
   * bit the snapshot has set (a clear bit means the LUN below its cache still holds the snapshot's
   * data). Those chunks are copied back, and the rest of a LUN grown since is discarded. The
   * rollback is recorded in the pool metadata before the first chunk and cleared after the last
   * one is durable; until then the LUN is not served, and an open resumes the copy.
   */
  async rollback(fullName: string, heldBy?: string): Promise<{ chunks: number; bytes: number }> {
    const names = parseSnapshotName(fullName);
    const lun = this.pool.lunByName(names.lun);
    const holder = this.held.get(lun.id);
    if (holder !== undefined && holder !== heldBy)
      throw new LunfsError('EBUSY', `LUN '${names.lun}' is ${holder}`);
    const set = this.snapshotSet(names.lun);
    const record = set.byName(names.snapshot);
    if (record.state !== 'valid')
      throw new LunfsError(
        'EIO',
        `snapshot ${fullName} is invalid (${record.invalidReason ?? 'unknown reason'}): no rollback to it`,
      );
    if ((this.openCounts.get(names.lun) ?? 0) > 0)
      throw new LunfsError(
        'EBUSY',
        `LUN '${names.lun}' is open; close it (unmount its file system, detach loop devices) before a rollback`,
      );
    if (this.rollingBack.has(lun.id) || lun.rollingBackTo !== undefined)
      throw new LunfsError('EBUSY', `LUN '${names.lun}' is being rolled back already`);
    this.rollingBack.add(lun.id);
    try {
      await this.stack(names.lun).cache.flush();
      await this.pool.commitOp({ kind: 'lun-rollback', lunId: lun.id, snapshotId: record.id });
      try {
        return await this.rollbackCopy(names.lun, record);
      } catch (error) {
        // e.g. ENOSPC for a chunk the LUN had discarded: the LUN is served again, part rolled
        // back (every chunk holds the LUN's data or the snapshot's), and the rollback can be run
        // again. A crash instead leaves the record set, and the next open resumes the copy.
        await this.pool
          .commitOp({ kind: 'lun-rollback', lunId: lun.id, snapshotId: null })
          .catch(() => undefined);
        const code = isLunfsError(error) ? error.code : 'EIO';
        throw new LunfsError(
          code,
          `rollback of LUN '${names.lun}' to ${fullName} stopped: ${(error as Error).message}; the LUN is partly rolled back, run the rollback again`,
          { cause: error },
        );
      }
    } finally {
      this.rollingBack.delete(lun.id);
    }
  }

  /** Copies back the chunks a rollback needs, then clears the LUN's rollback record. */
  private async rollbackCopy(
    lunName: string,
    record: SnapshotRecord,
  ): Promise<{ chunks: number; bytes: number }> {
    const stack = this.stack(lunName);
    const chunkBytes = stack.snapshots.chunkBytes;
    const chunks: number[] = [];
    stack.snapshots.image(record.id)?.log.forEach((chunkIndex) => chunks.push(chunkIndex));
    const volume = new SnapshotVolume(record, stack);
    let next = 0;
    let bytes = 0;
    let stopped = false;
    const worker = async (): Promise<void> => {
      const buffer = Buffer.alloc(chunkBytes);
      const zeros = Buffer.alloc(chunkBytes);
      while (next < chunks.length && !stopped) {
        const startBytes = chunks[next++]! * chunkBytes;
        const lengthBytes = Math.min(chunkBytes, record.sizeBytes - startBytes);
        if (lengthBytes <= 0) continue;
        const piece = buffer.subarray(0, lengthBytes);
        await volume.read(startBytes, piece);
        if (piece.equals(zeros.subarray(0, lengthBytes)))
          await stack.cache.discard(startBytes, lengthBytes);
        else await stack.cache.write(startBytes, piece);
        bytes += lengthBytes;
      }
    };
    // The first failure stops every worker, and all have ended before this returns or throws.
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () =>
        worker().catch((error: unknown) => {
          stopped = true;
          throw error;
        }),
      ),
    );
    const failure = results.find(
      (result): result is PromiseRejectedResult => result.status === 'rejected',
    );
    if (failure) throw failure.reason;
    // An unreserved snapshot invalidated meanwhile (the pool ran out of space for a preservation)
    // lost its image: what was copied back may be incomplete.
    if (record.state !== 'valid')
      throw new LunfsError(
        'EIO',
        `snapshot ${stack.record.name}@${record.name} became invalid: ${record.invalidReason ?? 'unknown reason'}`,
      );
    if (stack.record.sizeBytes > record.sizeBytes)
      await stack.cache.discard(record.sizeBytes, stack.record.sizeBytes - record.sizeBytes);
    await stack.cache.flush();
    await this.pool.commitOp({ kind: 'lun-rollback', lunId: stack.record.id, snapshotId: null });
    this.settings.log.info(
      { lun: lunName, snapshot: record.name, chunks: chunks.length, bytes },
      'LUN rolled back to its snapshot',
    );
    return { chunks: chunks.length, bytes };
  }

  // ---- snapclones (issue 15) ----

  /**
   * Takes a snapclone NAME of SOURCE (a LUN, a clone, or a snapshot LUN@SNAP): a new LUN that
   * holds SOURCE's data at this instant, readable and writable at once. Its base is a hidden
   * snapshot of SOURCE taken now (role 'clone-base', of the LUN or of the snapshot); BGCOPY then
   * copies every unit the base holds into the clone's own space, in the background, and when it
   * ends the clone reads nothing of the base, which is removed: the clone is an ordinary LUN. The
   * space BGCOPY needs (the units the base holds data in) is reserved for it, or the clone is
   * refused with ENOSPC (seed 004 [0087]). Returns BGCOPY's job.
   */
  async createClone(sourceSpec: string, name: string): Promise<JobStatus> {
    checkLunName(name);
    if (this.pool.hasLun(name))
      throw new LunfsError('EEXIST', `a LUN named '${name}' exists already`);
    const at = sourceSpec.indexOf('@');
    const source =
      at < 0 ? { lun: sourceSpec, snapshot: undefined } : parseSnapshotName(sourceSpec);
    if (at < 0) checkLunName(sourceSpec);
    const family = this.pool.lunByName(source.lun);
    const set = this.snapshotSet(source.lun);
    if (source.snapshot !== undefined) {
      const record = set.byName(source.snapshot);
      if (record.role) throw new LunfsError('ENOENT', `no snapshot ${sourceSpec}`);
    }
    const baseName = `.clone-${name}`;
    const stale = set.all().find((snapshot) => snapshot.name === baseName);
    if (stale) await set.remove(stale); // left by a creation a crash cut short
    // The base is a reserved snapshot: a full pool must not invalidate it while the clone reads
    // it (the source's overwrites are preserved for it until BGCOPY ends).
    try {
      await this.takeSnapshot(source.lun, baseName, {
        ...(source.snapshot !== undefined ? { source: source.snapshot } : {}),
        role: 'clone-base',
        reserve: true,
      });
    } catch (error) {
      if (!isLunfsError(error, 'ENOSPC')) throw error;
      throw new LunfsError(
        'ENOSPC',
        `clone ${name} of ${sourceSpec}: the originals its source may still change must have space reserved until its copy ends (${error.message.replace(/^.*?needs/, 'needs')})`,
        { cause: error },
      );
    }
    const base = set.byName(baseName);
    try {
      const units = this.baseDataUnits(this.stack(source.lun), base);
      const unitBytes = this.pool.allocationUnitBytes;
      const available = Math.floor(this.pool.freeBytes() / unitBytes) - this.pool.reservedUnits();
      if (units.length > available)
        throw new LunfsError(
          'ENOSPC',
          `clone ${name} needs ${units.length * unitBytes} bytes for its copy of ${sourceSpec}; the pool has ${Math.max(0, available) * unitBytes} bytes not yet reserved`,
        );
      await this.pool.createLun(name, base.sizeBytes, {
        lunId: family.id,
        snapshotId: base.id,
        source: sourceSpec,
      });
    } catch (error) {
      await set.remove(base);
      throw error;
    }
    this.settings.log.info({ clone: name, source: sourceSpec }, 'snapclone created');
    return this.startBgcopy(name);
  }

  /**
   * The units of the clone's base that hold data: a unit where a chunk has a preserved copy that
   * is not zeros, or whose chunks read the family LUN where that LUN has data. Fixed for the
   * clone's life (the base is never written); may count units of zeros, never miss data.
   */
  private baseDataUnits(familyStack: LunStack, base: SnapshotRecord): number[] {
    const unitBytes = this.pool.allocationUnitBytes;
    const set = familyStack.snapshots;
    const chunksPerUnit = unitBytes / set.chunkBytes;
    const image = set.image(base.id);
    const units: number[] = [];
    const unitCount = Math.ceil(base.sizeBytes / unitBytes);
    for (let unitIndex = 0; unitIndex < unitCount; unitIndex += 1) {
      let data = false;
      for (let inUnit = 0; inUnit < chunksPerUnit && !data; inUnit += 1) {
        const chunkIndex = unitIndex * chunksPerUnit + inUnit;
        if (chunkIndex * set.chunkBytes >= base.sizeBytes) break;
        if (image?.bitmap.get(chunkIndex)) data = image.log.get(chunkIndex) !== zeroSlot;
        else data = familyStack.thin.holdsData(chunkIndex * set.chunkBytes);
      }
      if (data) units.push(unitIndex);
    }
    return units;
  }

  /** The thin volume of a LUN: a snapclone under BGCOPY reads its base where it has no data. */
  private thinOf(record: LunRecord): ThinVolume {
    const cloneOf = record.cloneOf;
    if (!cloneOf) return new ThinVolume(this.pool, record);
    const familyName = this.pool.metadata.luns.get(cloneOf.lunId)?.name;
    const base = this.pool.metadata.snapshots.get(cloneOf.snapshotId);
    if (familyName === undefined || !base)
      throw new LunfsError('ECORRUPT', `clone ${record.name}: its base snapshot is gone`);
    const familyStack = this.stack(familyName);
    const clone = new CloneVolume(
      this.pool,
      record,
      new SnapshotVolume(base, familyStack),
      this.baseDataUnits(familyStack, base),
    );
    // Where the clone holds a unit durably, the source's overwrites preserve nothing for the base.
    const chunkBytes = familyStack.snapshots.chunkBytes;
    const unitBytes = this.pool.allocationUnitBytes;
    familyStack.snapshots.releaseWhere(base.id, (chunkIndex) =>
      clone.durablyOwns(Math.floor((chunkIndex * chunkBytes) / unitBytes)),
    );
    return clone;
  }

  /** Starts (or resumes) the BGCOPY of clone name. */
  private startBgcopy(name: string): JobStatus {
    const stack = this.stack(name);
    const thin = stack.thin as CloneVolume;
    const lunId = stack.record.id;
    const units = [...thin.pending].sort((a, b) => a - b);
    const unitBytes = this.pool.allocationUnitBytes;
    this.stoppedClones.delete(lunId);
    const job = this.drives.jobs.start(
      'bgcopy',
      units.length * unitBytes,
      { lun: name },
      async (progress) => {
        let sinceCommit = 0;
        for (const unitIndex of units) {
          if (this.stoppedClones.has(lunId))
            throw new LunfsError('EBUSY', 'stopped: the clone was removed');
          if (this.closing) throw new LunfsError('EBUSY', 'stopped; it resumes at the next mount');
          await thin.copyUnit(unitIndex);
          sinceCommit += 1;
          // What is copied is kept once committed: a restart copies only what is left.
          if (sinceCommit >= 64) {
            await thin.flush();
            sinceCommit = 0;
          }
          await progress(unitBytes);
        }
        await this.finishClone(name);
      },
    );
    this.bgcopies.set(
      lunId,
      this.drives.jobs.wait(job.id).then(() => undefined),
    );
    return job;
  }

  /** What BGCOPY still has to copy of a clone (null before its stack is built). */
  private clonePendingBytes(name: string): number | null {
    const thin = this.stacks.get(name)?.thin;
    return thin instanceof CloneVolume ? thin.pending.size * this.pool.allocationUnitBytes : null;
  }

  /** BGCOPY's end: the clone's data durable, then its base no longer named, then removed. */
  private async finishClone(name: string): Promise<void> {
    const stack = this.stack(name);
    const cloneOf = stack.record.cloneOf;
    if (!cloneOf) return;
    await stack.cache.flush();
    await stack.thin.flush();
    await this.pool.commitOp({ kind: 'lun-clone-done', lunId: stack.record.id });
    await this.removeCloneBase(cloneOf);
    this.settings.log.info({ clone: name }, 'snapclone independent: BGCOPY done');
  }

  private async removeCloneBase(cloneOf: NonNullable<LunRecord['cloneOf']>): Promise<void> {
    const familyName = this.pool.metadata.luns.get(cloneOf.lunId)?.name;
    const base = this.pool.metadata.snapshots.get(cloneOf.snapshotId);
    if (familyName === undefined || !base) return;
    await this.snapshotSet(familyName).remove(base);
  }

  private async stopBgcopy(lunId: number): Promise<void> {
    this.stoppedClones.add(lunId);
    await this.bgcopies.get(lunId);
  }

  /**
   * At a mount: BGCOPYs that a stop or a crash interrupted go on; bases no clone names (a crash
   * between a base's creation and its clone's, or between a BGCOPY's end and its base's removal)
   * are removed.
   */
  async resumeClones(): Promise<void> {
    const named = new Set(this.pool.userLuns().map((lun) => lun.cloneOf?.snapshotId));
    for (const lun of this.pool.userLuns())
      for (const snapshot of this.snapshotSet(lun.name).all())
        if (
          (snapshot.role === 'clone-base' && !named.has(snapshot.id)) ||
          snapshot.role === 'export' // an export's instant, left by a crash during the export
        )
          await this.snapshotSet(lun.name).remove(snapshot);
    for (const lun of this.pool.userLuns()) if (lun.cloneOf) this.startBgcopy(lun.name);
  }

  /** At open: rollbacks that a crash or a stop interrupted go on to their end. */
  private async resumeRollbacks(): Promise<void> {
    for (const lun of this.pool.userLuns()) {
      if (lun.rollingBackTo === undefined) continue;
      const record = this.pool.metadata.snapshots.get(lun.rollingBackTo);
      if (!record || record.state !== 'valid') {
        // Cannot happen through lunfs (the snapshot may not be deleted meanwhile); an invalid one
        // leaves the LUN part rolled back, which is said loudly.
        this.settings.log.error(
          { lun: lun.name, snapshot: lun.rollingBackTo },
          'the snapshot of an interrupted rollback is gone or invalid: the LUN is only partly rolled back',
        );
        await this.pool.commitOp({ kind: 'lun-rollback', lunId: lun.id, snapshotId: null });
        continue;
      }
      this.settings.log.warn(
        { lun: lun.name, snapshot: record.name },
        'resuming an interrupted rollback',
      );
      this.rollingBack.add(lun.id);
      try {
        await this.rollbackCopy(lun.name, record);
      } finally {
        this.rollingBack.delete(lun.id);
      }
    }
  }

  async removeSnapshot(fullName: string): Promise<void> {
    const names = parseSnapshotName(fullName);
    const set = this.snapshotSet(names.lun);
    const record = set.byName(names.snapshot);
    if (set.lun.rollingBackTo === record.id)
      throw new LunfsError(
        'EBUSY',
        `LUN '${names.lun}' is being rolled back to ${fullName}; delete it once that has ended`,
      );
    if ((this.openCounts.get(fullName) ?? 0) > 0)
      throw new LunfsError(
        'EBUSY',
        `snapshot ${fullName} is open; close it (detach loop devices) first`,
      );
    await set.remove(record);
    this.settings.log.info({ snapshot: fullName }, 'snapshot removed');
  }

  listSnapshots(): SnapshotStatus[] {
    const list: SnapshotStatus[] = [];
    for (const lun of this.pool.userLuns()) {
      const set = this.snapshotSet(lun.name);
      for (const record of set.all()) if (!record.role) list.push(this.snapshotStatus(set, record));
    }
    return list;
  }

  /** The snapshot as a block device. */
  snapshotVolume(fullName: string): SnapshotVolume {
    const names = parseSnapshotName(fullName);
    const record = this.snapshotSet(names.lun).byName(names.snapshot);
    if (record.role) throw new LunfsError('ENOENT', `no snapshot ${fullName}`);
    return new SnapshotVolume(record, this.stack(names.lun));
  }

  /** Whether LUN@NAME exists; with request, also LUN@SOURCE@NAME (a control/snapshot request). */
  hasSnapshot(fullName: string, options: { request?: boolean } = {}): boolean {
    try {
      const names = options.request ? parseSnapshotRequest(fullName) : parseSnapshotName(fullName);
      return (
        this.pool.hasLun(names.lun) &&
        this.snapshotSet(names.lun)
          .all()
          .some((snapshot) => snapshot.name === names.snapshot && !snapshot.role)
      );
    } catch {
      return false;
    }
  }

  private snapshotStatus(set: SnapshotSet, record: SnapshotRecord): SnapshotStatus {
    const usage = set.usage(record);
    const fullName = `${set.lun.name}@${record.name}`;
    return {
      name: fullName,
      lun: set.lun.name,
      snapshot: record.name,
      sizeBytes: record.sizeBytes,
      createdAt: new Date(record.createdAtMs).toISOString(),
      state: record.state,
      ...(record.invalidReason ? { invalidReason: record.invalidReason } : {}),
      exclusiveBytes: usage.exclusiveBytes,
      sharedBytes: usage.sharedBytes,
      reserved: record.reservedBytes > 0,
      reservedBytes: record.reservedBytes,
      epoch: record.epoch,
      ...this.chainNeighbours(set, record),
      open: this.openCounts.get(fullName) ?? 0,
    };
  }

  private chainNeighbours(
    set: SnapshotSet,
    record: SnapshotRecord,
  ): Pick<SnapshotStatus, 'source' | 'predecessor' | 'successor' | 'snapshotsOf' | 'depth'> {
    const metadata = this.pool.metadata;
    const named = (snapshot: SnapshotRecord): string => `${set.lun.name}@${snapshot.name}`;
    const chain = sharingChainOf(metadata, record.sourceId, record.sourceKind).filter(
      (snapshot) => !snapshot.role,
    );
    const position = chain.findIndex((snapshot) => snapshot.id === record.id);
    const older = chain[position - 1];
    const newer = chain[position + 1];
    const sourceRecord =
      record.sourceKind === 'snapshot' ? metadata.snapshots.get(record.sourceId) : undefined;
    const source = sourceRecord ? named(sourceRecord) : `lun:${set.lun.name}`;
    let depth = 1;
    for (let up = sourceRecord; up; depth += 1)
      up = up.sourceKind === 'snapshot' ? metadata.snapshots.get(up.sourceId) : undefined;
    return {
      source,
      predecessor: older ? named(older) : null,
      successor: newer ? named(newer) : source,
      snapshotsOf: sharingChainOf(metadata, record.id, 'snapshot')
        .filter((snapshot) => !snapshot.role)
        .map(named),
      depth,
    };
  }

  /** How many times the LUN or snapshot file is open through the mount. */
  get clock(): Clock {
    return this.settings.clock;
  }

  get log(): Logger {
    return this.settings.log;
  }

  /**
   * A hidden snapshot of LUN lunName now (role 'export': the instant an export of the live LUN
   * reads). The caller removes it (removeHiddenSnapshot); a crash leaves it to resumeClones.
   */
  async takeHiddenSnapshot(lunName: string, role: 'export'): Promise<SnapshotRecord> {
    const set = this.snapshotSet(lunName);
    let name = `.${role}-${this.pool.metadata.nextSnapshotId}`;
    while (set.all().some((snapshot) => snapshot.name === name)) name += 'x';
    await this.takeSnapshot(lunName, name, { role });
    return set.byName(name);
  }

  async removeHiddenSnapshot(lunName: string, record: SnapshotRecord): Promise<void> {
    if (this.pool.metadata.snapshots.get(record.id) === record)
      await this.snapshotSet(lunName).remove(record);
  }

  /**
   * Holds LUN lunName for work that must see it alone (an import): refused while it is open or
   * rolled back; opens are refused (EBUSY, "LUN is <what>") until the returned release.
   */
  hold(lunName: string, what: string): () => void {
    const lun = this.pool.lunByName(lunName);
    if ((this.openCounts.get(lunName) ?? 0) > 0)
      throw new LunfsError(
        'EBUSY',
        `LUN '${lunName}' is open; close it (unmount its file system, detach loop devices) first`,
      );
    this.refuseBusy(lun);
    this.held.set(lun.id, what);
    return () => this.held.delete(lun.id);
  }

  /**
   * Every write to a LUN from outside (the mount) goes between this and the release it gives: a
   * migration's final pass holds new ones and waits for those under way (migration.ts).
   */
  enterWrite(name: string): (() => void) | Promise<() => void> {
    return this.migrations.enterWrite(this.pool.lunByName(name).id);
  }

  openCount(name: string): number {
    return this.openCounts.get(name) ?? 0;
  }

  /** Counts an open of a LUN or snapshot file; EBUSY for a LUN being rolled back. */
  opened(name: string): void {
    if (this.pool.hasLun(name)) this.refuseBusy(this.pool.lunByName(name));
    this.openCounts.set(name, (this.openCounts.get(name) ?? 0) + 1);
  }

  /** EBUSY for a LUN that is rolled back, held (an import), or only partly imported. */
  private refuseBusy(lun: LunRecord): void {
    if (this.rollingBack.has(lun.id) || lun.rollingBackTo !== undefined)
      throw new LunfsError('EBUSY', `LUN '${lun.name}' is being rolled back to a snapshot`);
    const holder = this.held.get(lun.id);
    if (holder !== undefined) throw new LunfsError('EBUSY', `LUN '${lun.name}' is ${holder}`);
    if (lun.importing)
      throw new LunfsError(
        'EBUSY',
        `LUN '${lun.name}' is only partly imported (the import was interrupted): the next mount undoes it`,
      );
  }

  released(name: string): void {
    this.openCounts.set(name, Math.max(0, (this.openCounts.get(name) ?? 0) - 1));
  }

  createLun(name: string, sizeBytes: number): Promise<unknown> {
    return this.pool.createLun(name, sizeBytes);
  }

  /** heldBy: the work holding the LUN (hold()) removes it: only it may. */
  async removeLun(name: string, heldBy?: string): Promise<void> {
    const holder = this.held.get(this.pool.lunByName(name).id); // ENOENT first
    if (holder !== undefined && holder !== heldBy)
      throw new LunfsError('EBUSY', `LUN '${name}' is ${holder}`);
    const family = this.snapshotSet(name).all();
    const snapshots = family.filter((snapshot) => !snapshot.role).length;
    if (snapshots > 0)
      throw new LunfsError(
        'EBUSY',
        `LUN '${name}' has ${snapshots} snapshot(s); delete them first`,
      );
    const clones = this.pool
      .userLuns()
      .filter((lun) => family.some((snapshot) => snapshot.id === lun.cloneOf?.snapshotId));
    if (clones.length > 0)
      throw new LunfsError(
        'EBUSY',
        `LUN '${name}' is the source of clone(s) ${clones.map((lun) => lun.name).join(', ')} whose background copy has not ended; wait for it, or delete them first`,
      );
    const lun = this.pool.lunByName(name);
    if ((this.openCounts.get(name) ?? 0) > 0)
      throw new LunfsError('EBUSY', `LUN '${name}' is open; close it (detach loop devices) first`);
    const stack = this.stacks.get(name);
    if (lun.cloneOf) await this.stopBgcopy(lun.id);
    this.stacks.delete(name);
    if (stack) await stack.cache.drop();
    await this.pool.removeLun(name, () => stack?.thin.releaseAll());
    // A clone removed before its BGCOPY ended: its base goes too.
    if (lun.cloneOf) await this.removeCloneBase(lun.cloneOf);
  }

  async resizeLun(name: string, sizeBytes: number): Promise<void> {
    await this.pool.resizeLun(name, sizeBytes);
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.stacks.values()].map((stack) => stack.cache.flush()));
  }

  status(): StatusJson {
    const pool = this.pool;
    const metadata = pool.metadata;
    const atRisk = this.drives.lunsAtRisk();
    const lost = this.drives.lunsLost();
    const names = (list: string[], lun: string): boolean =>
      list.some((name) => name === lun || name === `${lun} (snapshots)`);
    const luns = pool.userLuns().map((lun) => {
      const stack = this.stacks.get(lun.name);
      const allocatedBytes = stack
        ? stack.thin.allocatedBytes
        : lun.map.mappedCount * metadata.config.allocationUnitBytes;
      const chain = sharingChainOf(metadata, lun.id).map(
        (snapshot) => `${lun.name}@${snapshot.name}`,
      );
      const snapshotNames = [...metadata.snapshots.values()]
        .filter((snapshot) => snapshot.lunId === lun.id && !snapshot.role)
        .sort((a, b) => a.epoch - b.epoch || a.id - b.id)
        .map((snapshot) => `${lun.name}@${snapshot.name}`);
      return {
        name: lun.name,
        sizeBytes: lun.sizeBytes,
        allocatedBytes,
        createdAt: new Date(lun.createdAtMs).toISOString(),
        open: this.openCounts.get(lun.name) ?? 0,
        snapshots: snapshotNames.length,
        snapshotNames,
        predecessor: chain.at(-1) ?? null,
        atRisk: names(atRisk, lun.name),
        lost: names(lost, lun.name),
        preservations: preservationCounts(this.snapshotSets.get(lun.id)?.targetVolume),
        clone: lun.cloneOf
          ? {
              source: lun.cloneOf.source,
              pendingBytes: this.clonePendingBytes(lun.name),
            }
          : null,
        rollingBackTo:
          lun.rollingBackTo === undefined
            ? null
            : `${lun.name}@${metadata.snapshots.get(lun.rollingBackTo)?.name ?? '?'}`,
      };
    });
    const totalBytes = pool.capacityBytes();
    const freeBytes = pool.freeBytes();
    return {
      pool: {
        uuid: metadata.config.poolUuid,
        raid: `raid${metadata.config.raidLevel}`,
        state: this.drives.poolState(),
        atRiskLuns: atRisk,
        lostLuns: lost,
        totalBytes,
        freeBytes,
        reservedBytes: Math.min(
          freeBytes,
          pool.reservedUnits() * metadata.config.allocationUnitBytes,
        ),
        allocatedBytes: totalBytes - freeBytes,
        psegSizeBytes: metadata.config.psegSizeBytes,
        allocationUnitBytes: metadata.config.allocationUnitBytes,
        createdAt: new Date(metadata.config.createdAtMs).toISOString(),
        formatVersion: pool.layoutHeader.formatVersion,
      },
      drives: metadata.drives.map((drive) => {
        const holds = pool.metadataCopyDrives.includes(drive.index);
        const report = pool.copyReports.find((copy) => copy.driveIndex === drive.index);
        const state = pool.health.state(drive.index);
        const opened = pool.drives[drive.index]!;
        const header = pool.headers[drive.index];
        const damaged = pool.labelDamage[drive.index] ?? [];
        return {
          labelCopies: header ? labelCountOf(header) : 0,
          ...(damaged.length > 0
            ? {
                labelsDamagedAtOpen: damaged.map(
                  (problem) => `${problem.position}: ${problem.reason}`,
                ),
              }
            : {}),
          index: drive.index,
          path: opened.path,
          sizeBytes: drive.sizeBytes,
          state,
          ...(state === 'failed'
            ? {
                failedReason: drive.failedReason ?? 'failed',
                ...(drive.failedAtMs ? { failedAt: new Date(drive.failedAtMs).toISOString() } : {}),
              }
            : {}),
          ...(drive.missedWriteRStores?.length
            ? { missedWriteLuns: pool.lunsOn(drive.missedWriteRStores) }
            : {}),
          io: isMissingDrive(opened)
            ? ('missing' as const)
            : (opened as { inline?: boolean }).inline
              ? ('inline' as const)
              : ('async' as const),
          psegCount: drive.psegCount,
          rss: drive.rssId,
          holdsMetadataCopy: holds,
          // As found at open; a copy placed during this mount was just written, so good.
          ...(holds ? { metadataCopy: report?.state ?? 'good' } : {}),
        };
      }),
      luns,
      snapshots: this.listSnapshots(),
      snapPoints: this.snapPoints.list(),
      cache: {
        capacityBytes: this.budget.capacityBytes,
        cachedBytes: this.budget.cachedBytes(),
        dirtyBytes: this.budget.dirtyBytes(),
        writtenThroughBytes: [...this.stacks.values()].reduce(
          (sum, stack) => sum + stack.cache.stats.writtenThroughBytes,
          0,
        ),
      },
      integrity: { ...pool.health.integrity },
      jobs: this.drives.jobs.list(),
      writeIntent: { dirtyRStores: pool.intent.dirtyCount },
      metadata: { journalFillRatio: Number(pool.metadataJournalFillRatio.toFixed(4)) },
      kernels: kernelImplementation,
      warnings: this.settings.warnings?.(pool.drives.map((drive) => drive.path)) ?? [],
    };
  }

  /** Flushes every LUN and closes the pool cleanly. */
  /**
   * Flushes and closes every LUN, then the pool. With dropUnwritable (a stop after a flush that
   * failed: writes meant for a drive out of service, with no redundancy to take them), a LUN whose
   * cache cannot be written drops its dirty data instead of failing the close, so the pool still
   * closes and records what its drives missed; the result names each LUN and the bytes lost.
   */
  async close(
    options: { dropUnwritable?: boolean } = {},
  ): Promise<Array<{ lun: string; bytes: number; reason: string }>> {
    const lost: Array<{ lun: string; bytes: number; reason: string }> = [];
    this.closing = true; // BGCOPYs stop; they resume at the next mount
    await this.drives.close();
    for (const [name, stack] of this.stacks) {
      try {
        await stack.cache.close();
      } catch (error) {
        if (!options.dropUnwritable) throw error;
        lost.push({ lun: name, bytes: stack.cache.dirtyBytes, reason: (error as Error).message });
        await stack.cache.drop();
      }
    }
    for (const set of this.snapshotSets.values()) await set.targetVolume?.quiesce();
    this.stacks.clear();
    await this.pool.close();
    return lost;
  }
}
