// Changed-block tracking for one LUN (issue 16, seed 003's snap-point maps): before a destage or
// a discard changes a range of the LUN on the drives, every snap-point map of the LUN has the
// range's grains marked, each with its bit or its region's intent durable (the pool's
// SnapPointIntents, pool/snap-point-intents.ts, keeps that promise and commits).
//
// Invariant: for each snap-point map M of the LUN, every grain whose content on the drives changed
// after M was created is marked in M's durable copy, or lies in a region whose intent is set there
// (after a crash M may mark more: a grain marked whose change never reached the drives, or a
// region marked whole).

import type { LunRecord, PoolMetadata, SnapPointRecord } from '../meta/pool-metadata.js';
import type { SnapPointIntents } from '../pool/snap-point-intents.js';

/** What the tracker needs of the pool: the maps, and the durability of their marks. */
export interface SnapPointSpace {
  readonly metadata: Pick<PoolMetadata, 'snapPoints'>;
  readonly snapPointIntents: Pick<SnapPointIntents, 'mark'>;
}

export class SnapPointTracker {
  constructor(
    private readonly space: SnapPointSpace,
    readonly lun: LunRecord,
    /**
     * The range a change of [offset, offset + length) must mark: wider where a change can alter
     * what a read of other bytes returns (a degraded RAID-5 row: a copier that rebuilds a lost
     * member from the others while one of them changes reads garbage with no checksum to tell).
     */
    private readonly widen: (offsetBytes: number, lengthBytes: number) => [number, number] = (
      offsetBytes,
      lengthBytes,
    ) => [offsetBytes, lengthBytes],
  ) {}

  /** The LUN's snap-point maps. */
  maps(): SnapPointRecord[] {
    const found: SnapPointRecord[] = [];
    for (const snapPoint of this.space.metadata.snapPoints.values())
      if (snapPoint.lunId === this.lun.id) found.push(snapPoint);
    return found;
  }

  get active(): boolean {
    for (const snapPoint of this.space.metadata.snapPoints.values())
      if (snapPoint.lunId === this.lun.id) return true;
    return false;
  }

  /** Resolves once every grain of the range is durably marked in every map of the LUN. */
  async mark(changedOffset: number, changedLength: number): Promise<void> {
    if (changedLength === 0) return;
    const maps = this.maps();
    if (maps.length === 0) return;
    const [offsetBytes, lengthBytes] = this.widen(changedOffset, changedLength);
    await this.space.snapPointIntents.mark(maps, offsetBytes, lengthBytes);
  }
}
