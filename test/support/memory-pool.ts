// Pools on simulated drives with a small geometry, so that a few MiB hold many PSEGs, RStores and
// allocation units and tests cross every boundary quickly. Also: a canonical, comparable view of
// pool metadata, and a simulated power cut of a whole pool.

import { MemoryDrive } from '../../src/drive/memory-drive.js';
import type { Drive } from '../../src/drive/drive.js';
import type { PoolMetadata, RaidLevel } from '../../src/meta/pool-metadata.js';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Pool } from '../../src/pool/pool.js';
import { FakeClock } from './fake-clock.js';
import { SessionDrive } from './session-drive.js';

export const smallGeometry = {
  psegSizeBytes: 256 * KiB,
  allocationUnitBytes: 64 * KiB,
  stripeUnitBytes: 16 * KiB,
} as const;

export interface MemoryPoolOptions {
  raidLevel: RaidLevel;
  driveCount?: number;
  /**
   * Default 6 MiB and the 4 KiB of the tail label: 6 MiB of layout and PSEGs, as before labels at
   * both ends.
   */
  driveSizeBytes?: number;
  psegSizeBytes?: number;
  allocationUnitBytes?: number;
  stripeUnitBytes?: number;
  rssSize?: number;
  /** Seed of the pool and drive UUIDs. */
  seed?: number;
  clock?: FakeClock;
  /** Name prefix of the drives (so two pools in one test are told apart in messages). */
  name?: string;
}

export function makeMemoryDrives(count: number, sizeBytes: number, name = 'mem'): MemoryDrive[] {
  return [...Array(count).keys()].map((index) => new MemoryDrive(`${name}${index}`, sizeBytes));
}

export interface MemoryPool {
  pool: Pool;
  drives: MemoryDrive[];
  clock: FakeClock;
}

/** Formats a pool on new MemoryDrives (which read as zeros) and returns it open. */
export async function formatMemoryPool(options: MemoryPoolOptions): Promise<MemoryPool> {
  const clock = options.clock ?? new FakeClock();
  const drives = makeMemoryDrives(
    options.driveCount ?? 3,
    options.driveSizeBytes ?? 6 * MiB + 4096,
    options.name,
  );
  const pool = await formatPoolOn(drives, options, clock);
  return { pool, drives, clock };
}

export async function formatPoolOn(
  drives: Drive[],
  options: MemoryPoolOptions,
  clock = options.clock ?? new FakeClock(),
): Promise<Pool> {
  const random = new SeededRandom(options.seed ?? 1);
  return Pool.format(drives, {
    raidLevel: options.raidLevel,
    psegSizeBytes: options.psegSizeBytes ?? smallGeometry.psegSizeBytes,
    allocationUnitBytes: options.allocationUnitBytes ?? smallGeometry.allocationUnitBytes,
    stripeUnitBytes: options.stripeUnitBytes ?? smallGeometry.stripeUnitBytes,
    rssSize: options.rssSize,
    drivesZeroed: true,
    clock,
    random: () => random.next(),
    log: silentLogger(),
  });
}

/** Opens a pool on MemoryDrives that a previous clean close() closed. */
export async function reopenMemoryPool(
  drives: MemoryDrive[],
  clock = new FakeClock(),
): Promise<Pool> {
  for (const drive of drives) drive.reopen();
  return Pool.open(drives, { clock, log: silentLogger() });
}

/** Closes the pool cleanly and opens it again on the same drives. */
export async function cycleMemoryPool(memoryPool: MemoryPool): Promise<Pool> {
  await memoryPool.pool.close();
  memoryPool.pool = await reopenMemoryPool(memoryPool.drives, memoryPool.clock);
  return memoryPool.pool;
}

/** Views of the drives for one session; see SessionDrive. */
export function sessionViews(drives: MemoryDrive[]): SessionDrive[] {
  return drives.map((drive) => new SessionDrive(drive));
}

/**
 * A power cut: fences the old session's views (its objects are abandoned, never closed), lets
 * every MemoryDrive lose, complete or tear its unflushed writes as the seed decides, and returns
 * fresh views for the next session.
 */
export function powerCut(views: SessionDrive[], random: SeededRandom): SessionDrive[] {
  for (const view of views) view.fence();
  for (const view of views) view.inner.crash(random);
  return views.map((view) => new SessionDrive(view.inner));
}

/**
 * Everything a pool's metadata says, as plain data that toEqual can compare (cleanShutdown aside).
 */
export function describeMetadata(metadata: PoolMetadata): unknown {
  return {
    config: metadata.config,
    drives: metadata.drives,
    rss: metadata.rss,
    // The write-intent bit is session state (set by writes, cleared when idle or at a clean close).
    rstores: [...metadata.rstores.values()]
      .sort((a, b) => a.id - b.id)
      .map(({ dirty: _dirty, ...rest }) => rest),
    luns: [...metadata.luns.values()]
      .sort((a, b) => a.id - b.id)
      .map((lun) => {
        const map: Array<[number, number, number, number]> = [];
        lun.map.forEachMapped((unitIndex, entry) =>
          map.push([unitIndex, entry.rstoreId, entry.rsegIndex, entry.flags]),
        );
        return {
          id: lun.id,
          name: lun.name,
          sizeBytes: lun.sizeBytes,
          createdAtMs: lun.createdAtMs,
          unitCount: lun.map.allocationUnitCount,
          map,
        };
      }),
    nextLunId: metadata.nextLunId,
    nextRStoreId: metadata.nextRStoreId,
  };
}
