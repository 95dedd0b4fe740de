// The durability of snap-point marks (issue 16, seed 003), one per pool: before a change of a
// LUN's range reaches the drives, every snap-point map of the LUN has the range's grains marked in
// memory, and for each grain either its bit or its region's intent durable.
//
// - A grain's bit is set in memory at once, and its op (snappoint-mark) is queued to ride on the
//   next pool commit, whoever makes it; nothing waits for it.
// - A region (the map's intentBytes, about 1/256 of its LUN: 4 MiB of 1 GiB) is what may wait: a
//   change that newly marks grains of a region whose intent is not set sets it (snappoint-intent)
//   and commits, and every change of the region waits until that commit is done. Random writes
//   over a whole LUN so commit about 256 times per map, not once per destage while the map fills
//   (that cost the foreground about a quarter of its speed during a migration, whose passes each
//   start a map).
// - An intent is cleared at the start of a commit when its region newly marked nothing during the
//   last quietCommits commits and every mark op of the region is durable; the clear goes with that
//   commit. A region written all along so keeps its intent and commits nothing more (clearing it
//   at the first quiet commit made every new grain set it again: a commit per destage, as before).
//   How long an intent stays only matters after a crash, where its region is marked whole.
// - After a crash, every grain of a region with its intent set is marked (snappoint-recover, at
//   the pool's recovery); a clean close clears every intent (all marks were committed).
//
// Invariant: for each snap-point map M, every grain whose content on the drives changed after M
// was created has its bit or its region's intent set in M's durable copy.
//
// The state is the pool's, not a LUN stack's: a stack rebuilt (a rollback) must not forget marks
// of its predecessor that are still on their way.

import type { MetadataOp, PoolMetadata, SnapPointRecord } from '../meta/pool-metadata.js';
import { grainRuns } from '../meta/change-map.js';

/** What the intents need of the pool: the maps, and the durable queue of metadata ops. */
export interface SnapPointIntentSpace {
  readonly metadata: Pick<PoolMetadata, 'snapPoints'>;
  /** afterCommit runs once the op is durable. */
  queue(op: MetadataOp, afterCommit?: () => void): void;
  commit(): Promise<void>;
}

/** Commits a region must newly mark nothing during before its intent is cleared. */
export const quietCommits = 64;

export class SnapPointIntents {
  /** Intents set in memory whose commit has not resolved yet: map id -> region -> that commit. */
  private readonly unsettled = new Map<number, Map<number, Promise<void>>>();
  /** Mark ops queued and not yet durable: map id -> region -> how many. */
  private readonly undurable = new Map<number, Map<number, number>>();
  /** The commit each region last newly marked grains before: map id -> region -> commit number. */
  private readonly touched = new Map<number, Map<number, number>>();
  /** Commits begun so far. */
  private commits = 0;
  /** A commit asked for intents that has not begun yet. */
  private nextCommit: Promise<void> | undefined;

  constructor(private readonly space: SnapPointIntentSpace) {}

  /**
   * Marks [offsetBytes, offsetBytes + lengthBytes) in maps; resolves once every grain of it has
   * its bit or its region's intent durable in each.
   */
  async mark(maps: SnapPointRecord[], offsetBytes: number, lengthBytes: number): Promise<void> {
    const waits = new Set<Promise<void>>();
    /** Newly marked grains of each grain size, and the maps they were marked in. */
    const fresh = new Map<number, Map<number, number[]>>();
    /** Regions whose intent this change sets: map id -> regions. */
    const intents = new Map<number, number[]>();
    for (const snapPoint of maps) {
      // A grain set in memory before may be waiting for its intent still.
      const pending = this.unsettled.get(snapPoint.id);
      if (pending) {
        const firstRegion = Math.floor(offsetBytes / snapPoint.intentBytes);
        const endRegion = Math.ceil((offsetBytes + lengthBytes) / snapPoint.intentBytes);
        for (let region = firstRegion; region < endRegion; region += 1) {
          const commit = pending.get(region);
          if (commit) waits.add(commit);
        }
      }
      const first = Math.floor(offsetBytes / snapPoint.grainBytes);
      const count = Math.ceil((offsetBytes + lengthBytes) / snapPoint.grainBytes) - first;
      if (snapPoint.marks.allSet(first, count)) continue;
      const newly = snapPoint.marks.setRun(first, count);
      // Grains newly set need their region's intent (a grain marked durably needs none).
      const perRegion = snapPoint.intentBytes / snapPoint.grainBytes;
      for (const region of new Set(newly.map((grain) => Math.floor(grain / perRegion)))) {
        let touched = this.touched.get(snapPoint.id);
        if (!touched) this.touched.set(snapPoint.id, (touched = new Map()));
        touched.set(region, this.commits);
        if (snapPoint.intents.has(region)) continue;
        snapPoint.intents.add(region);
        const regions = intents.get(snapPoint.id) ?? [];
        regions.push(region);
        intents.set(snapPoint.id, regions);
      }
      let group = fresh.get(snapPoint.grainBytes);
      if (!group) fresh.set(snapPoint.grainBytes, (group = new Map()));
      group.set(snapPoint.id, newly);
    }
    // The marks first: a commit made for the intents below carries them too.
    for (const grains of fresh.values()) this.queueMarks(grains);
    if (intents.size > 0) {
      for (const [id, regions] of intents)
        this.space.queue({ kind: 'snappoint-intent', id, regions, set: true });
      // One commit carries every intent queued before it begins: changes that set intents while
      // it has not begun wait for it rather than each start one (a new map's first moments set
      // many).
      if (!this.nextCommit) {
        const asked = this.space.commit();
        this.nextCommit = asked;
        // one that failed before it began (so before beforeCommit) is not waited for again
        void asked.then(
          () => {},
          () => {
            if (this.nextCommit === asked) this.nextCommit = undefined;
          },
        );
      }
      const commit = this.nextCommit;
      waits.add(commit);
      for (const [id, regions] of intents) {
        let pending = this.unsettled.get(id);
        if (!pending) this.unsettled.set(id, (pending = new Map()));
        for (const region of regions) pending.set(region, commit);
      }
      // Settled intents are forgotten; a failed commit stays, so every later change of those
      // regions fails as this one does rather than go ahead on an intent that is not durable.
      void commit.then(
        () => {
          for (const [id, regions] of intents) {
            const pending = this.unsettled.get(id);
            for (const region of regions)
              if (pending?.get(region) === commit) pending.delete(region);
            if (pending?.size === 0) this.unsettled.delete(id);
          }
        },
        () => {},
      );
    }
    await Promise.all(waits);
  }

  /**
   * At the start of every pool commit (before it takes the queued ops): clears the intents of
   * regions that newly marked nothing during the last quietCommits commits, whose marks are all
   * durable.
   */
  beforeCommit(): void {
    this.commits += 1;
    this.nextCommit = undefined; // this commit takes what is queued

    for (const snapPoint of this.space.metadata.snapPoints.values()) {
      if (snapPoint.intents.size === 0) continue;
      const touched = this.touched.get(snapPoint.id);
      const pending = this.unsettled.get(snapPoint.id);
      const undurable = this.undurable.get(snapPoint.id);
      const clear = [...snapPoint.intents].filter(
        (region) =>
          this.commits - (touched?.get(region) ?? Number.NEGATIVE_INFINITY) > quietCommits &&
          !pending?.has(region) &&
          !undurable?.has(region),
      );
      if (clear.length === 0) continue;
      for (const region of clear) {
        snapPoint.intents.delete(region);
        touched?.delete(region);
      }
      this.space.queue({ kind: 'snappoint-intent', id: snapPoint.id, regions: clear, set: false });
    }
    for (const id of this.touched.keys())
      if (!this.space.metadata.snapPoints.has(id)) this.touched.delete(id);
  }

  /**
   * Queues the op of grains newly marked in maps of one grain size (one op: marking a grain set
   * already is harmless at replay), counted undurable in their regions until it is committed.
   */
  private queueMarks(grains: Map<number, number[]>): void {
    const union = [...new Set([...grains.values()].flat())].sort((a, b) => a - b);
    const counted = new Map<number, number[]>();
    for (const [id, newly] of grains) {
      const snapPoint = this.space.metadata.snapPoints.get(id)!;
      const perRegion = snapPoint.intentBytes / snapPoint.grainBytes;
      const regions = [...new Set(newly.map((grain) => Math.floor(grain / perRegion)))];
      let undurable = this.undurable.get(id);
      if (!undurable) this.undurable.set(id, (undurable = new Map()));
      for (const region of regions) undurable.set(region, (undurable.get(region) ?? 0) + 1);
      counted.set(id, regions);
    }
    const op: MetadataOp = {
      kind: 'snappoint-mark',
      ids: [...grains.keys()],
      runs: grainRuns(union),
    };
    this.space.queue(op, () => {
      for (const [id, regions] of counted) {
        const undurable = this.undurable.get(id);
        if (!undurable) continue;
        for (const region of regions) {
          const left = (undurable.get(region) ?? 1) - 1;
          if (left > 0) undurable.set(region, left);
          else undurable.delete(region);
        }
        if (undurable.size === 0) this.undurable.delete(id);
      }
    });
  }
}
