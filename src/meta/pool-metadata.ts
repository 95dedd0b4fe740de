// The pool's metadata in memory: configuration, drives, redundancy sets (RSS), RStores with their
// RSDs, and the LUN table with each LUN's map. It changes only through MetadataOp values applied
// by applyMetadataOp, the same function at run time and at journal replay, so that recovery
// rebuilds exactly the state that was committed. encodeCheckpoint/decodeCheckpoint give the
// full image written to a checkpoint slot (docs/on-disk-format.md).

import { ChangeMap } from './change-map.js';
import { L2map } from './l2map.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';

export type RaidLevel = 0 | 1 | 5;

export interface PoolConfig {
  poolUuid: string;
  createdAtMs: number;
  raidLevel: RaidLevel;
  psegSizeBytes: number;
  allocationUnitBytes: number;
  stripeUnitBytes: number;
  lmapEntryCount: number;
}

export interface DriveRecord {
  index: number;
  uuid: string;
  sizeBytes: number;
  psegCount: number;
  /** Whether lunfs created the drive as a sparse file, so its never-used PSEGs read as zeros. */
  zeroedAtCreation: boolean;
  rssId: number;
  /**
   * Absent or 'online': in service. 'failed': an I/O error or absence took it out of service; it
   * is never read again (its contents are stale from then on). 'rebuilding': a replacement that
   * takes writes and is being filled from redundancy; read only where the rebuild has passed.
   */
  state?: DriveState;
  /** Why the drive failed (state 'failed'), for status. */
  failedReason?: string;
  failedAtMs?: number;
  /**
   * The drive failed because it was absent (its file deleted, moved or replaced, or missing at
   * open), not because an I/O on it failed: a RAID-0 drive that comes back may return to service.
   */
  failedAbsent?: boolean;
  /**
   * RStores whose member on this drive missed a write while the drive was out of service, or
   * whose write or final flush on it failed (recorded on RAID-0 pools, where a failed drive can
   * come back; RAID-1/5 rebuild theirs): those blocks there may hold older data.
   */
  missedWriteRStores?: number[];
}

export type DriveState = 'online' | 'failed' | 'rebuilding';

export interface RssRecord {
  id: number;
  driveIndexes: number[];
}

export interface PsegRef {
  driveIndex: number;
  psegIndex: number;
}

/** RSD (seed 004 [0069]): describes one RStore. */
export interface RStoreRecord {
  id: number;
  rssId: number;
  raidLevel: RaidLevel;
  members: PsegRef[];
  rsegCount: number;
  /**
   * One character per RSEG: '1' = never written since the PSEGs were zero, '0' = may hold old data.
   */
  rsegFresh: string;
  /**
   * Write intent: set (durably) before the first write since the RStore was last consistent,
   * cleared once it is idle and flushed. After an unclean shutdown only dirty RStores are resynced.
   */
  dirty?: boolean;
  /**
   * RAID-5 on PSEGs that were not zero: parity not yet computed over the old contents. Cleared
   * (rstore-parity-set) once every row's parity has been made the XOR of its data.
   */
  parityUnset?: boolean;
}

export interface LunRecord {
  id: number;
  name: string;
  sizeBytes: number;
  createdAtMs: number;
  map: L2map;
  /**
   * Absent for a user's LUN. 'target' for the snapshot target volume (seed 000's target VLUN) of
   * LUN ownerLunId: an internal thin volume, hidden from users, that holds the preserved original
   * data and the snapshots' bitmaps and log files.
   */
  role?: 'target';
  ownerLunId?: number;
  /**
   * A rollback to this snapshot (of the LUN's own set) is under way: the chunks where the LUN
   * differs from it are being copied back. The LUN is not served until it ends; an open resumes it.
   */
  rollingBackTo?: number;
  /**
   * A snapclone whose BGCOPY has not ended (issue 15): the units it has not written yet read its
   * base, snapshot snapshotId of LUN lunId (a hidden member of that LUN's tree, role
   * 'clone-base'). Cleared (lun-clone-done) once every unit the base holds is the clone's own.
   */
  cloneOf?: { lunId: number; snapshotId: number; source: string };
  /**
   * `lunfs import` is applying a stream to the LUN (issue 16): null for a full stream (the LUN was
   * made for it), else the snapshot holding the stream's base. A crash leaves it set: the next
   * mount removes the LUN, or rolls it back to that snapshot.
   */
  importing?: { baseSnapshotId: number | null };
}

/**
 * A snapshot of a LUN. epoch orders it against the LUN's writes: a write accepted while the
 * LUN's epoch was below this snapshot's epoch is in the snapshot, any later one is not.
 *
 * sourceId names the volume the snapshot was taken of: its LUN (sourceKind 'lun'), or another
 * snapshot of the same LUN (sourceKind 'snapshot', issue 15: snapshots of snapshots, at any depth).
 * lunId is always the LUN whose snapshot set holds it (its family); a snapshot of a snapshot has
 * its source's epoch, since it holds the same LUN writes. The sharing relation of seed 004 follows
 * from sourceId ([0086], [0095]): a snapshot is the predecessor of the volume it was taken of, so
 * the snapshots of one source form the chain S0 <- S1 <- ... <- SOURCE, oldest first: each
 * snapshot's successor is the next newer snapshot of the same source (the newest one's is the
 * source itself), and the source's predecessor is its newest snapshot; the chains of all sources
 * make a tree rooted at the LUN. The chains are derived (sharingChainOf) rather than stored, so
 * that taking or deleting a snapshot changes one record. Format 5 called this field predecessorId,
 * naming the direction the wrong way round; upgradeSnapshotRecord reads it.
 */
export interface SnapshotRecord {
  id: number;
  lunId: number;
  name: string;
  epoch: number;
  createdAtMs: number;
  /** The LUN's size at the snapshot instant: the snapshot's size, for ever. */
  sizeBytes: number;
  /** Space guaranteed to the snapshot (0: on demand, invalidated when the pool is full). */
  reservedBytes: number;
  state: 'valid' | 'invalid';
  invalidReason?: string;
  /**
   * 'clone-base': the hidden snapshot a snapclone reads until its BGCOPY ends (LunRecord.cloneOf);
   * not listed, not served, removed with the end of the BGCOPY or with the clone.
   */
  role?: 'clone-base' | 'export';
  sourceKind: 'lun' | 'snapshot';
  sourceId: number;
  /**
   * The snapshot (or a snapshot it was taken of) has been written to: it no longer holds its LUN
   * exactly as it stood at its epoch. Set durably before the first write reaches it.
   */
  written?: boolean;
  /**
   * Made by `lunfs import` (issue 16): the state of another pool's volume this snapshot holds, as
   * the stream named it (export-stream.ts VolumeState); an incremental stream from that state
   * applies on top of it.
   */
  origin?: { guid: string; lunGuid: string; epoch: number; pure: boolean };
}

/** A snapshot record as a format-5 pool wrote it (checkpoint or journal). */
type SnapshotRecordOnDisk = Omit<SnapshotRecord, 'sourceKind' | 'sourceId'> &
  Partial<Pick<SnapshotRecord, 'sourceKind' | 'sourceId'>> & {
    predecessorKind?: 'lun' | 'snapshot';
    predecessorId?: number;
  };

/** Reads a snapshot record of any readable format (format 5 named its source predecessorId). */
export function upgradeSnapshotRecord(record: SnapshotRecordOnDisk): SnapshotRecord {
  const { predecessorKind, predecessorId, ...rest } = record;
  const sourceId = rest.sourceId ?? predecessorId;
  if (sourceId === undefined) throw new Error(`snapshot record ${record.id} names no source`);
  return { ...rest, sourceKind: rest.sourceKind ?? predecessorKind ?? 'lun', sourceId };
}

/** Reads a drive record of any readable format (format 5 spelt missedWriteRstores). */
function upgradeDriveRecord(record: DriveRecord & { missedWriteRstores?: number[] }): DriveRecord {
  const { missedWriteRstores, ...rest } = record;
  const missed = rest.missedWriteRStores ?? missedWriteRstores;
  return missed === undefined ? rest : { ...rest, missedWriteRStores: missed };
}

/**
 * Seed 004's sharing chain of a source volume (a LUN, or with kind 'snapshot' a snapshot): the
 * snapshots taken of it, oldest first. Each one's predecessor is the one before it, its successor
 * the one after it, or the source for the last; the source's predecessor is the last.
 */
export function sharingChainOf(
  metadata: PoolMetadata,
  sourceId: number,
  kind: SnapshotRecord['sourceKind'] = 'lun',
): SnapshotRecord[] {
  return [...metadata.snapshots.values()]
    .filter((snapshot) => snapshot.sourceKind === kind && snapshot.sourceId === sourceId)
    .sort((a, b) => a.epoch - b.epoch || a.id - b.id);
}

/**
 * A snap-point map (issue 16, seed 003's "snap point"): which grains of LUN lunId may have changed
 * on the drives since the map was started. Before any change of a grain reaches the drives
 * (DestagePipeline), either the grain's bit or its region's intent is durable: after a crash every
 * grain of a region with its intent set is marked, so a map may mark more than changed, never less.
 */
export interface SnapPointRecord {
  id: number;
  lunId: number;
  name: string;
  createdAtMs: number;
  /** The LUN's snapshot epoch when the map started: writes of an older epoch may be unmarked. */
  epoch: number;
  grainBytes: number;
  marks: ChangeMap;
  /**
   * Bytes of LUN one intent covers (a multiple of grainBytes; pool/snap-point-intents.ts).
   */
  intentBytes: number;
  /**
   * Regions (of intentBytes) whose grains' bits may be set in memory but not yet durable: the
   * intent is durable first, and cleared once the bits are.
   */
  intents: Set<number>;
}

export interface PoolMetadata {
  config: PoolConfig;
  drives: DriveRecord[];
  rss: RssRecord[];
  rstores: Map<number, RStoreRecord>;
  luns: Map<number, LunRecord>;
  snapshots: Map<number, SnapshotRecord>;
  snapPoints: Map<number, SnapPointRecord>;
  nextLunId: number;
  nextRStoreId: number;
  nextSnapshotId: number;
  nextSnapPointId: number;
  /** False while a process has the pool open read-write; true after a clean close. */
  cleanShutdown: boolean;
}

export type MetadataOp =
  | { kind: 'rstore-create'; rstore: RStoreRecord }
  | {
      kind: 'map';
      lunId: number;
      unitIndex: number;
      rstoreId: number;
      rsegIndex: number;
      flags: number;
    }
  | { kind: 'unmap'; lunId: number; unitIndex: number }
  | {
      kind: 'lun-create';
      lunId: number;
      name: string;
      sizeBytes: number;
      createdAtMs: number;
      role?: 'target';
      ownerLunId?: number;
      cloneOf?: LunRecord['cloneOf'];
    }
  | { kind: 'lun-remove'; lunId: number }
  /** The snapclone's BGCOPY has ended: it no longer reads its base. */
  | { kind: 'lun-clone-done'; lunId: number }
  | { kind: 'lun-resize'; lunId: number; sizeBytes: number }
  /** An import into the LUN begins (LunRecord.importing), or has ended (begin: false). */
  | { kind: 'lun-importing'; lunId: number; begin: boolean; baseSnapshotId: number | null }
  /** A rollback of the LUN to a snapshot begins (snapshotId), or has ended (null). */
  | { kind: 'lun-rollback'; lunId: number; snapshotId: number | null }
  | { kind: 'snapshot-create'; snapshot: SnapshotRecord }
  | { kind: 'snapshot-invalidate'; snapshotId: number; reason: string }
  | { kind: 'snapshot-remove'; snapshotId: number }
  /** The snapshot is written to for the first time (SnapshotRecord.written). */
  | { kind: 'snapshot-written'; snapshotId: number }
  | { kind: 'snappoint-create'; snapPoint: Omit<SnapPointRecord, 'marks' | 'intents'> }
  | { kind: 'snappoint-intent'; id: number; regions: number[]; set: boolean }
  /** After a crash: every grain of every region with its intent set is marked; intents clear. */
  | { kind: 'snappoint-recover' }
  /** Grains of LUN lunId's snap-point maps ids changed: [first grain, count] runs. */
  | { kind: 'snappoint-mark'; ids: number[]; runs: Array<[number, number]> }
  | { kind: 'snappoint-remove'; snapPointId: number }
  /**
   * After an unclean shutdown: unmapped RSEGs and unused PSEGs may hold data of writes whose
   * mapping was lost.
   */
  | { kind: 'forget-fresh' }
  /** A RAID-5 RStore made on PSEGs that were not zero has had every row's parity computed. */
  | { kind: 'rstore-parity-set'; rstoreId: number }
  /** Write intent of RStores (see raid/write-intent.ts). */
  | { kind: 'rstore-intent'; rstoreIds: number[]; dirty: boolean }
  /** A drive is out of service (I/O error, or missing at open). */
  | { kind: 'drive-fail'; driveIndex: number; reason: string; atMs: number; absent?: boolean }
  /**
   * Writes meant for a drive out of service (or that failed on it) were missed in these RStores.
   */
  | { kind: 'drive-missed-writes'; driveIndex: number; rstoreIds: number[] }
  /** A RAID-0 drive that had failed is back with its own label and returns to service as it is. */
  | { kind: 'drive-return'; driveIndex: number }
  /** A new drive takes the place of a failed one and is rebuilt from redundancy. */
  | {
      kind: 'drive-replace';
      driveIndex: number;
      uuid: string;
      sizeBytes: number;
      psegCount: number;
    }
  /** The rebuild of a replacement drive finished: it is in service. */
  | { kind: 'drive-rebuilt'; driveIndex: number };

export function allocationUnitsFor(sizeBytes: number, config: PoolConfig): number {
  return Math.ceil(sizeBytes / config.allocationUnitBytes);
}

export function applyMetadataOp(metadata: PoolMetadata, op: MetadataOp): void {
  switch (op.kind) {
    case 'rstore-create': {
      assert(!metadata.rstores.has(op.rstore.id), `RStore ${op.rstore.id} exists already`);
      metadata.rstores.set(op.rstore.id, {
        ...op.rstore,
        members: op.rstore.members.map((member) => ({ ...member })),
      });
      metadata.nextRStoreId = Math.max(metadata.nextRStoreId, op.rstore.id + 1);
      return;
    }
    case 'map': {
      const lun = lunById(metadata, op.lunId);
      const rstore = metadata.rstores.get(op.rstoreId);
      assert(rstore !== undefined, `map names unknown RStore ${op.rstoreId}`);
      assert(
        op.rsegIndex < rstore.rsegCount,
        `map names RSEG ${op.rsegIndex} past RStore ${op.rstoreId}`,
      );
      lun.map.set(op.unitIndex, {
        rstoreId: op.rstoreId,
        rsegIndex: op.rsegIndex,
        flags: op.flags,
      });
      markRsegUsed(rstore, op.rsegIndex);
      return;
    }
    case 'unmap':
      lunById(metadata, op.lunId).map.clear(op.unitIndex);
      return;
    case 'lun-create': {
      assert(!metadata.luns.has(op.lunId), `LUN id ${op.lunId} exists already`);
      const map = new L2map(
        allocationUnitsFor(op.sizeBytes, metadata.config),
        metadata.config.lmapEntryCount,
      );
      const record: LunRecord = {
        id: op.lunId,
        name: op.name,
        sizeBytes: op.sizeBytes,
        createdAtMs: op.createdAtMs,
        map,
      };
      if (op.role) Object.assign(record, { role: op.role, ownerLunId: op.ownerLunId });
      if (op.cloneOf) record.cloneOf = { ...op.cloneOf };
      metadata.luns.set(op.lunId, record);
      metadata.nextLunId = Math.max(metadata.nextLunId, op.lunId + 1);
      return;
    }
    case 'snapshot-create':
      assert(
        !metadata.snapshots.has(op.snapshot.id),
        `snapshot id ${op.snapshot.id} exists already`,
      );
      lunById(metadata, op.snapshot.lunId);
      metadata.snapshots.set(op.snapshot.id, upgradeSnapshotRecord(op.snapshot));
      metadata.nextSnapshotId = Math.max(metadata.nextSnapshotId, op.snapshot.id + 1);
      return;
    case 'snapshot-invalidate': {
      const snapshot = metadata.snapshots.get(op.snapshotId);
      assert(snapshot !== undefined, `snapshot-invalidate names unknown snapshot ${op.snapshotId}`);
      snapshot.state = 'invalid';
      snapshot.invalidReason = op.reason;
      return;
    }
    case 'snapshot-written': {
      const snapshot = metadata.snapshots.get(op.snapshotId);
      if (snapshot) snapshot.written = true;
      return;
    }
    case 'snapshot-remove': {
      const removed = metadata.snapshots.get(op.snapshotId);
      assert(removed !== undefined, `snapshot-remove names unknown snapshot ${op.snapshotId}`);
      metadata.snapshots.delete(op.snapshotId);
      // Seed 004 [0105]: a member leaves the tree and its predecessors join its successor. The
      // snapshots taken of it now hang on its own source (they hold their own images already).
      for (const snapshot of metadata.snapshots.values())
        if (snapshot.sourceKind === 'snapshot' && snapshot.sourceId === removed.id) {
          snapshot.sourceKind = removed.sourceKind;
          snapshot.sourceId = removed.sourceId;
        }
      return;
    }
    case 'lun-remove':
      assert(metadata.luns.delete(op.lunId), `lun-remove names unknown LUN ${op.lunId}`);
      for (const [id, snapPoint] of metadata.snapPoints)
        if (snapPoint.lunId === op.lunId) metadata.snapPoints.delete(id);
      return;
    case 'snappoint-create':
      assert(!metadata.snapPoints.has(op.snapPoint.id), `snap-point ${op.snapPoint.id} exists`);
      metadata.snapPoints.set(op.snapPoint.id, {
        ...op.snapPoint,
        marks: new ChangeMap(),
        intents: new Set(),
      });
      metadata.nextSnapPointId = Math.max(metadata.nextSnapPointId, op.snapPoint.id + 1);
      return;
    case 'snappoint-mark':
      for (const id of op.ids) {
        // A map removed since the mark was queued has nothing to mark.
        const marks = metadata.snapPoints.get(id)?.marks;
        if (marks) for (const [first, count] of op.runs) marks.setRun(first, count);
      }
      return;
    case 'snappoint-intent': {
      // A map removed since the intent was queued has nothing to change.
      const intents = metadata.snapPoints.get(op.id)?.intents;
      if (intents)
        for (const region of op.regions) {
          if (op.set) intents.add(region);
          else intents.delete(region);
        }
      return;
    }
    case 'snappoint-recover':
      for (const snapPoint of metadata.snapPoints.values()) recoverIntents(metadata, snapPoint);
      return;
    case 'snappoint-remove':
      metadata.snapPoints.delete(op.snapPointId);
      return;
    case 'forget-fresh':
      // Also the drives: PSEGs of an RStore whose creation was lost in the crash may hold data.
      for (const rstore of metadata.rstores.values())
        rstore.rsegFresh = '0'.repeat(rstore.rsegCount);
      for (const drive of metadata.drives) drive.zeroedAtCreation = false;
      return;
    case 'rstore-parity-set': {
      const rstore = metadata.rstores.get(op.rstoreId);
      assert(rstore !== undefined, `rstore-parity-set names unknown RStore ${op.rstoreId}`);
      delete rstore.parityUnset;
      return;
    }
    case 'rstore-intent':
      for (const rstoreId of op.rstoreIds) {
        const rstore = metadata.rstores.get(rstoreId);
        assert(rstore !== undefined, `rstore-intent names unknown RStore ${rstoreId}`);
        if (op.dirty) rstore.dirty = true;
        else delete rstore.dirty;
      }
      return;
    case 'drive-fail': {
      const drive = metadata.drives[op.driveIndex];
      assert(drive !== undefined, `drive-fail names unknown drive ${op.driveIndex}`);
      drive.state = 'failed';
      drive.failedReason = op.reason;
      drive.failedAtMs = op.atMs;
      if (op.absent) drive.failedAbsent = true;
      return;
    }
    case 'drive-missed-writes': {
      const drive = metadata.drives[op.driveIndex];
      assert(drive !== undefined, `drive-missed-writes names unknown drive ${op.driveIndex}`);
      drive.missedWriteRStores = [
        ...new Set([...(drive.missedWriteRStores ?? []), ...op.rstoreIds]),
      ].sort((a, b) => a - b);
      return;
    }
    case 'drive-return': {
      const drive = metadata.drives[op.driveIndex];
      assert(drive !== undefined, `drive-return names unknown drive ${op.driveIndex}`);
      delete drive.state;
      delete drive.failedReason;
      delete drive.failedAtMs;
      delete drive.failedAbsent;
      delete drive.missedWriteRStores;
      return;
    }
    case 'drive-replace': {
      const drive = metadata.drives[op.driveIndex];
      assert(drive !== undefined, `drive-replace names unknown drive ${op.driveIndex}`);
      assert(
        op.psegCount >= drive.psegCount,
        'a replacement drive holds at least the PSEGs of the drive it replaces',
      );
      drive.uuid = op.uuid;
      drive.sizeBytes = op.sizeBytes;
      drive.state = 'rebuilding';
      drive.zeroedAtCreation = false;
      delete drive.failedReason;
      delete drive.failedAtMs;
      delete drive.failedAbsent;
      delete drive.missedWriteRStores;
      return;
    }
    case 'drive-rebuilt': {
      const drive = metadata.drives[op.driveIndex];
      assert(drive !== undefined, `drive-rebuilt names unknown drive ${op.driveIndex}`);
      drive.state = 'online';
      return;
    }
    case 'lun-clone-done':
      delete lunById(metadata, op.lunId).cloneOf;
      return;
    case 'lun-importing': {
      const lun = lunById(metadata, op.lunId);
      if (op.begin) lun.importing = { baseSnapshotId: op.baseSnapshotId };
      else delete lun.importing;
      return;
    }
    case 'lun-rollback': {
      const lun = lunById(metadata, op.lunId);
      if (op.snapshotId === null) delete lun.rollingBackTo;
      else lun.rollingBackTo = op.snapshotId;
      return;
    }
    case 'lun-resize': {
      const lun = lunById(metadata, op.lunId);
      assert(op.sizeBytes >= lun.sizeBytes, 'LUNs only grow');
      lun.sizeBytes = op.sizeBytes;
      lun.map.grow(allocationUnitsFor(op.sizeBytes, metadata.config));
      return;
    }
  }
}

export function driveStateOf(drive: DriveRecord): DriveState {
  return drive.state ?? 'online';
}

export function markRsegUsed(rstore: RStoreRecord, rsegIndex: number): void {
  if (rstore.rsegFresh[rsegIndex] === '0') return;
  rstore.rsegFresh =
    rstore.rsegFresh.slice(0, rsegIndex) + '0' + rstore.rsegFresh.slice(rsegIndex + 1);
}

function lunById(metadata: PoolMetadata, lunId: number): LunRecord {
  const lun = metadata.luns.get(lunId);
  assert(lun !== undefined, `metadata op names unknown LUN ${lunId}`);
  return lun;
}

/** Marks every grain of the map's regions with their intent set, and clears the intents. */
function recoverIntents(metadata: PoolMetadata, snapPoint: SnapPointRecord): void {
  const lun = metadata.luns.get(snapPoint.lunId);
  const perRegion = snapPoint.intentBytes / snapPoint.grainBytes;
  const lunGrains = lun ? Math.ceil(lun.sizeBytes / snapPoint.grainBytes) : 0;
  for (const region of snapPoint.intents) {
    const first = region * perRegion;
    const count = Math.min(perRegion, lunGrains - first);
    if (count > 0) snapPoint.marks.setRun(first, count);
  }
  snapPoint.intents.clear();
}

/**
 * Checkpoint payload: u32 JSON length, the JSON of everything but the maps, then each LUN's map
 * entries.
 */
export function encodeCheckpoint(metadata: PoolMetadata): Buffer {
  const luns = [...metadata.luns.values()];
  // Snap-point maps' bits follow the LUN maps' entries, each map's in its own markBytes.
  const snapPoints = [...metadata.snapPoints.values()];
  const marksEncoded = snapPoints.map((snapPoint) => snapPoint.marks.encode());
  const json = Buffer.from(
    JSON.stringify({
      config: metadata.config,
      drives: metadata.drives,
      rss: metadata.rss,
      rstores: [...metadata.rstores.values()],
      luns: luns.map(({ map, ...rest }) => ({ ...rest, mappedCount: map.mappedCount })),
      snapshots: [...metadata.snapshots.values()],
      snapPoints: snapPoints.map((snapPoint, index) => ({
        id: snapPoint.id,
        lunId: snapPoint.lunId,
        name: snapPoint.name,
        createdAtMs: snapPoint.createdAtMs,
        epoch: snapPoint.epoch,
        grainBytes: snapPoint.grainBytes,
        intentBytes: snapPoint.intentBytes,
        intents: [...snapPoint.intents].sort((a, b) => a - b),
        markBytes: marksEncoded[index]!.length,
      })),
      nextLunId: metadata.nextLunId,
      nextRStoreId: metadata.nextRStoreId,
      nextSnapshotId: metadata.nextSnapshotId,
      nextSnapPointId: metadata.nextSnapPointId,
      cleanShutdown: metadata.cleanShutdown,
    }),
  );
  const entryBytes = 12;
  const mapBytes = luns.reduce((sum, lun) => sum + lun.map.mappedCount * entryBytes, 0);
  const marksBytes = marksEncoded.reduce((sum, marks) => sum + marks.length, 0);
  const buffer = Buffer.alloc(4 + json.length + mapBytes + marksBytes);
  buffer.writeUInt32LE(json.length, 0);
  json.copy(buffer, 4);
  let position = 4 + json.length;
  for (const lun of luns) {
    lun.map.forEachMapped((unitIndex, entry) => {
      buffer.writeUInt32LE(unitIndex, position);
      buffer.writeUInt32LE(entry.rstoreId, position + 4);
      buffer.writeUInt16LE(entry.rsegIndex, position + 8);
      buffer.writeUInt16LE(entry.flags, position + 10);
      position += entryBytes;
    });
  }
  for (const marks of marksEncoded) position += marks.copy(buffer, position);
  assert(position === buffer.length, 'checkpoint encoding length mismatch');
  return buffer;
}

function requireNumber(value: number | undefined, field: string): number {
  if (typeof value !== 'number') throw new Error(`${field} is missing`);
  return value;
}

export function decodeCheckpoint(payload: Buffer): PoolMetadata {
  try {
    const jsonLength = payload.readUInt32LE(0);
    const parsed = JSON.parse(payload.toString('utf8', 4, 4 + jsonLength)) as {
      config: PoolConfig;
      drives: DriveRecord[];
      rss: RssRecord[];
      rstores: RStoreRecord[];
      luns: Array<Omit<LunRecord, 'map'> & { mappedCount: number }>;
      snapshots?: SnapshotRecordOnDisk[];
      snapPoints?: Array<
        Omit<SnapPointRecord, 'marks' | 'intents' | 'intentBytes'> & {
          markBytes: number;
          intentBytes?: number;
          intents?: number[];
        }
      >;
      nextLunId: number;
      nextRStoreId?: number;
      /** Format 5's spelling of nextRStoreId. */
      nextRstoreId?: number;
      nextSnapshotId?: number;
      nextSnapPointId?: number;
      cleanShutdown: boolean;
    };
    const metadata: PoolMetadata = {
      config: parsed.config,
      drives: parsed.drives.map(upgradeDriveRecord),
      rss: parsed.rss,
      rstores: new Map(parsed.rstores.map((rstore) => [rstore.id, rstore])),
      luns: new Map(),
      snapshots: new Map(
        (parsed.snapshots ?? []).map((snapshot) => [snapshot.id, upgradeSnapshotRecord(snapshot)]),
      ),
      nextLunId: parsed.nextLunId,
      nextRStoreId: requireNumber(parsed.nextRStoreId ?? parsed.nextRstoreId, 'nextRStoreId'),
      nextSnapshotId: parsed.nextSnapshotId ?? 1,
      snapPoints: new Map(),
      nextSnapPointId: parsed.nextSnapPointId ?? 1,
      cleanShutdown: parsed.cleanShutdown,
    };
    let position = 4 + jsonLength;
    for (const { mappedCount, ...lun } of parsed.luns) {
      const map = new L2map(
        allocationUnitsFor(lun.sizeBytes, parsed.config),
        parsed.config.lmapEntryCount,
      );
      for (let index = 0; index < mappedCount; index += 1) {
        map.set(payload.readUInt32LE(position), {
          rstoreId: payload.readUInt32LE(position + 4),
          rsegIndex: payload.readUInt16LE(position + 8),
          flags: payload.readUInt16LE(position + 10),
        });
        position += 12;
      }
      metadata.luns.set(lun.id, { ...lun, map });
    }
    for (const { markBytes, intentBytes, intents, ...snapPoint } of parsed.snapPoints ?? []) {
      const marks = ChangeMap.decode(payload.subarray(position, position + markBytes));
      metadata.snapPoints.set(snapPoint.id, {
        ...snapPoint,
        marks,
        // checkpoints made before intents had none: a grain's bit was durable before its change
        intentBytes: intentBytes ?? snapPoint.grainBytes,
        intents: new Set(intents ?? []),
      });
      position += markBytes;
    }
    return metadata;
  } catch (error) {
    throw new LunfsError(
      'ECORRUPT',
      `checkpoint payload does not decode: ${(error as Error).message}`,
      { cause: error },
    );
  }
}
