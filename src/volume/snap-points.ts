// Snap-point maps as users see them (issue 16): `lunfs snappoint create|ls|rm DIR LUN@NAME`,
// control/snappoint/ in the mount, and the changed extents an export --since reads. The marking
// itself is below, in the destage pipeline (snapshot/snap-point-tracker.ts).
//
// A map starts empty at its creation and from then on marks every grain of its LUN whose content
// on the drives changes; it ends when it is removed, or with its LUN. The grain is 64 KiB, QEMU's
// default for dirty bitmaps: a 1 TiB LUN's map is 2 MiB, and a 4 KiB write marks 16 times its size
// at most.

import type { Pool } from '../pool/pool.js';
import type { LunRecord, SnapPointRecord } from '../meta/pool-metadata.js';
import { LunfsError } from '../util/errors.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/logger.js';
import { parseSnapshotName } from './controller.js';

export const snapPointGrainBytes = 64 * 1024;
/** A map's intents (pool/snap-point-intents.ts) cover its LUN in about this many regions. */
export const snapPointIntentRegions = 256;

/**
 * What one durable intent of a map of a LUN of sizeBytes covers: a power-of-two number of grains,
 * about 1/256 of the LUN (4 MiB of a 1 GiB LUN). Random writes over a whole LUN so commit about
 * 256 intents per map, not a mark per 64 KiB grain; after a crash, a region with its intent set is
 * marked whole.
 */
export function snapPointIntentBytes(sizeBytes: number): number {
  let bytes = snapPointGrainBytes;
  while (bytes * snapPointIntentRegions < sizeBytes) bytes *= 2;
  return bytes;
}
/** The most maps one LUN may have: each costs a bit test per destage and room in the metadata. */
export const maxSnapPointsPerLun = 16;

export interface SnapPointStatus {
  /** LUN@NAME. */
  name: string;
  lun: string;
  snapPoint: string;
  createdAt: string;
  grainBytes: number;
  /** What a crash may mark whole where a change was under way (see snapPointIntentBytes). */
  intentBytes: number;
  /** Grains marked, in bytes (an upper bound of the bytes changed since the creation). */
  changedBytes: number;
  /** Runs of marked grains. */
  changedExtents: number;
}

export interface SnapPointHost {
  readonly pool: Pool;
  readonly clock: Clock;
  readonly log: Logger;
  /** The LUN's snapshot epoch (what its cache tags new writes with). */
  epochOf(lunName: string): number;
}

export class SnapPointService {
  constructor(private readonly host: SnapPointHost) {}

  private get pool(): Pool {
    return this.host.pool;
  }

  /** Starts map NAME of LUN: empty now, it marks every change from here on. */
  async create(fullName: string): Promise<SnapPointStatus> {
    const names = parseSnapPointName(fullName);
    const lun = this.pool.lunByName(names.lun);
    const existing = this.ofLun(lun.id);
    if (existing.some((snapPoint) => snapPoint.name === names.snapPoint))
      throw new LunfsError('EEXIST', `snap-point ${fullName} exists already`);
    if (existing.length >= maxSnapPointsPerLun)
      throw new LunfsError(
        'ENOSPC',
        `LUN '${lun.name}' has ${maxSnapPointsPerLun} snap-point maps, the most one LUN may have`,
      );
    if (!this.pool.hasRoomForSnapPoint(lun.sizeBytes, snapPointGrainBytes))
      throw new LunfsError(
        'ENOSPC',
        `the pool metadata has no room for another snap-point map; remove some first`,
      );
    const record = await this.start(lun, () => names.snapPoint);
    this.host.log.info({ snapPoint: fullName }, 'snap-point map created');
    return this.status(record);
  }

  /** Starts a map of lun named name(its id), durably; no checks (create and migrations do them). */
  async start(lun: LunRecord, name: (id: number) => string): Promise<SnapPointRecord> {
    const id = this.pool.metadata.nextSnapPointId;
    await this.pool.commitOp({
      kind: 'snappoint-create',
      snapPoint: {
        id,
        lunId: lun.id,
        name: name(id),
        createdAtMs: this.host.clock.nowMs(),
        epoch: this.host.epochOf(lun.name),
        grainBytes: snapPointGrainBytes,
        intentBytes: snapPointIntentBytes(lun.sizeBytes),
      },
    });
    return this.pool.metadata.snapPoints.get(id)!;
  }

  async remove(fullName: string): Promise<void> {
    const record = this.byName(fullName);
    await this.pool.commitOp({ kind: 'snappoint-remove', snapPointId: record.id });
    this.host.log.info({ snapPoint: fullName }, 'snap-point map removed');
  }

  byName(fullName: string): SnapPointRecord {
    const names = parseSnapPointName(fullName);
    const lun = this.pool.lunByName(names.lun);
    const found = this.ofLun(lun.id).find((snapPoint) => snapPoint.name === names.snapPoint);
    if (!found)
      throw new LunfsError(
        'ENOENT',
        `LUN '${lun.name}' has no snap-point map '${names.snapPoint}'`,
      );
    return found;
  }

  has(fullName: string): boolean {
    try {
      this.byName(fullName);
      return true;
    } catch {
      return false;
    }
  }

  list(): SnapPointStatus[] {
    // maps named '.…' are lunfs's own (a migration's): not the user's to list or remove
    return [...this.pool.metadata.snapPoints.values()]
      .filter(
        (snapPoint) =>
          this.pool.metadata.luns.has(snapPoint.lunId) && !snapPoint.name.startsWith('.'),
      )
      .sort((a, b) => a.lunId - b.lunId || a.id - b.id)
      .map((snapPoint) => this.status(snapPoint));
  }

  /** The byte ranges map fullName marks, clipped to the LUN's size: [offset, length] pairs. */
  extents(fullName: string): Array<[number, number]> {
    const record = this.byName(fullName);
    return markedExtents(record, this.pool.metadata.luns.get(record.lunId)!.sizeBytes);
  }

  private ofLun(lunId: number): SnapPointRecord[] {
    return [...this.pool.metadata.snapPoints.values()].filter(
      (snapPoint) => snapPoint.lunId === lunId,
    );
  }

  private status(record: SnapPointRecord): SnapPointStatus {
    const lun = this.pool.metadata.luns.get(record.lunId)!;
    let runs = 0;
    record.marks.forEachRun(() => (runs += 1));
    return {
      name: `${lun.name}@${record.name}`,
      lun: lun.name,
      snapPoint: record.name,
      createdAt: new Date(record.createdAtMs).toISOString(),
      grainBytes: record.grainBytes,
      intentBytes: record.intentBytes,
      changedBytes: record.marks.count * record.grainBytes,
      changedExtents: runs,
    };
  }
}

/** The byte ranges map record marks, below sizeBytes, ascending: [offset, length] pairs. */
export function markedExtents(record: SnapPointRecord, sizeBytes: number): Array<[number, number]> {
  const found: Array<[number, number]> = [];
  record.marks.forEachRun((first, count) => {
    const offset = first * record.grainBytes;
    if (offset < sizeBytes)
      found.push([offset, Math.min(count * record.grainBytes, sizeBytes - offset)]);
  });
  return found;
}

/** Ranges cut at sizeBytes, sorted, and merged where they touch or overlap. */
export function mergeRanges(
  ranges: Array<[number, number]>,
  sizeBytes: number,
): Array<[number, number]> {
  const merged: Array<[number, number]> = [];
  const sorted = ranges
    .filter(([offset]) => offset < sizeBytes)
    .map(([offset, length]): [number, number] => [offset, Math.min(length, sizeBytes - offset)])
    .sort((a, b) => a[0] - b[0]);
  for (const [offset, length] of sorted) {
    const last = merged[merged.length - 1];
    if (last && offset <= last[0] + last[1]) last[1] = Math.max(last[1], offset + length - last[0]);
    else merged.push([offset, length]);
  }
  return merged;
}

/** Splits LUN@NAME (the names follow the snapshot rules); EINVAL for anything else. */
export function parseSnapPointName(fullName: string): { lun: string; snapPoint: string } {
  try {
    const { lun, snapshot } = parseSnapshotName(fullName);
    return { lun, snapPoint: snapshot };
  } catch (error) {
    throw new LunfsError(
      'EINVAL',
      (error as Error).message.replace('is not a snapshot name', 'is not a snap-point name'),
    );
  }
}
