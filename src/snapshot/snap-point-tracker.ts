// Changed-block tracking for one LUN (issue 16, seed 003's snap-point maps): before a destage or
// a discard changes a range of the LUN on the drives, every snap-point map of the LUN has the
// range's grains marked, durably. The mark is a pool metadata op (snappoint-mark) made durable by
// a pool commit, which also carries the marks of every other destage of the same moment; a grain
// already marked costs a bit test. A destage that finds its grain marked in memory but the commit
// carrying that mark still on its way waits for that commit too: the bit in memory is not yet a
// promise kept across a crash.
//
// Invariant: for each snap-point map M of the LUN, every grain whose content on the drives changed
// after M was created has its bit set in M's durable copy (after a crash M may mark more: a grain
// marked whose change never reached the drives).

import type {
  LunRecord,
  MetadataOp,
  PoolMetadata,
  SnapPointRecord,
} from '../meta/pool-metadata.js';
import { grainRuns } from '../meta/change-map.js';

/** What the tracker needs of the pool: the maps, and the durable queue of metadata ops. */
export interface SnapPointSpace {
  readonly metadata: Pick<PoolMetadata, 'snapPoints'>;
  queue(op: MetadataOp): void;
  commit(): Promise<void>;
}

export class SnapPointTracker {
  /** Marks set in memory whose commit has not resolved yet: map id -> grain -> that commit. */
  private readonly unsettled = new Map<number, Map<number, Promise<void>>>();

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
    const [offsetBytes, lengthBytes] = this.widen(changedOffset, changedLength);
    const waits = new Set<Promise<void>>();
    /** Newly marked grains of each grain size, and the maps they were marked in. */
    const fresh = new Map<number, { ids: number[]; grains: Map<number, number[]> }>();
    for (const snapPoint of this.maps()) {
      const first = Math.floor(offsetBytes / snapPoint.grainBytes);
      const count = Math.ceil((offsetBytes + lengthBytes) / snapPoint.grainBytes) - first;
      const pending = this.unsettled.get(snapPoint.id);
      if (pending)
        for (let grain = first; grain < first + count; grain += 1) {
          const commit = pending.get(grain);
          if (commit) waits.add(commit);
        }
      if (snapPoint.marks.allSet(first, count)) continue;
      const newly = snapPoint.marks.setRun(first, count);
      let group = fresh.get(snapPoint.grainBytes);
      if (!group) {
        group = { ids: [], grains: new Map() };
        fresh.set(snapPoint.grainBytes, group);
      }
      group.ids.push(snapPoint.id);
      group.grains.set(snapPoint.id, newly);
    }
    if (fresh.size > 0) {
      for (const group of fresh.values()) {
        // Maps of one grain size get one op; marking a grain set already is harmless at replay.
        const union = [...new Set([...group.grains.values()].flat())].sort((a, b) => a - b);
        this.space.queue({ kind: 'snappoint-mark', ids: group.ids, runs: grainRuns(union) });
      }
      const commit = this.space.commit();
      waits.add(commit);
      for (const group of fresh.values())
        for (const [id, grains] of group.grains) {
          let pending = this.unsettled.get(id);
          if (!pending) {
            pending = new Map();
            this.unsettled.set(id, pending);
          }
          for (const grain of grains) pending.set(grain, commit);
        }
      // Settled marks are forgotten; a failed commit stays, so every later change of those grains
      // fails as this one does rather than go ahead on a mark that is not durable.
      void commit.then(
        () => {
          for (const group of fresh.values())
            for (const [id, grains] of group.grains) {
              const pending = this.unsettled.get(id);
              for (const grain of grains) if (pending?.get(grain) === commit) pending.delete(grain);
              if (pending?.size === 0) this.unsettled.delete(id);
            }
        },
        () => {},
      );
    }
    await Promise.all(waits);
  }
}
