// The snapshots of one LUN: their records (in the pool metadata), the LUN's snapshot epoch, the
// per-chunk lock mechanism and the target volume. It answers the destage pipeline's question
// "which snapshots still need this chunk's original?" (claim 14: search the bitmaps), preserves
// it once for all of them, and serves reads and writes of the snapshots (seed 002).
//
// Epochs: the LUN's epoch rises by one at each snapshot; the cache tags every write with the
// epoch at which it was accepted. Snapshot S holds exactly the writes tagged below S.epoch.
// Invariant: while S's bit for chunk c is clear, the source below the cache holds S's data for c,
// except for cached writes tagged below S.epoch that are not yet destaged.

import { forEachPiece } from '../block/block-device.js';
import type { MapSpace, ThinVolume } from '../map/thin-volume.js';
import type { LunRecord, MetadataOp, PoolMetadata, SnapshotRecord } from '../meta/pool-metadata.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { ChunkLockManager } from '../util/chunk-locks.js';
import { zeroSlot } from './log-file.js';
import type { SnapshotImage } from './target-metadata.js';
import { planTarget } from './target-layout.js';
import { TargetVolume } from './target-volume.js';
import { maxSnapshotsPerLun } from '../util/constants.js';

/** What a snapshot read needs from the LUN's cache: its writes older than an epoch. */
export interface EpochOverlay {
  overlayBefore(offsetBytes: number, target: Buffer, epoch: number): void;
}

/**
 * What the snapshot layer needs of the pool, which sits above it (src/volume/pool.ts provides it):
 * the map space its target volume lives in, the snapshot records, and the creation, removal and
 * commit of the target volume's record. A narrow view, so that snapshot/ imports nothing from
 * volume/ (issue 13: folders import only from below).
 */
export interface SnapshotSpace extends MapSpace {
  readonly allocationUnitBytes: number;
  readonly metadata: Pick<PoolMetadata, 'snapshots'>;
  capacityBytes(): number;
  targetOf(lunId: number): LunRecord | undefined;
  createTarget(owner: LunRecord, sizeBytes: number): Promise<LunRecord>;
  removeTarget(target: LunRecord, releaseUnwritten: () => void): Promise<void>;
  commitOp(op: MetadataOp): Promise<void>;
  commit(): Promise<void>;
}

export class SnapshotSet {
  /** The epoch the LUN's cache tags new writes with. */
  epoch: number;
  /**
   * Snapshots being taken: while there are some, the cache sends no write straight below (a write
   * on its way there when the epoch rises would belong to the snapshot, yet be in neither the
   * cache nor the source when the snapshot reads it).
   */
  creating = 0;
  readonly locks = new ChunkLockManager();
  /** Chunks every valid snapshot held at an epoch: a destage over them needs no bitmap search. */
  private readonly cover = new PreservedCover();
  private target: TargetVolume | undefined;
  private targetCreation: Promise<TargetVolume> | undefined;
  private readonly zeroChunk: Buffer;
  /** Preservations, snapshot reads and writes under way: the target is not removed under them. */
  private busyCount = 0;
  /**
   * Snapshots no one reads any more at some chunks: a snapclone's base where the clone holds the
   * unit durably (Controller.thinOf). needing() skips them there, so the LUN's overwrite of such a
   * chunk preserves nothing for them (seed 004 [0104]: once the snapclone has the data, the
   * sharing with it ends).
   */
  private readonly released = new Map<number, (chunkIndex: number) => boolean>();
  /** Writes to snapshots under way, and what waits for them to end (takeOf). */
  private snapshotWrites = 0;
  private writesDone: Array<() => void> = [];
  /** Set while a snapshot of a snapshot is taken: new snapshot writes wait for it. */
  private writeBarrier: Promise<void> | undefined;
  /** The commits recording snapshots' first writes (SnapshotRecord.written), while on their way. */
  private readonly writtenMarks = new Map<number, Promise<void>>();
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly pool: SnapshotSpace,
    readonly lun: LunRecord,
    readonly chunkBytes: number,
    private readonly log: Logger,
  ) {
    assert(pool.allocationUnitBytes % chunkBytes === 0, 'a chunk must divide the allocation unit');
    this.epoch = Math.max(0, ...this.all().map((snapshot) => snapshot.epoch));
    this.zeroChunk = Buffer.alloc(chunkBytes);
  }

  /** Opens the target volume if the LUN has one (reads every bitmap and log file). */
  async open(readOnly: boolean): Promise<void> {
    const record = this.pool.targetOf(this.lun.id);
    if (!record || this.target) return;
    if (this.all().length === 0) {
      // A crash after the last snapshot's removal, or during the target's creation: no
      // snapshot needs it (snapshot records are committed only once their target is formatted).
      if (!readOnly) await this.pool.removeTarget(record, () => {});
      return;
    }
    const live = new Set(
      this.all()
        .filter((snapshot) => snapshot.state === 'valid')
        .map((snapshot) => snapshot.id),
    );
    this.target = await TargetVolume.open(this.pool, record, live, this.log, readOnly, (id) =>
      this.isLive(id),
    );
    this.updateReservationUse();
  }

  private isLive(snapshotId: number): boolean {
    return this.pool.metadata.snapshots.get(snapshotId)?.state === 'valid';
  }

  /** The LUN's snapshots (of snapshots too), oldest first. */
  all(): SnapshotRecord[] {
    return [...this.pool.metadata.snapshots.values()]
      .filter((snapshot) => snapshot.lunId === this.lun.id)
      .sort((a, b) => a.epoch - b.epoch || a.id - b.id);
  }

  byName(name: string): SnapshotRecord {
    const found = this.all().find((snapshot) => snapshot.name === name);
    if (!found)
      throw new LunfsError('ENOENT', `LUN '${this.lun.name}' has no snapshot named '${name}'`);
    return found;
  }

  get allowsWriteThrough(): boolean {
    return this.creating === 0;
  }

  /** Whether destages must look for originals to preserve. */
  get active(): boolean {
    for (const snapshot of this.pool.metadata.snapshots.values())
      if (snapshot.lunId === this.lun.id && snapshot.state === 'valid') return true;
    return false;
  }

  image(snapshotId: number): SnapshotImage | undefined {
    return this.target?.state.snapshots.get(snapshotId);
  }

  get targetVolume(): TargetVolume | undefined {
    return this.target;
  }

  async ensureTarget(): Promise<TargetVolume> {
    if (this.target) return this.target;
    this.targetCreation ??= (async () => {
      const { geometry, sizeBytes } = planTarget(
        this.chunkBytes,
        this.pool.allocationUnitBytes,
        this.pool.capacityBytes(),
      );
      const record = await this.pool.createTarget(this.lun, sizeBytes);
      try {
        this.target = await TargetVolume.format(this.pool, record, geometry, this.log, (id) =>
          this.isLive(id),
        );
      } catch (error) {
        await this.pool.removeTarget(record, () => {}); // e.g. ENOSPC: nothing is left behind
        throw error;
      }
      return this.target;
    })().finally(() => (this.targetCreation = undefined));
    return this.targetCreation;
  }

  /** The snapshot instant: a new record at the next epoch (the caller makes it durable). */
  take(id: number, name: string, reservedBytes: number, createdAtMs: number): SnapshotRecord {
    assert(this.target !== undefined, 'snapshot taken before its target exists');
    if (this.all().length >= maxSnapshotsPerLun)
      throw new LunfsError(
        'ENOSPC',
        `LUN '${this.lun.name}' has ${maxSnapshotsPerLun} snapshots, the most one LUN may have`,
      );
    this.epoch += 1;
    return {
      id,
      lunId: this.lun.id,
      name,
      epoch: this.epoch,
      createdAtMs,
      sizeBytes: this.lun.sizeBytes,
      reservedBytes,
      state: 'valid',
      sourceKind: 'lun',
      sourceId: this.lun.id,
    };
  }

  /**
   * A snapshot of snapshot source (issue 15), named name: it holds source's data at this instant
   * and diverges from it from then on, both writable. register gives the record its id and puts
   * it into the pool metadata in memory; this calls it in the same turn as the copy of source's
   * bitmap and log file into the new image, so that no preservation sees the one without the
   * other. Resolves once the copy is durable in the target (the caller then commits the record:
   * never before, or a crash between the two would leave a valid snapshot without its image).
   * Writes to the LUN's snapshots wait meanwhile (one in place into a slot source alone holds
   * would reach the copy), and those acknowledged before are made durable first.
   */
  async takeOf(
    source: SnapshotRecord,
    fields: { name: string; reservedBytes: number; createdAtMs: number },
    register: (record: Omit<SnapshotRecord, 'id'>) => SnapshotRecord,
  ): Promise<SnapshotRecord> {
    this.checkUsable(source);
    const target = await this.ensureTarget();
    if (this.all().length >= maxSnapshotsPerLun)
      throw new LunfsError(
        'ENOSPC',
        `LUN '${this.lun.name}' has ${maxSnapshotsPerLun} snapshots, the most one LUN may have`,
      );
    let release!: () => void;
    const barrier = new Promise<void>((resolve) => (release = resolve));
    while (this.writeBarrier) await this.writeBarrier;
    this.writeBarrier = barrier;
    try {
      while (this.snapshotWrites > 0)
        await new Promise<void>((resolve) => this.writesDone.push(resolve));
      // The source's acknowledged writes are durable before the copy shares their slots.
      await target.flush();
      this.checkUsable(source); // deleted or invalidated meanwhile
      const record = register({
        lunId: this.lun.id,
        name: fields.name,
        epoch: source.epoch,
        createdAtMs: fields.createdAtMs,
        sizeBytes: source.sizeBytes,
        reservedBytes: fields.reservedBytes,
        state: 'valid',
        sourceKind: 'snapshot',
        sourceId: source.id,
        ...(source.written ? { written: true } : {}),
      });
      // the live copy is made in this turn
      const copied = target.copyImage(source.id, record.id, record.reservedBytes > 0);
      try {
        await copied;
      } catch (error) {
        await this.abandon(record);
        throw error;
      }
      return record;
    } finally {
      this.writeBarrier = undefined;
      release();
    }
  }

  /**
   * Valid snapshots that need chunk's current source data preserved before data of epoch is written
   * over it.
   */
  needing(chunkIndex: number, epoch: number): SnapshotRecord[] {
    const found: SnapshotRecord[] = [];
    for (const snapshot of this.pool.metadata.snapshots.values()) {
      if (snapshot.lunId !== this.lun.id || snapshot.state !== 'valid' || snapshot.epoch > epoch)
        continue;
      if (chunkIndex * this.chunkBytes >= snapshot.sizeBytes) continue;
      if (this.image(snapshot.id)?.bitmap.get(chunkIndex)) continue;
      if (this.released.get(snapshot.id)?.(chunkIndex)) continue;
      found.push(snapshot);
    }
    return found;
  }

  /** From now on needing() skips snapshot snapshotId at the chunks where released says so. */
  releaseWhere(snapshotId: number, released: (chunkIndex: number) => boolean): void {
    this.released.set(snapshotId, released);
  }

  /**
   * Copy on write, called by the destage pipeline holding the chunk's lock, before data of epoch
   * reaches the source: the chunk's original goes to the target once, for every snapshot that
   * needs it. A snapshot without a reservation that cannot get space is invalidated; the LUN's
   * write goes on either way.
   */
  async preserve(chunkIndex: number, epoch: number, source: ThinVolume): Promise<void> {
    if (this.cover.covers(chunkIndex, this.epoch)) return; // every snapshot holds it already
    const needing = this.needing(chunkIndex, epoch);
    if (needing.length > 0)
      await this.whileBusy(() => this.preserveFor(needing, chunkIndex, source));
    // Held by every valid snapshot, newer ones than the data's epoch included: the search just
    // made says so when it covered them all and found none; otherwise search once more.
    const searchedAll = needing.length === 0 && epoch >= this.epoch;
    if (searchedAll || this.needing(chunkIndex, Number.POSITIVE_INFINITY).length === 0)
      this.cover.set(chunkIndex, this.epoch);
  }

  private async preserveFor(
    needing: SnapshotRecord[],
    chunkIndex: number,
    source: ThinVolume,
  ): Promise<void> {
    const target = this.target;
    assert(target !== undefined, 'snapshots without a target volume');
    const startBytes = chunkIndex * this.chunkBytes;
    const reserved = needing.some((snapshot) => snapshot.reservedBytes > 0);
    // The original is read straight into its place in the batch (preservation-batch.ts).
    const fill = async (place: Buffer): Promise<boolean> => {
      if (!source.holdsData(startBytes)) return false; // zeros need no slot
      const lengthBytes = Math.min(this.chunkBytes, source.sizeBytes - startBytes);
      // Every byte is read over, but for the tail of a last chunk cut short by the LUN's end.
      if (lengthBytes < this.chunkBytes) place.fill(0, lengthBytes);
      await source.read(startBytes, place.subarray(0, lengthBytes));
      return !place.equals(this.zeroChunk);
    };
    // A snapshot taken of one of these while the preservation is on its way joins ids
    // (TargetVolume.copyImage): it needs this original as much.
    const ids = needing.map((snapshot) => snapshot.id);
    try {
      await target.preserveBatched(chunkIndex, ids, reserved, fill);
    } catch (error) {
      if (!(error instanceof LunfsError) || error.code !== 'ENOSPC') throw error;
      if (reserved)
        this.log.error(
          { chunk: chunkIndex },
          'a reserved snapshot could not preserve data: its reservation was too small',
        );
      const all = ids.flatMap((id) => this.pool.metadata.snapshots.get(id) ?? []);
      await this.invalidate(all, 'the pool ran out of space to preserve original data');
    }
  }

  async invalidate(given: SnapshotRecord[], reason: string): Promise<void> {
    // A snapshot removed meanwhile (a preservation for it was under way) has nothing left to
    // invalidate.
    const snapshots = given.filter(
      (snapshot) => this.pool.metadata.snapshots.get(snapshot.id) === snapshot,
    );
    let committed = false;
    for (const snapshot of snapshots) {
      if (snapshot.state !== 'valid') continue;
      // Removed while the commit of an earlier one in this list was awaited: nothing to record.
      if (this.pool.metadata.snapshots.get(snapshot.id) !== snapshot) continue;
      await this.pool.commitOp({ kind: 'snapshot-invalidate', snapshotId: snapshot.id, reason });
      committed = true;
      this.log.warn(
        { snapshot: `${this.lun.name}@${snapshot.name}`, reason },
        'snapshot invalidated',
      );
    }
    // A snapshot found invalid already may be so only in memory: another preservation's
    // invalidation of it can still be on its way to the pool metadata. The drop of its image must
    // never be durable before that (after a crash the snapshot would be valid and read the source
    // where its originals were), so this waits for a commit that follows it.
    if (!committed && snapshots.length > 0) await this.pool.commit();
    this.updateReservationUse();
    try {
      // its space goes back to the pool
      await this.target?.drop(snapshots.map((snapshot) => snapshot.id));
    } catch (error) {
      // The target may be too full even to record the drop: the snapshot is invalid in the pool
      // metadata all the same, and its image is dropped when the pool next opens.
      this.log.warn({ err: error }, 'invalid snapshot image not dropped yet');
    }
  }

  /** Target metadata writes may use reserved space while a valid reserved snapshot exists. */
  updateReservationUse(): void {
    if (this.target)
      this.target.reservation.use = this.all().some(
        (snapshot) => snapshot.state === 'valid' && snapshot.reservedBytes > 0,
      );
  }

  /**
   * Reads snapshot data: from the target where the bitmap says so, else the source as of the
   * snapshot instant.
   */
  async read(
    snapshot: SnapshotRecord,
    offsetBytes: number,
    target: Buffer,
    source: ThinVolume,
    cache: EpochOverlay,
  ): Promise<void> {
    this.checkUsable(snapshot);
    const pieces: Promise<void>[] = [];
    forEachPiece(
      offsetBytes,
      target.length,
      this.chunkBytes,
      (chunkIndex, inChunk, length, inRequest) => {
        const slice = target.subarray(inRequest, inRequest + length);
        pieces.push(
          this.whileBusy(() =>
            this.locks.withChunks([chunkIndex], () =>
              this.readChunk(snapshot, chunkIndex, inChunk, slice, source, cache),
            ),
          ),
        );
      },
    );
    await Promise.all(pieces);
    this.checkUsable(snapshot); // invalidated while reading: the data may be incomplete
  }

  /** Writes to a snapshot land in its own image in the target (seed 002, claims 1-10). */
  async write(
    snapshot: SnapshotRecord,
    offsetBytes: number,
    data: Buffer,
    source: ThinVolume,
    cache: EpochOverlay,
  ): Promise<void> {
    while (this.writeBarrier) await this.writeBarrier;
    this.checkUsable(snapshot);
    this.snapshotWrites += 1;
    try {
      await this.markWritten(snapshot);
      await this.writePieces(snapshot, offsetBytes, data, source, cache);
    } finally {
      this.snapshotWrites -= 1;
      if (this.snapshotWrites === 0) {
        const waiters = this.writesDone;
        this.writesDone = [];
        for (const resolve of waiters) resolve();
      }
    }
  }

  private async writePieces(
    snapshot: SnapshotRecord,
    offsetBytes: number,
    data: Buffer,
    source: ThinVolume,
    cache: EpochOverlay,
  ): Promise<void> {
    const pieces: Promise<void>[] = [];
    forEachPiece(
      offsetBytes,
      data.length,
      this.chunkBytes,
      (chunkIndex, inChunk, length, inRequest) => {
        const piece = data.subarray(inRequest, inRequest + length);
        pieces.push(
          this.whileBusy(() =>
            this.locks.withChunks([chunkIndex], () =>
              this.writeChunk(snapshot, chunkIndex, inChunk, piece, source, cache),
            ),
          ),
        );
      },
    );
    const results = await Promise.allSettled(pieces);
    const failure = results.find(
      (result): result is PromiseRejectedResult => result.status === 'rejected',
    );
    if (failure) throw failure.reason;
  }

  /** Records durably, before its first write lands, that a snapshot no longer holds its epoch. */
  private async markWritten(snapshot: SnapshotRecord): Promise<void> {
    let marking = this.writtenMarks.get(snapshot.id);
    if (!marking) {
      if (snapshot.written) return;
      marking = this.pool.commitOp({ kind: 'snapshot-written', snapshotId: snapshot.id });
      this.writtenMarks.set(snapshot.id, marking);
      // Once durable, later writes find snapshot.written and await nothing; a failed commit is
      // tried again by the next write.
      void marking.then(
        () => this.writtenMarks.delete(snapshot.id),
        () => {
          this.writtenMarks.delete(snapshot.id);
          delete snapshot.written;
        },
      );
    }
    await marking;
  }

  private async whileBusy<T>(task: () => Promise<T>): Promise<T> {
    this.busyCount += 1;
    try {
      return await task();
    } finally {
      this.busyCount -= 1;
      if (this.busyCount === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    }
  }

  private async idle(): Promise<void> {
    while (this.busyCount > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private async readChunk(
    snapshot: SnapshotRecord,
    chunkIndex: number,
    inChunk: number,
    slice: Buffer,
    source: ThinVolume,
    cache: EpochOverlay,
  ): Promise<void> {
    this.checkUsable(snapshot); // it may have gone while this waited for the chunk's lock
    const image = this.image(snapshot.id);
    if (image?.bitmap.get(chunkIndex)) {
      const slot = image.log.get(chunkIndex);
      assert(
        slot !== undefined,
        `snapshot ${snapshot.id}: bit set for chunk ${chunkIndex} without a log pointer`,
      );
      await this.target!.readSlot(slot, inChunk, slice);
      return;
    }
    const offsetBytes = chunkIndex * this.chunkBytes + inChunk;
    await source.read(offsetBytes, slice);
    cache.overlayBefore(offsetBytes, slice, snapshot.epoch);
  }

  private async writeChunk(
    snapshot: SnapshotRecord,
    chunkIndex: number,
    inChunk: number,
    piece: Buffer,
    source: ThinVolume,
    cache: EpochOverlay,
  ): Promise<void> {
    this.checkUsable(snapshot); // it may have gone while this waited for the chunk's lock
    const target = this.target!;
    const image = this.image(snapshot.id);
    const slot = image?.bitmap.get(chunkIndex) ? image.log.get(chunkIndex) : undefined;
    if (slot !== undefined && slot !== zeroSlot && target.referenceCount(slot) === 1) {
      await target.writeSlot(slot, inChunk, piece); // its own chunk already
      return;
    }
    const whole = Buffer.alloc(this.chunkBytes);
    const viewBytes = Math.min(this.chunkBytes, snapshot.sizeBytes - chunkIndex * this.chunkBytes);
    if (inChunk > 0 || piece.length < viewBytes)
      await this.readChunk(snapshot, chunkIndex, 0, whole.subarray(0, viewBytes), source, cache);
    piece.copy(whole, inChunk);
    await target.redirect(snapshot.id, chunkIndex, whole, snapshot.reservedBytes > 0);
  }

  private checkUsable(snapshot: SnapshotRecord): void {
    if (!this.pool.metadata.snapshots.has(snapshot.id))
      throw new LunfsError('ENOENT', `snapshot ${this.lun.name}@${snapshot.name} was deleted`);
    if (snapshot.state !== 'valid')
      throw new LunfsError(
        'EIO',
        `snapshot ${this.lun.name}@${snapshot.name} is invalid: ${snapshot.invalidReason ?? 'unknown reason'}`,
      );
  }

  /** Units of free space the LUN's reserved snapshots may still need. */
  reservedUnits(): number {
    const unitBytes = this.pool.allocationUnitBytes;
    const chunksPerUnit = unitBytes / this.chunkBytes;
    let units = 0;
    let any = false;
    for (const snapshot of this.all()) {
      if (snapshot.reservedBytes === 0 || snapshot.state !== 'valid') continue;
      any = true;
      const chunks = Math.ceil(snapshot.sizeBytes / this.chunkBytes);
      const done = this.image(snapshot.id)?.bitmap.count ?? 0;
      units +=
        Math.ceil((chunks - done) / chunksPerUnit) +
        1 +
        reservationMetadataUnits(snapshot.sizeBytes, this.chunkBytes, unitBytes);
    }
    return any ? units + Math.ceil((this.target?.geometry.journalBytes ?? 0) / unitBytes) + 2 : 0;
  }

  /** Bytes of preserved or written data that the snapshot alone holds, and that it shares. */
  usage(snapshot: SnapshotRecord): { exclusiveBytes: number; sharedBytes: number } {
    let exclusive = 0;
    let shared = 0;
    const target = this.target;
    this.image(snapshot.id)?.log.forEach((_, slot) => {
      if (slot === zeroSlot || !target) return;
      if (target.referenceCount(slot) > 1) shared += 1;
      else exclusive += 1;
    });
    return { exclusiveBytes: exclusive * this.chunkBytes, sharedBytes: shared * this.chunkBytes };
  }

  /** Removes a snapshot: its record first, then its image; the target goes with the last one. */
  async remove(snapshot: SnapshotRecord): Promise<void> {
    await this.pool.commitOp({ kind: 'snapshot-remove', snapshotId: snapshot.id });
    this.updateReservationUse();
    await this.target?.drop([snapshot.id]);
    if (this.all().length === 0 && this.target) {
      const target = this.target;
      this.target = undefined;
      await this.idle(); // preservations that began before the removal end first
      await target.quiesce();
      await this.pool.removeTarget(this.pool.targetOf(this.lun.id)!, () =>
        target.thin.releaseAll(),
      );
    }
  }

  /** Forgets a snapshot taken in memory whose creation could not be made durable. */
  async abandon(snapshot: SnapshotRecord): Promise<void> {
    this.pool.metadata.snapshots.delete(snapshot.id);
    await this.target?.drop([snapshot.id]);
  }
}

/**
 * Metadata room a reserved snapshot may need in the target: its bitmap and log in both checkpoint
 * slots.
 */
function reservationMetadataUnits(
  sizeBytes: number,
  chunkBytes: number,
  unitBytes: number,
): number {
  const chunks = Math.ceil(sizeBytes / chunkBytes);
  return 2 * Math.ceil((chunks / 8 + chunks * 8) / unitBytes);
}

/**
 * For each chunk, the epoch at which every valid snapshot of the LUN was seen holding it in the
 * target (pages of 1024 chunks, made on first use). While the epoch stays the same this stays
 * true: a bit is only set (preserve, redirect) or goes with its snapshot (drop, invalidation)
 * until the pool is opened again (unpreserve happens at open, before any destage). A new snapshot
 * raises the epoch, which voids every entry at once. A destage costs the same however many
 * snapshots there are once its chunk is preserved for all of them.
 */
class PreservedCover {
  private readonly pages = new Map<number, Uint32Array>();

  covers(chunkIndex: number, epoch: number): boolean {
    return this.pages.get(Math.floor(chunkIndex / 1024))?.[chunkIndex % 1024] === epoch + 1;
  }

  set(chunkIndex: number, epoch: number): void {
    let page = this.pages.get(Math.floor(chunkIndex / 1024));
    if (!page) {
      page = new Uint32Array(1024);
      this.pages.set(Math.floor(chunkIndex / 1024), page);
    }
    page[chunkIndex % 1024] = epoch + 1;
  }
}
