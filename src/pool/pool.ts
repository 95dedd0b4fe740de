// The pool: its drives (with their headers), the metadata (live in memory, committed through the
// metadata store), the RSEG allocator and the RStores. It is the MapSpace every thin volume
// allocates from and the object every importer holds; the work is done in the files beside it,
// each given only the part of the pool it needs:
// - pool-open.ts: format, and reading the drives and metadata at open (Pool.open then decides
//   whether the pool can serve, and starts the write session);
// - pool-recovery.ts: the repairs a write session starts with (labels; after an unclean shutdown,
//   lost checksums and the resync of the RStores that had writes in flight);
// - pool-drive-failure.ts: the drives out of service at open, RAID-0 drives taken back, and a
//   drive failure or a missed write recorded while the pool runs;
// - pool-drives.ts: drive replacement, rebuild, scrub, the metadata copies;
// - pool-space.ts: the RSEG a thin volume's unit is bound to (snapshot reservations kept), and
//   the metadata's room for one more snapshot record;
// - pool-luns.ts: the LUN table and the snapshot target volumes (create, remove, grow);
// - pool-commit.ts: the commit, the one place metadata becomes durable (flush the data drives,
//   then append the queued metadata ops).
// The LUN stacks themselves are assembled in stack.ts.

import type { Drive } from '../drive/drive.js';
import type { DriveHeader } from '../meta/drive-header.js';
import type { LabelProblem } from '../meta/drive-labels.js';
import type { CopyReport, MetadataStore } from '../meta/metadata-store.js';
import {
  applyMetadataOp,
  driveStateOf,
  type LunRecord,
  type MetadataOp,
  type PoolMetadata,
} from '../meta/pool-metadata.js';
import { DriveHealth } from '../raid/drive-health.js';
import { lunsOnRStores } from './drive-return.js';
import { DegradedRowLog, type RowLogCounters, type RowLogEntry } from '../raid/row-log.js';
import { WriteIntent } from '../raid/write-intent.js';
import { RsegAllocator, type RsegAllocation, type RsegRef } from './rseg-allocator.js';
import type { MapSpace } from './map-space.js';
import type { DriveGeometry } from '../raid/member-io.js';
import { RStore } from '../raid/rstore.js';
import { Raid5Memory } from '../raid/raid5-memory.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import {
  formatDrives,
  loadPool,
  type PoolFormatOptions,
  type PoolOpenOptions,
} from './pool-open.js';
import {
  recomputeLostChecksums,
  repairLabels,
  resyncMirrors,
  type SessionRecoveryContext,
} from './pool-recovery.js';
import {
  flushLeavingDrive,
  markMissingDrives,
  recordDriveFailure,
  recordMissedWrite,
  refuseIfDataLost,
  refuseIfDirtyDegraded,
  setBeyondRedundancy,
  takeBack,
  type DriveFailureContext,
  type FailureRecordContext,
} from './pool-drive-failure.js';
import * as driveWork from './pool-drives.js';
import { LunTable } from './pool-luns.js';
import { PoolCommit } from './pool-commit.js';
import type { DriveWorkContext, ScrubReport } from './pool-drives.js';
import { SnapPointIntents } from './snap-point-intents.js';
import {
  allocateRseg,
  hasRoomForSnapPoint,
  hasRoomForSnapshotRecord,
  type SpaceContext,
} from './pool-space.js';

/** Each file's narrow view of the pool, in one object built once (Pool.makeParts). */
type PoolParts = SessionRecoveryContext &
  DriveFailureContext &
  FailureRecordContext &
  DriveWorkContext &
  SpaceContext;

export class Pool implements MapSpace {
  private readonly allocator: RsegAllocator;
  /** Which drives are in service; shared by every RStore. */
  readonly health: DriveHealth;
  /**
   * Called after a drive fails (the controller relocates metadata copies, logs, updates status).
   */
  onDriveFailure: (driveIndex: number, reason: string) => void = () => {};
  /** Called after a missed write was first recorded on a drive (the controller commits it soon). */
  onMissedWrite: (driveIndex: number) => void = () => {};
  private readonly rstoreCache = new Map<number, RStore>();
  /** RAID-5's spare buffers and row cache, shared by this pool's RStores only. */
  private readonly raid5Memory = new Raid5Memory();
  /**
   * The degraded-row log (undefined on a read-only pool), and its records to replay when the
   * session starts.
   */
  private rowLog: DegradedRowLog | undefined;
  private rowLogReplay: RowLogEntry[] = [];
  private closed = false;
  private sessionStarted = false;
  private stopping = false;
  /**
   * Per drive: its labels found damaged at open (src/meta/drive-labels.ts), as status reports them;
   * rewritten from the good one when the write session starts.
   */
  labelDamage: LabelProblem[][] = [];
  /** While Pool.open runs: drives found missing are reported once it has decided to open. */
  private opening = true;
  /**
   * What the other files of pool/ see of the pool: each function takes the narrow part it needs.
   */
  private readonly parts: PoolParts;
  private readonly lunTable: LunTable;
  private readonly commits: PoolCommit;
  /** The durability of snap-point marks (pool/snap-point-intents.ts). */
  readonly snapPointIntents: SnapPointIntents = new SnapPointIntents(this);

  private constructor(
    /** The drives as opened (files, devices, or MissingDrive stand-ins), in drive-index order. */
    readonly drives: Drive[],
    /** What the RStores use: each drive behind its ChecksumDrive filter. */
    private readonly geometry: DriveGeometry[],
    readonly metadata: PoolMetadata,
    private readonly store: MetadataStore,
    readonly copyReports: CopyReport[],
    private readonly options: PoolOpenOptions,
    readonly headers: ReadonlyArray<DriveHeader | undefined>,
  ) {
    this.allocator = new RsegAllocator(metadata);
    this.health = new DriveHealth(
      metadata.drives,
      (driveIndex, reason, absent) => recordDriveFailure(this.parts, driveIndex, reason, absent),
      (driveIndex, rstoreId) => recordMissedWrite(this.parts, driveIndex, rstoreId),
    );
    const dirtyAtOpen = [...metadata.rstores.values()]
      .filter((rstore) => rstore.dirty)
      .map((rstore) => rstore.id);
    this.intent = new WriteIntent(dirtyAtOpen, options.clock, async (rstoreIds, dirty) => {
      const op: MetadataOp = { kind: 'rstore-intent', rstoreIds, dirty };
      applyMetadataOp(this.metadata, op);
      this.queue(op);
      await this.commit();
    });
    this.commits = new PoolCommit({
      metadata,
      store,
      health: this.health,
      intent: options.readOnly ? undefined : this.intent,
      rowLog: () => this.rowLog,
      dataDrive: (driveIndex) => this.dataDrive(driveIndex),
      openRStores: () => this.rstoreCache.values(),
      lostRStores: () => this.lostRStores(),
      beforeCommit: () => this.snapPointIntents.beforeCommit(),
    });
    this.parts = this.makeParts();
    this.lunTable = new LunTable({
      metadata,
      clock: options.clock,
      log: options.log,
      checkWritable: () => this.checkWritable(),
      commitOp: (op) => this.commitOp(op),
      queue: (op, afterCommit) => this.queue(op, afterCommit),
      commit: () => this.commit(),
      release: (entries) => this.allocator.release(entries),
    });
  }

  /** The pool as the files beside it see it: fields, and methods bound to this pool. */
  private makeParts(): PoolParts {
    return {
      metadata: this.metadata,
      drives: this.drives,
      headers: this.headers as Array<DriveHeader | undefined>, // a replacement takes its place here
      health: this.health,
      log: this.options.log,
      dataDrive: (driveIndex) => this.dataDrive(driveIndex),
      rstore: (rstoreId) => this.rstore(rstoreId),
      memberPhysicalOffset: (rstore, memberIndex) => this.memberPhysicalOffset(rstore, memberIndex),
      flushDataDrives: () => this.flushDataDrives(),
      queue: (op) => this.queue(op),
      geometry: this.geometry,
      clock: this.options.clock,
      layoutHeader: () => this.layoutHeader,
      lostRStores: () => this.lostRStores(),
      commitOp: (op) => this.commitOp(op),
      commit: () => this.commit(),
      stopping: () => this.stopping,
      readOnly: this.options.readOnly === true,
      dropCopies: (driveIndex) => {
        this.store.dropCopy(driveIndex);
        this.rowLog?.dropCopy(driveIndex);
      },
      opening: () => this.opening,
      allocator: this.allocator,
      onDriveFailure: (driveIndex, reason) => this.onDriveFailure(driveIndex, reason),
      onMissedWrite: (driveIndex) => this.onMissedWrite(driveIndex),
    };
  }

  /** The write-intent record of the RStores (see raid/write-intent.ts). */
  readonly intent: WriteIntent;

  private get checkpointSlotBytes(): number {
    return this.layoutHeader.checkpointSlotBytes;
  }

  /** A header of a present drive: every drive of a pool has the same layout. */
  get layoutHeader(): DriveHeader {
    return this.headers.find((header) => header !== undefined)!;
  }

  /** The drive as the RStores see it (behind its checksum filter). */
  dataDrive(driveIndex: number): Drive {
    return this.geometry[driveIndex]!.drive;
  }

  /** Writes headers and a first checkpoint on fresh drives. The drives stay open in the result. */
  static async format(drives: Drive[], options: PoolFormatOptions): Promise<Pool> {
    await formatDrives(drives, options);
    return Pool.open(drives, { clock: options.clock, log: options.log });
  }

  /**
   * Checks the drives' headers (same pool, right order), then recovers the metadata. A drive that
   * is missing (a MissingDrive in its place) or failed earlier is out of service: the pool opens
   * degraded when every RStore keeps its data without it, and refuses otherwise.
   */
  static async open(givenDrives: Drive[], options: PoolOpenOptions): Promise<Pool> {
    const { drives, geometry, headers, labelDamage, metadata, store, reports, returning } =
      await loadPool(givenDrives, options);
    const pool = new Pool(drives, geometry, metadata, store, reports, options, headers);
    pool.labelDamage = labelDamage;
    for (const [index, damaged] of labelDamage.entries()) {
      if (damaged.length > 0)
        options.log.warn(
          { driveIndex: index, drive: drives[index]!.path, damaged },
          'drive label damaged: the good one names the drive; the damaged one is rewritten when the write session starts',
        );
    }
    if (!options.readOnly) await takeBack(pool.parts, returning);
    const newlyMissing = markMissingDrives(pool.parts, (driveIndex) => store.dropCopy(driveIndex));
    refuseIfDirtyDegraded(pool.parts, newlyMissing, options);
    if (!options.readOnly) await pool.openRowLog();
    if (!options.readOnly) pool.refuseIfDataLost();
    pool.opening = false;
    for (const index of pool.health.failedDrives()) {
      if (!options.readOnly)
        options.log.warn(
          {
            driveIndex: index,
            drive: drives[index]!.path,
            reason: metadata.drives[index]!.failedReason,
          },
          'drive out of service: the pool runs degraded',
        );
    }
    if (!options.readOnly && !options.deferSession) await pool.startSession();
    return pool;
  }

  /**
   * The degraded-row log lives beside the metadata copies in service (src/raid/row-log.ts); its
   * records not yet cleared are replayed when the session starts.
   */
  private async openRowLog(): Promise<void> {
    const header = this.layoutHeader;
    const copies = this.store.copyDriveIndexes.map((driveIndex) => ({
      drive: this.drives[driveIndex]!,
      driveIndex,
    }));
    const { rowLog, entries } = await DegradedRowLog.open(
      copies,
      header.rowLogOffsetBytes,
      header.rowLogBytes,
      this.options.log,
      () => this.flushDataDrives(),
    );
    this.rowLog = rowLog;
    this.rowLogReplay = entries;
  }

  /** Counters of the degraded-row log (undefined on a read-only pool). */
  get rowLogCounters(): RowLogCounters | undefined {
    return this.rowLog?.counters;
  }

  /**
   * EIO naming what is lost when some RStore has more members out of service than its RAID level
   * covers.
   */
  refuseIfDataLost(): void {
    refuseIfDataLost(this.parts, this.lostRStores());
  }

  /**
   * Whether some redundancy set has more drives out of service than its level covers (RAID-0:
   * one, RAID-5: two): no new RStore can be made there, whether or not data lies there yet.
   */
  setBeyondRedundancy(): boolean {
    return setBeyondRedundancy(this.metadata, this.health);
  }

  /** RStores with more members out of service than their redundancy covers. */
  lostRStores(): RStore[] {
    return [...this.metadata.rstores.values()]
      .map((record) => this.rstore(record.id))
      .filter((rstore) => rstore.lost);
  }

  /** RStores running without a member (failed or being rebuilt). */
  degradedRStores(): RStore[] {
    return [...this.metadata.rstores.values()]
      .map((record) => this.rstore(record.id))
      .filter((rstore) =>
        rstore.record.members.some(
          (member) => driveStateOf(this.metadata.drives[member.driveIndex]!) !== 'online',
        ),
      );
  }

  /** Names of the user LUNs (and LUN@snapshots' owners) with data in these RStores. */
  lunsOn(rstoreIds: number[]): string[] {
    return lunsOnRStores(this.metadata, rstoreIds);
  }

  /**
   * The last flush of a drive that just left service, so that a RAID-0 drive that comes back
   * holds everything written to it (pool-drive-failure.ts).
   */
  async flushLeavingDrive(driveIndex: number): Promise<void> {
    await flushLeavingDrive(this.parts, driveIndex);
  }

  get allocationUnitBytes(): number {
    return this.metadata.config.allocationUnitBytes;
  }

  // ---- MapSpace ----

  /** Whether the pool metadata has room for one more snapshot record (pool-space.ts). */
  hasRoomForSnapshotRecord(): boolean {
    return hasRoomForSnapshotRecord(this.metadata, this.checkpointSlotBytes);
  }

  /** Whether the pool metadata has room for one more snap-point map (pool-space.ts). */
  hasRoomForSnapPoint(sizeBytes: number, grainBytes: number): boolean {
    return hasRoomForSnapPoint(this.metadata, this.checkpointSlotBytes, sizeBytes, grainBytes);
  }

  /** Units of free space held back for reserved snapshots (set by the controller). */
  reservedUnits: () => number = () => 0;

  /** useReservation: the allocation may use space reserved for snapshots (pool-space.ts). */
  allocate(hint?: RsegRef, useReservation = false): RsegAllocation {
    this.checkWritable();
    assert(
      this.sessionStarted,
      'allocation before the write session started (fresh RSEG flags not yet trusted)',
    );
    return allocateRseg(this.parts, hint, useReservation ? undefined : () => this.reservedUnits());
  }

  abandon(allocation: RsegAllocation): void {
    this.allocator.release([allocation]);
  }

  rstore(rstoreId: number): RStore {
    let rstore = this.rstoreCache.get(rstoreId);
    if (!rstore) {
      const record = this.metadata.rstores.get(rstoreId);
      assert(record !== undefined, `unknown RStore ${rstoreId}`);
      rstore = new RStore(
        record,
        this.geometry,
        this.metadata.config.stripeUnitBytes,
        this.health,
        this.options.readOnly ? undefined : this.intent,
        this.rowLog,
        this.raid5Memory,
      );
      rstore.onParitySet = (rstoreId) => this.queue({ kind: 'rstore-parity-set', rstoreId });
      this.rstoreCache.set(rstoreId, rstore);
    }
    return rstore;
  }

  queue(op: MetadataOp, afterCommit?: () => void): void {
    this.commits.queue(op, afterCommit);
  }

  /**
   * Flushes every data drive, then makes the queued metadata durable, then runs afterCommit hooks.
   */
  async commit(): Promise<void> {
    if (!this.sessionStarted) await this.startSession();
    return this.commits.commit();
  }

  /**
   * Flushes every drive in service (data, then checksum tables). A drive whose flush fails leaves
   * service; that is an error for the caller only when some RStore lost data with it.
   */
  flushDataDrives(): Promise<void> {
    return this.commits.flushDataDrives();
  }

  // ---- drives: failure, replacement, rebuild, scrub ----

  /** Keeps as many metadata copies as the pool had, one per drive in service (pool-drives.ts). */
  async ensureMetadataCopies(): Promise<void> {
    await driveWork.ensureMetadataCopies(this.parts, { store: this.store, rowLog: this.rowLog });
  }

  /** Which drives hold a metadata copy now. */
  get metadataCopyDrives(): number[] {
    return this.store.copyDriveIndexes;
  }

  /**
   * Puts newDrive in the place of failed drive driveIndex: writes its header, clears its checksum
   * table, and commits it as 'rebuilding' (writes reach it from then on; reads wait for the
   * rebuild). The caller then runs rebuildDrive.
   */
  async replaceDrive(driveIndex: number, newDrive: Drive, driveUuid: string): Promise<void> {
    this.replaceDriveCheck(driveIndex);
    await driveWork.installReplacement(this.parts, driveIndex, newDrive, driveUuid);
  }

  /**
   * Refuses a replacement of driveIndex unless it failed and the rest of the pool can rebuild it.
   */
  replaceDriveCheck(driveIndex: number): void {
    this.checkWritable();
    driveWork.checkReplaceable(this.parts, driveIndex);
  }

  /** Asks running rebuilds and scrubs to stop at the next RStore (close, unmount). */
  stopBackgroundWork(): void {
    this.stopping = true;
  }

  /** Bytes a rebuild of driveIndex writes: one PSEG per RStore with a member there. */
  rebuildBytes(driveIndex: number): number {
    return driveWork.rebuildBytes(this.metadata, driveIndex);
  }

  /**
   * Rebuilds a replacement drive from redundancy, RStore by RStore, while I/O goes on; then makes
   * it durable, marks the drive online and restores the metadata copies.
   */
  async rebuildDrive(
    driveIndex: number,
    progress: (bytes: number) => void | Promise<void>,
  ): Promise<void> {
    const copies = { store: this.store, rowLog: this.rowLog };
    await driveWork.rebuildDrive(this.parts, copies, driveIndex, progress);
  }

  /** Reads every RStore member, verifies checksums, parity and mirrors, repairs what it can. */
  async scrub(progress: (bytes: number) => void | Promise<void> = () => {}): Promise<ScrubReport> {
    return driveWork.scrub(this.parts, progress);
  }

  /** Bytes a scrub reads: every member of every RStore. */
  scrubBytes(): number {
    return driveWork.scrubBytes(this.metadata);
  }

  // ---- LUN management (pool-luns.ts) ----

  lunByName(name: string): LunRecord {
    return this.lunTable.lunByName(name);
  }

  hasLun(name: string): boolean {
    return this.lunTable.hasLun(name);
  }

  /** The LUNs users see (not the internal snapshot target volumes). */
  userLuns(): LunRecord[] {
    return this.lunTable.userLuns();
  }

  /** The snapshot target volume of a LUN, if it has one. */
  targetOf(lunId: number): LunRecord | undefined {
    return this.lunTable.targetOf(lunId);
  }

  /** Creates the internal target volume of a LUN's snapshots (committed before it returns). */
  createTarget(owner: LunRecord, sizeBytes: number): Promise<LunRecord> {
    return this.lunTable.createTarget(owner, sizeBytes);
  }

  /** Removes a target volume (its LUN has no snapshot left); its RSEGs are free once committed. */
  removeTarget(target: LunRecord, releaseUnwritten: () => void): Promise<void> {
    return this.lunTable.removeTarget(target, releaseUnwritten);
  }

  createLun(name: string, sizeBytes: number, cloneOf?: LunRecord['cloneOf']): Promise<LunRecord> {
    return this.lunTable.createLun(name, sizeBytes, cloneOf);
  }

  /** Removes a LUN whose stack is closed; its RSEGs become free once the removal is committed. */
  removeLun(name: string, releaseUnwritten: () => void = () => {}): Promise<void> {
    return this.lunTable.removeLun(name, releaseUnwritten);
  }

  resizeLun(name: string, sizeBytes: number): Promise<void> {
    return this.lunTable.resizeLun(name, sizeBytes);
  }

  /** The most data the pool can ever hold: what a single LUN may not exceed. */
  capacityBytes(): number {
    return this.lunTable.capacityBytes();
  }

  /** Applies a metadata op now and makes it durable with the next commit (which this awaits). */
  async commitOp(op: MetadataOp): Promise<void> {
    this.checkWritable();
    applyMetadataOp(this.metadata, op);
    this.queue(op);
    await this.commit();
  }

  freeBytes(): number {
    return this.allocator.freeBytes();
  }

  /** Flushes, writes a clean-shutdown checkpoint and closes the drives. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.options.readOnly && this.sessionStarted) {
        await this.commit();
        await this.store.checkpoint((committed) => {
          committed.cleanShutdown = true;
          // everything was flushed
          for (const rstore of committed.rstores.values()) delete rstore.dirty;
          // and every snap-point mark committed
          for (const snapPoint of committed.snapPoints.values()) snapPoint.intents.clear();
        });
      }
    } finally {
      await Promise.all(this.drives.map((drive) => drive.close()));
    }
  }

  /** Closes the drives without writing anything (a simulated crash, or a read-only open). */
  async abandonSession(): Promise<void> {
    this.closed = true;
    for (const rstore of this.rstoreCache.values()) rstore.discardMemory();
    await Promise.all(this.drives.map((drive) => drive.close()));
  }

  get metadataJournalFillRatio(): number {
    return this.store.journalFillRatio;
  }

  /**
   * Runs the crash recovery now when the pool was not shut down cleanly and the open is for
   * writing (with deferSession it would otherwise wait for the first commit). Whatever reads the
   * pool's data to act on it (the snapshot target volumes at open) must come after it: before the
   * resync a block torn by the crash fails its checksum and is "repaired" from a parity that is
   * not yet consistent, and the result is written back.
   */
  async recoverIfUnclean(): Promise<void> {
    if (!this.options.readOnly && !this.sessionStarted && !this.metadata.cleanShutdown)
      await this.startSession();
  }

  private async startSession(): Promise<void> {
    this.sessionStarted = true;
    await repairLabels(this.parts, this.labelDamage);
    if (!this.metadata.cleanShutdown) {
      // After a crash an unmapped RSEG may hold data whose mapping was lost: never trust it to read
      // as zeros.
      this.options.log.warn(
        'pool was not shut down cleanly; unmapped RSEGs will be zeroed before reuse',
      );
      const op: MetadataOp = { kind: 'forget-fresh' };
      applyMetadataOp(this.metadata, op);
      this.queue(op);
      // A snap-point map's region with its intent set may hold changes whose marks were lost.
      const recover: MetadataOp = { kind: 'snappoint-recover' };
      applyMetadataOp(this.metadata, recover);
      this.queue(recover);
      await this.commit();
      await recomputeLostChecksums(this.parts);
      await resyncMirrors(this.parts, this.rowLog, this.rowLogReplay);
    }
    await this.rowLog?.clearAll(); // replayed above (after a clean shutdown none is left)
    this.rowLogReplay = [];
    this.metadata.cleanShutdown = false;
    await this.store.checkpoint((committed) => {
      committed.cleanShutdown = false;
    });
  }

  /** Where member memberIndex of an RStore starts on its drive. */
  memberPhysicalOffset(rstore: RStore, memberIndex: number): number {
    const member = rstore.record.members[memberIndex]!;
    return (
      this.layoutHeader.psegAreaOffsetBytes + member.psegIndex * this.metadata.config.psegSizeBytes
    );
  }

  private checkWritable(): void {
    if (this.options.readOnly) throw new LunfsError('EINVAL', 'pool is open read-only');
    assert(!this.closed, 'pool used after close');
  }
}
