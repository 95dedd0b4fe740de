// The pool: its drives (with their headers), the metadata (live in memory, committed through the
// metadata store), the RSEG allocator and the RStores. It is the MapSpace every thin volume
// allocates from, and the one place where a commit happens: flush the data drives, then append
// the queued metadata ops. LUN management (create, remove, grow) lives here too; the LUN stacks
// themselves are assembled in stack.ts.

import type { Drive } from '../drive/drive.js';
import { decodeDriveHeader, driveHeaderBytes, encodeDriveHeader, type DriveHeader } from '../meta/drive-header.js';
import { MetadataStore, type CopyReport, type QuorumLayout } from '../meta/metadata-store.js';
import { applyMetadataOp, type LunRecord, type MetadataOp, type PoolMetadata, type RaidLevel } from '../meta/pool-metadata.js';
import type { LmapEntry } from '../map/lmap.js';
import { RsegAllocator, type RsegAllocation, type RsegRef } from '../map/rseg-allocator.js';
import type { MapSpace } from '../map/thin-volume.js';
import { RStore, rstoreDataBytes, type DriveGeometry } from '../raid/rstore.js';
import { assert } from '../util/assert.js';
import { makeUuid, type Clock } from '../util/clock.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { Mutex } from '../util/mutex.js';
import {
  checkGeometry, defaultAllocationUnitBytes, defaultPsegSizeBytes, defaultRssSize, defaultStripeUnitBytes, lmapEntryCount, maxQuorumCopies, planLayout, planRedundancySets, psegCountFor, snapshotRecordBytes,
} from './pool-layout.js';

export const sectorBytes = 512;
const lunNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface PoolFormatOptions {
  raidLevel: RaidLevel;
  psegSizeBytes?: number;
  allocationUnitBytes?: number;
  stripeUnitBytes?: number;
  /** Drives per redundancy set (default 8): more drives form several sets. */
  rssSize?: number;
  /** Whether the drives are new sparse files (read as zeros) rather than existing storage. */
  drivesZeroed: boolean;
  clock: Clock;
  random: () => number;
  log: Logger;
}

export interface PoolOpenOptions {
  clock: Clock;
  log: Logger;
  readOnly?: boolean;
  /**
   * Start the write session (crash recovery, the not-clean checkpoint) only at the first commit,
   * so a command refused for bad input writes nothing at all. Nothing may allocate before it.
   */
  deferSession?: boolean;
}

export class Pool implements MapSpace {
  private readonly allocator: RsegAllocator;
  private readonly rstoreCache = new Map<number, RStore>();
  private pending: Array<{ op: MetadataOp; afterCommit?: () => void }> = [];
  private readonly commitMutex = new Mutex();
  private closed = false;
  private sessionStarted = false;

  private constructor(
    readonly drives: Drive[],
    private readonly geometry: DriveGeometry[],
    readonly metadata: PoolMetadata,
    private readonly store: MetadataStore,
    readonly copyReports: CopyReport[],
    private readonly options: PoolOpenOptions,
    private readonly checkpointSlotBytes: number,
  ) {
    this.allocator = new RsegAllocator(metadata);
  }

  /** Writes headers and a first checkpoint on fresh drives. The drives stay open in the result. */
  static async format(drives: Drive[], options: PoolFormatOptions): Promise<Pool> {
    const psegSizeBytes = options.psegSizeBytes ?? defaultPsegSizeBytes;
    const allocationUnitBytes = options.allocationUnitBytes ?? defaultAllocationUnitBytes;
    const stripeUnitBytes = options.stripeUnitBytes ?? defaultStripeUnitBytes;
    checkGeometry(psegSizeBytes, allocationUnitBytes, stripeUnitBytes);
    const minimumDrives = options.raidLevel === 5 ? 3 : options.raidLevel === 1 ? 2 : 1;
    if (drives.length < minimumDrives) throw new LunfsError('EINVAL', `RAID-${options.raidLevel} needs at least ${minimumDrives} drives, got ${drives.length}`);
    const sets = planRedundancySets(drives.length, options.rssSize ?? defaultRssSize, minimumDrives);
    const layout = planLayout(drives.map((drive) => drive.sizeBytes), psegSizeBytes, allocationUnitBytes);
    const poolUuid = makeUuid(options.random);
    const createdAtMs = options.clock.nowMs();
    const quorumCount = Math.min(maxQuorumCopies, drives.length);
    const headers: DriveHeader[] = drives.map((drive, driveIndex) => {
      const psegCount = psegCountFor(drive.sizeBytes, layout, psegSizeBytes);
      if (psegCount < 1) throw new LunfsError('EINVAL', `drive ${drive.path} (${drive.sizeBytes} bytes) is too small: it needs at least ${layout.psegAreaOffsetBytes + psegSizeBytes} bytes`);
      return {
        poolUuid, driveUuid: makeUuid(options.random), driveIndex, driveCount: drives.length, driveSizeBytes: drive.sizeBytes,
        psegSizeBytes, psegCount, ...layout, holdsQuorumCopy: driveIndex < quorumCount, createdAtMs,
      };
    });
    const metadata: PoolMetadata = {
      config: { poolUuid, createdAtMs, raidLevel: options.raidLevel, psegSizeBytes, allocationUnitBytes, stripeUnitBytes, lmapEntryCount },
      drives: headers.map((header) => ({
        index: header.driveIndex, uuid: header.driveUuid, sizeBytes: header.driveSizeBytes, psegCount: header.psegCount, zeroedAtCreation: options.drivesZeroed, rssId: sets.findIndex((set) => set.includes(header.driveIndex)),
      })),
      rss: sets.map((driveIndexes, id) => ({ id, driveIndexes })),
      rstores: new Map(),
      luns: new Map(),
      snapshots: new Map(),
      nextLunId: 1,
      nextRstoreId: 1,
      nextSnapshotId: 1,
      cleanShutdown: true,
    };
    await Promise.all(drives.map(async (drive, index) => {
      await drive.write(0, encodeDriveHeader(headers[index]!));
      await drive.flush();
    }));
    const copies = drives.slice(0, quorumCount).map((drive, driveIndex) => ({ drive, driveIndex }));
    await MetadataStore.format(copies, quorumLayoutOf(headers[0]!), metadata, options.log);
    return Pool.open(drives, { clock: options.clock, log: options.log });
  }

  /** Checks the drives' headers (same pool, right order, none missing), then recovers the metadata. */
  static async open(drives: Drive[], options: PoolOpenOptions): Promise<Pool> {
    const headers = await readHeaders(drives);
    const first = headers[0]!;
    const copies = headers.flatMap((header, index) => (header.holdsQuorumCopy ? [{ drive: drives[index]!, driveIndex: index }] : []));
    const { store, metadata, reports } = await MetadataStore.open(copies, quorumLayoutOf(first), options.log);
    metadata.drives.forEach((record, index) => {
      if (headers[index]!.driveUuid !== record.uuid) throw new LunfsError('ECORRUPT', `drive ${drives[index]!.path} does not match the pool metadata for drive ${index}`);
    });
    const geometry = headers.map((header, index) => ({ drive: drives[index]!, psegAreaOffsetBytes: header.psegAreaOffsetBytes, psegSizeBytes: header.psegSizeBytes }));
    const pool = new Pool(drives, geometry, metadata, store, reports, options, first.checkpointSlotBytes);
    if (!options.readOnly && !options.deferSession) await pool.startSession();
    return pool;
  }

  get allocationUnitBytes(): number {
    return this.metadata.config.allocationUnitBytes;
  }

  // ---- MapSpace ----

  /**
   * Whether the pool metadata has room for one more snapshot record: a checkpoint must always
   * fit its slot (estimated: map entries, RSDs, snapshot records, and 64 KiB for the rest).
   */
  hasRoomForSnapshotRecord(): boolean {
    let mapped = 0;
    for (const lun of this.metadata.luns.values()) mapped += lun.map.mappedCount;
    const snapshotsBytes = JSON.stringify([...this.metadata.snapshots.values()]).length;
    const estimate = 64 * 1024 + mapped * 12 + this.metadata.rstores.size * 160 + this.metadata.luns.size * 200 + snapshotsBytes + snapshotRecordBytes;
    return estimate <= this.checkpointSlotBytes - 64;
  }

  /** Units of free space held back for reserved snapshots (set by the controller). */
  reservedUnits: () => number = () => 0;

  allocate(hint?: RsegRef, useReservation = false): RsegAllocation {
    this.checkWritable();
    assert(this.sessionStarted, 'allocation before the write session started (fresh RSEG flags not yet trusted)');
    if (!useReservation) {
      const reserved = this.reservedUnits();
      if (reserved > 0 && this.allocator.freeBytes() - reserved * this.allocationUnitBytes < this.allocationUnitBytes) {
        throw new LunfsError('ENOSPC', `the pool is full: its remaining free space is reserved for snapshots (${reserved} units)`);
      }
    }
    const allocation = this.allocator.allocate(hint);
    if (allocation.createdRstore) {
      const record = allocation.createdRstore;
      this.queue({ kind: 'rstore-create', rstore: { ...record, members: record.members.map((member) => ({ ...member })) } });
    }
    return allocation;
  }

  abandon(allocation: RsegAllocation): void {
    this.allocator.release([allocation]);
  }

  rstore(rstoreId: number): RStore {
    let rstore = this.rstoreCache.get(rstoreId);
    if (!rstore) {
      const record = this.metadata.rstores.get(rstoreId);
      assert(record !== undefined, `unknown RStore ${rstoreId}`);
      rstore = new RStore(record, this.geometry, this.metadata.config.stripeUnitBytes);
      this.rstoreCache.set(rstoreId, rstore);
    }
    return rstore;
  }

  queue(op: MetadataOp, afterCommit?: () => void): void {
    this.pending.push({ op, afterCommit });
  }

  /** Flushes every data drive, then makes the queued metadata durable, then runs afterCommit hooks. */
  async commit(): Promise<void> {
    if (!this.sessionStarted) await this.startSession();
    return this.commitMutex.run(async () => {
      const batch = this.pending;
      this.pending = [];
      try {
        await Promise.all(this.drives.map((drive) => drive.flush()));
        await this.store.commit(batch.map((entry) => entry.op));
      } catch (error) {
        this.pending = batch.concat(this.pending); // not durable: try again at the next commit
        throw error;
      }
      for (const entry of batch) entry.afterCommit?.();
    });
  }

  // ---- LUN management ----

  lunByName(name: string): LunRecord {
    for (const lun of this.metadata.luns.values()) if (lun.name === name && !lun.role) return lun;
    throw new LunfsError('ENOENT', `no LUN named '${name}'`);
  }

  hasLun(name: string): boolean {
    return this.userLuns().some((lun) => lun.name === name);
  }

  /** The LUNs users see (not the internal snapshot target volumes). */
  userLuns(): LunRecord[] {
    return [...this.metadata.luns.values()].filter((lun) => !lun.role);
  }

  /** The snapshot target volume of a LUN, if it has one. */
  targetOf(lunId: number): LunRecord | undefined {
    for (const lun of this.metadata.luns.values()) if (lun.role === 'target' && lun.ownerLunId === lunId) return lun;
    return undefined;
  }

  /** Creates the internal target volume of a LUN's snapshots (committed before it returns). */
  async createTarget(owner: LunRecord, sizeBytes: number): Promise<LunRecord> {
    this.checkWritable();
    await this.commitOp({ kind: 'lun-create', lunId: this.metadata.nextLunId, name: `.snapshot-target-${owner.id}`, sizeBytes, createdAtMs: this.options.clock.nowMs(), role: 'target', ownerLunId: owner.id });
    return this.targetOf(owner.id)!;
  }

  /** Removes a target volume (its LUN has no snapshot left); its RSEGs are free once committed. */
  async removeTarget(target: LunRecord, releaseUnwritten: () => void): Promise<void> {
    assert(target.role === 'target', 'removeTarget of a user LUN');
    await this.removeVolume(target, releaseUnwritten);
  }

  /** Removes a LUN or target volume record; its RSEGs go back to the allocator once that is committed. */
  private async removeVolume(record: LunRecord, releaseUnwritten: () => void): Promise<void> {
    releaseUnwritten();
    const entries: LmapEntry[] = [];
    record.map.forEachMapped((_, entry) => entries.push(entry));
    applyMetadataOp(this.metadata, { kind: 'lun-remove', lunId: record.id });
    this.queue({ kind: 'lun-remove', lunId: record.id }, () => this.allocator.release(entries));
    await this.commit();
  }

  /** Applies a metadata op now and makes it durable with the next commit (which this awaits). */
  async commitOp(op: MetadataOp): Promise<void> {
    this.checkWritable();
    applyMetadataOp(this.metadata, op);
    this.queue(op);
    await this.commit();
  }

  async createLun(name: string, sizeBytes: number): Promise<LunRecord> {
    this.checkWritable();
    checkLunName(name);
    if (this.hasLun(name)) throw new LunfsError('EEXIST', `a LUN named '${name}' exists already`);
    this.checkLunSize(sizeBytes);
    await this.commitOp({ kind: 'lun-create', lunId: this.metadata.nextLunId, name, sizeBytes, createdAtMs: this.options.clock.nowMs() });
    this.options.log.info({ lun: name, sizeBytes }, 'LUN created');
    return this.lunByName(name);
  }

  /** Removes a LUN whose stack is closed; its RSEGs become free once the removal is committed. */
  async removeLun(name: string, releaseUnwritten: () => void = () => {}): Promise<void> {
    this.checkWritable();
    await this.removeVolume(this.lunByName(name), releaseUnwritten);
    this.options.log.info({ lun: name }, 'LUN removed');
  }

  async resizeLun(name: string, sizeBytes: number): Promise<void> {
    this.checkWritable();
    const lun = this.lunByName(name);
    this.checkLunSize(sizeBytes);
    if (sizeBytes < lun.sizeBytes) throw new LunfsError('EINVAL', `LUN '${name}' is ${lun.sizeBytes} bytes; shrinking to ${sizeBytes} is not supported`);
    if (sizeBytes === lun.sizeBytes) return;
    await this.commitOp({ kind: 'lun-resize', lunId: lun.id, sizeBytes });
    this.options.log.info({ lun: name, sizeBytes }, 'LUN resized');
  }

  /** The most data the pool can ever hold: what a single LUN may not exceed. */
  capacityBytes(): number {
    const { raidLevel, psegSizeBytes } = this.metadata.config;
    let bytes = 0;
    for (const rss of this.metadata.rss) {
      const psegs = rss.driveIndexes.map((index) => this.metadata.drives[index]!.psegCount);
      const striped = raidLevel === 0 || raidLevel === 5;
      const rstores = striped ? Math.min(...psegs) : Math.min(Math.floor(psegs.reduce((a, b) => a + b, 0) / 2), psegs.reduce((a, b) => a + b, 0) - Math.max(...psegs));
      const width = striped ? rss.driveIndexes.length : 2;
      bytes += rstores * rstoreDataBytes({ raidLevel, members: new Array(width).fill({ driveIndex: 0, psegIndex: 0 }) } as never, psegSizeBytes);
    }
    return bytes;
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
        await this.store.checkpoint((committed) => { committed.cleanShutdown = true; });
      }
    } finally {
      await Promise.all(this.drives.map((drive) => drive.close()));
    }
  }

  /** Closes the drives without writing anything (a simulated crash, or a read-only open). */
  async abandonSession(): Promise<void> {
    this.closed = true;
    await Promise.all(this.drives.map((drive) => drive.close()));
  }

  get metadataJournalFillRatio(): number {
    return this.store.journalFillRatio;
  }

  private async startSession(): Promise<void> {
    this.sessionStarted = true;
    if (!this.metadata.cleanShutdown) {
      // After a crash an unmapped RSEG may hold data whose mapping was lost: never trust it to read as zeros.
      this.options.log.warn('pool was not shut down cleanly; unmapped RSEGs will be zeroed before reuse');
      const op: MetadataOp = { kind: 'forget-fresh' };
      applyMetadataOp(this.metadata, op);
      this.queue(op);
      await this.commit();
      await this.resyncMirrors();
    }
    this.metadata.cleanShutdown = false;
    await this.store.checkpoint((committed) => { committed.cleanShutdown = false; });
  }

  /**
   * After a crash the mirrors of a RAID-1 RSEG may differ where writes were in flight, and reads
   * that alternate between mirrors would return different data for the same block. Each mapped
   * RSEG is made equal again from one mirror (any mirror holds data that was written there).
   * The clean-shutdown flag stays false until this is done, so a crash during it repeats it.
   */
  private async resyncMirrors(): Promise<void> {
    const unitBytes = this.metadata.config.allocationUnitBytes;
    const buffer = Buffer.alloc(unitBytes);
    // RAID-5: every row's parity is made the XOR of its data again (no write-intent record yet).
    let resynced = false;
    for (const record of this.metadata.rstores.values()) {
      if (record.raidLevel !== 5) continue;
      await this.rstore(record.id).resyncParity();
      resynced = true;
    }
    const mapped: LmapEntry[] = [];
    for (const lun of this.metadata.luns.values()) lun.map.forEachMapped((_, entry) => mapped.push(entry));
    for (const entry of mapped) {
      const rstore = this.rstore(entry.rstoreId);
      if (rstore.record.raidLevel !== 1) continue;
      await rstore.read(entry.rsegIndex * unitBytes, buffer);
      await rstore.write(entry.rsegIndex * unitBytes, buffer);
    }
    if (mapped.length > 0 || resynced) await Promise.all(this.drives.map((drive) => drive.flush()));
  }

  private checkLunSize(sizeBytes: number): void {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new LunfsError('EINVAL', `invalid LUN size ${sizeBytes}`);
    if (sizeBytes % sectorBytes !== 0) throw new LunfsError('EINVAL', `LUN size ${sizeBytes} is not a whole number of ${sectorBytes}-byte sectors`);
    const capacity = this.capacityBytes();
    if (sizeBytes > capacity) throw new LunfsError('EFBIG', `LUN size ${sizeBytes} is larger than the pool can ever map (${capacity} bytes)`);
  }

  private checkWritable(): void {
    if (this.options.readOnly) throw new LunfsError('EINVAL', 'pool is open read-only');
    assert(!this.closed, 'pool used after close');
  }
}

export function checkLunName(name: string): void {
  if (!lunNamePattern.test(name)) {
    throw new LunfsError('EINVAL', `invalid LUN name '${name}': use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

function quorumLayoutOf(header: DriveHeader): QuorumLayout {
  return { quorumOffsetBytes: header.quorumOffsetBytes, checkpointSlotBytes: header.checkpointSlotBytes, journalBytes: header.journalBytes };
}

async function readHeaders(drives: Drive[]): Promise<DriveHeader[]> {
  if (drives.length === 0) throw new LunfsError('EINVAL', 'no drives given');
  const headers = await Promise.all(drives.map(async (drive) => {
    const buffer = Buffer.alloc(driveHeaderBytes);
    await drive.read(0, buffer);
    const decoded = decodeDriveHeader(buffer);
    if (!decoded.ok) throw new LunfsError('ECORRUPT', `drive ${drive.path}: ${decoded.reason}`);
    return decoded.header;
  }));
  const poolUuid = headers[0]!.poolUuid;
  headers.forEach((header, position) => {
    if (header.poolUuid !== poolUuid) throw new LunfsError('EINVAL', `drive ${drives[position]!.path} belongs to another pool (${header.poolUuid}, not ${poolUuid})`);
  });
  // The count first: with a drive missing, every drive after it would look out of order.
  const driveCount = headers[0]!.driveCount;
  if (headers.length !== driveCount) {
    const given = new Set(headers.map((header) => header.driveIndex));
    const missing = [...Array(driveCount).keys()].filter((index) => !given.has(index));
    throw new LunfsError('EINVAL', `the pool has ${driveCount} drives but ${headers.length} were given${missing.length > 0 ? `; missing drive index ${missing.join(', ')}` : ''}`);
  }
  headers.forEach((header, position) => {
    if (header.driveIndex !== position) {
      throw new LunfsError('EINVAL', `drives given in the wrong order: ${drives[position]!.path} is drive ${header.driveIndex} of the pool but was given as drive ${position}`);
    }
  });
  return headers;
}
