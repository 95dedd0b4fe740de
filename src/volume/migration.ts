// The server's side of a migration (issue 16, seed 003): a copier in another process copies a live
// LUN by reading the pool's drives itself; the server only hands it the volume translation map and
// the snap-point maps of what changed, and holds writes for the one short final pass. Its
// JavaScript thread copies nothing.
//
// The passes (each one a control request, migrate-pass):
//   1. The first pass starts a snap-point map (hidden: '.migrate-N') before anything else, then
//      flushes the LUN's cache: from then on every change that reaches the drives is marked, and
//      everything older is on the drives, with its checksums and mapping committed. The answer is
//      the whole LUN: its size and the translation map of every mapped unit.
//   2. Each next pass starts a new map, flushes, and answers the runs the older maps mark, with
//      the translation of the units under them (a unit unmapped since reads as zeros: the copier
//      writes zeros). The copier's reads may race the server's writes; whatever it read that was
//      changing is marked in the new map and copied again by the next pass.
//   3. The copier acknowledges a pass (migrate-ack) once what it copied is durable on the target;
//      only then do the older maps go. A copier killed before that asks again and gets their runs
//      again, and a server killed meanwhile finds its maps after the restart (they are durable).
//   4. The final pass (final: true) holds the LUN's writes (FUSE writes wait), flushes, and answers
//      the older maps' runs; the copier copies them and sends migrate-finish: the writes go on, the
//      maps go, and the pause is reported. A final pass not finished within finalHoldMs lets the
//      writes go on (the new map keeps tracking them) and is refused at its finish.
//
// "Dirty data in the write-back cache is never missed": each pass starts its map before it
// flushes the cache, so data destaged by that flush is either on the drives before the answer is
// made or marked in the new map.

import { driveStateOf, type LunRecord, type SnapPointRecord } from '../meta/pool-metadata.js';
import { LunfsError } from '../util/errors.js';
import type { Controller } from './controller.js';
import { markedExtents, mergeRanges } from './snap-points.js';
import { parseSnapshotName } from './controller.js';

/** How long a final pass may hold a LUN's writes before they go on anyway. */
export const finalHoldMs = 30_000;

export interface MigrationPass {
  lun: string;
  /** The map this pass started (its name in the pool's snap-point maps). */
  map: string;
  /** The older maps whose runs this pass answers; acknowledging the pass removes them. */
  covers: string[];
  full: boolean;
  final: boolean;
  sizeBytes: number;
  allocationUnitBytes: number;
  /** Byte ranges to copy: [offset, length], ascending. */
  runs: Array<[number, number]>;
  /** unit index -> [rstoreId, rsegIndex], or null: unmapped (reads as zeros). */
  units: Array<[number, [number, number] | null]>;
  /** Bytes the runs cover. */
  bytes: number;
}

interface Hold {
  release: () => void;
  gate: Promise<void>;
  startedAtMs: number;
  timer: ReturnType<typeof setTimeout>;
  expired: boolean;
}

export class MigrationService {
  private readonly holds = new Map<number, Hold>();
  /** The drives out of service at each LUN's last pass answered by this process. */
  private readonly seenFailed = new Map<number, Set<number>>();

  constructor(private readonly controller: Controller) {}

  private get pool(): Controller['pool'] {
    return this.controller.pool;
  }

  /** Writes to each LUN under way (between enterWrite and its release). */
  private readonly writing = new Map<number, number>();
  private readonly drainWaiters = new Map<number, Array<() => void>>();

  /**
   * A write to LUN lunId begins: at once (the returned release ends it), or once a final pass
   * holding the LUN's writes is over. A hold waits for the writes already begun to end, so none
   * reaches the cache after the cut-over's flush.
   */
  enterWrite(lunId: number): (() => void) | Promise<() => void> {
    const hold = this.holds.get(lunId);
    if (hold) return hold.gate.then(() => this.enterWrite(lunId));
    this.writing.set(lunId, (this.writing.get(lunId) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.writing.get(lunId) ?? 1) - 1;
      if (left > 0) return this.writing.set(lunId, left);
      this.writing.delete(lunId);
      const waiters = this.drainWaiters.get(lunId) ?? [];
      this.drainWaiters.delete(lunId);
      for (const wake of waiters) wake();
    };
  }

  private async writesDrained(lunId: number): Promise<void> {
    while ((this.writing.get(lunId) ?? 0) > 0)
      await new Promise<void>((resolve) => {
        const waiters = this.drainWaiters.get(lunId) ?? [];
        waiters.push(resolve);
        this.drainWaiters.set(lunId, waiters);
      });
  }

  /** The LUN's migration maps, oldest first. */
  maps(lun: LunRecord): SnapPointRecord[] {
    return [...this.pool.metadata.snapPoints.values()]
      .filter((record) => record.lunId === lun.id && record.name.startsWith('.migrate-'))
      .sort((a, b) => a.id - b.id);
  }

  /**
   * One pass (see the head of this file). snapshot: with final, also take snapshot LUN@snapshot at
   * the cut-over instant (writes held, cache flushed): what the target holds once the pass is
   * copied.
   */
  async pass(
    lunName: string,
    options: {
      restart?: boolean;
      final?: boolean;
      snapshot?: string;
      /** Ranges the copier could not read last time (kept until read): [offset, length]. */
      extra?: Array<[number, number]>;
    },
  ): Promise<MigrationPass> {
    const lun = this.pool.lunByName(lunName);
    if (lun.cloneOf)
      throw new LunfsError(
        'EBUSY',
        `LUN '${lunName}' is a clone whose background copy runs: migrate it once that has ended`,
      );
    if (lun.rollingBackTo !== undefined)
      throw new LunfsError('EBUSY', `LUN '${lunName}' is being rolled back`);
    if (this.holds.has(lun.id))
      throw new LunfsError('EBUSY', `a final pass of LUN '${lunName}' is under way`);
    if (options.restart) for (const record of this.maps(lun)) await this.removeMap(record);
    const older = this.maps(lun);
    const full = older.length === 0;
    if (full && options.final)
      throw new LunfsError('EINVAL', `no migration of LUN '${lunName}' is under way`);
    if (options.snapshot !== undefined) parseSnapshotName(`${lunName}@${options.snapshot}`);
    // the new map first, then the flush (see the head of this file)
    const map = await this.startMap(lun);
    let hold: Hold | undefined;
    if (options.final) hold = this.holdWrites(lun);
    try {
      // A change that found the older maps only, on its way to the drives, lands before the
      // answer: nothing the copier reads changes later without a mark in the new map.
      const stack = this.controller.stack(lunName);
      await stack.pipeline.changesSettled();
      if (hold) await this.writesDrained(lun.id);
      await stack.cache.flush();
      if (hold && options.snapshot !== undefined)
        await this.controller.createSnapshot(`${lunName}@${options.snapshot}`);
    } catch (error) {
      if (hold) this.release(lun.id);
      throw error;
    }
    const unitBytes = this.pool.allocationUnitBytes;
    const runs: Array<[number, number]> = full
      ? [[0, lun.sizeBytes]]
      : mergedRuns(older, lun, [...(options.extra ?? []), ...this.newlyDegraded(lun)]);
    this.seenFailed.set(lun.id, this.failedDrives());
    const units = new Map<number, [number, number] | null>();
    for (const [offset, length] of runs)
      for (
        let unit = Math.floor(offset / unitBytes);
        unit * unitBytes < offset + length;
        unit += 1
      ) {
        const entry = lun.map.get(unit);
        units.set(unit, entry ? [entry.rstoreId, entry.rsegIndex] : null);
      }
    return {
      lun: lunName,
      map: map.name,
      covers: older.map((record) => record.name),
      full,
      final: options.final === true,
      sizeBytes: lun.sizeBytes,
      allocationUnitBytes: unitBytes,
      runs,
      units: [...units],
      bytes: runs.reduce((sum, [, length]) => sum + length, 0),
    };
  }

  private failedDrives(): Set<number> {
    return new Set(
      this.pool.metadata.drives
        .filter((drive) => driveStateOf(drive) !== 'online')
        .map((drive) => drive.index),
    );
  }

  /**
   * The LUN's units on RAID-5 RStores with a member out of service since the last pass answered
   * (all such units after a restart): the copier read them from the other members, perhaps while
   * those changed under a mark that did not cover the lost member's bytes (stack.ts
   * widenDegraded marks whole units only once the RStore is degraded).
   */
  private newlyDegraded(lun: LunRecord): Array<[number, number]> {
    const metadata = this.pool.metadata;
    if (metadata.config.raidLevel !== 5) return [];
    const seen = this.seenFailed.get(lun.id) ?? new Set<number>();
    const newly = [...this.failedDrives()].filter((index) => !seen.has(index));
    if (newly.length === 0) return [];
    const unitBytes = this.pool.allocationUnitBytes;
    const runs: Array<[number, number]> = [];
    lun.map.forEachMapped((unitIndex, entry) => {
      const rstore = metadata.rstores.get(entry.rstoreId);
      if (rstore?.members.some((member) => newly.includes(member.driveIndex)))
        runs.push([unitIndex * unitBytes, unitBytes]);
    });
    return runs;
  }

  /** The copier made a pass durable on its target: the maps it covered go. */
  async ack(lunName: string, covers: string[]): Promise<void> {
    const lun = this.pool.lunByName(lunName);
    for (const record of this.maps(lun))
      if (covers.includes(record.name)) await this.removeMap(record);
  }

  /** The final pass is on the target: writes go on, every migration map goes. */
  async finish(lunName: string): Promise<{ pausedMs: number }> {
    const lun = this.pool.lunByName(lunName);
    const hold = this.holds.get(lun.id);
    if (!hold)
      throw new LunfsError(
        'EBUSY',
        `the final pass of LUN '${lunName}' held its writes for more than ${finalHoldMs / 1000} s and they went on: run the migration again to finish it`,
      );
    const pausedMs = this.controller.clock.nowMs() - hold.startedAtMs;
    this.release(lun.id);
    for (const record of this.maps(lun)) await this.removeMap(record);
    this.controller.log.info({ lun: lunName, pausedMs }, 'migration finished');
    return { pausedMs };
  }

  /** A final pass the copier could not finish: writes go on, the maps stay for the next try. */
  abortFinal(lunName: string): void {
    this.release(this.pool.lunByName(lunName).id);
  }

  /** Ends a migration without finishing it (its maps go; writes go on). */
  async cancel(lunName: string): Promise<void> {
    const lun = this.pool.lunByName(lunName);
    this.release(lun.id);
    for (const record of this.maps(lun)) await this.removeMap(record);
  }

  private holdWrites(lun: LunRecord): Hold {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const hold: Hold = {
      release,
      gate,
      startedAtMs: this.controller.clock.nowMs(),
      expired: false,
      timer: setTimeout(() => {
        hold.expired = true;
        this.controller.log.warn(
          { lun: lun.name },
          'a final migration pass took too long: writes go on',
        );
        this.release(lun.id);
      }, finalHoldMs),
    };
    hold.timer.unref?.();
    this.holds.set(lun.id, hold);
    return hold;
  }

  private release(lunId: number): void {
    const hold = this.holds.get(lunId);
    if (!hold) return;
    clearTimeout(hold.timer);
    this.holds.delete(lunId);
    hold.release();
  }

  private startMap(lun: LunRecord): Promise<SnapPointRecord> {
    return this.controller.snapPoints.start(lun, (id) => `.migrate-${id}`);
  }

  private async removeMap(record: SnapPointRecord): Promise<void> {
    if (this.pool.metadata.snapPoints.get(record.id) === record)
      await this.pool.commitOp({ kind: 'snappoint-remove', snapPointId: record.id });
  }
}

/** The union of the maps' marked runs and the extra ranges, in bytes, clipped to the LUN. */
function mergedRuns(
  maps: SnapPointRecord[],
  lun: LunRecord,
  extra: Array<[number, number]>,
): Array<[number, number]> {
  for (const range of extra) {
    const [offset, length] = range;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0)
      throw new LunfsError(
        'EINVAL',
        `a range to copy again is not valid: ${JSON.stringify(range)}`,
      );
  }
  const marked = maps.flatMap((record) => markedExtents(record, lun.sizeBytes));
  return mergeRanges([...extra, ...marked], lun.sizeBytes);
}
