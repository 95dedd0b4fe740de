// The controller: one open pool and the stacks of its LUNs, with the actions the FUSE front and
// the CLI (through the control socket) both use. It is the only owner of the pool in a process.

import { kernelImplementation } from '../native/native-kernels.js';
import { LunfsError } from '../util/errors.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/logger.js';
import type { Pool } from './pool.js';
import { assembleLunStack, makeCacheBudget, type LunStack } from './stack.js';

export interface StatusJson {
  pool: {
    uuid: string;
    raid: string;
    state: 'online';
    totalBytes: number;
    freeBytes: number;
    allocatedBytes: number;
    psegSizeBytes: number;
    allocationUnitBytes: number;
    createdAt: string;
  };
  drives: Array<{ index: number; path: string; sizeBytes: number; state: 'online'; io: 'inline' | 'async'; psegCount: number; holdsMetadataCopy: boolean; metadataCopy?: string }>;
  luns: Array<{ name: string; sizeBytes: number; allocatedBytes: number; createdAt: string; open: number }>;
  cache: { capacityBytes: number; cachedBytes: number; dirtyBytes: number };
  metadata: { journalFillRatio: number };
  kernels: string;
}

export class Controller {
  private readonly stacks = new Map<string, LunStack>();
  private readonly openCounts = new Map<string, number>();
  private readonly budget;

  constructor(
    readonly pool: Pool,
    private readonly settings: { cacheBytes: number; clock: Clock; log: Logger },
  ) {
    this.budget = makeCacheBudget(settings.cacheBytes);
  }

  /** The LUN's stack, assembled on first use. */
  stack(name: string): LunStack {
    let stack = this.stacks.get(name);
    if (!stack) {
      stack = assembleLunStack(this.pool, this.pool.lunByName(name), { budget: this.budget, clock: this.settings.clock });
      this.stacks.set(name, stack);
    }
    return stack;
  }

  opened(name: string): void {
    this.openCounts.set(name, (this.openCounts.get(name) ?? 0) + 1);
  }

  released(name: string): void {
    this.openCounts.set(name, Math.max(0, (this.openCounts.get(name) ?? 0) - 1));
  }

  createLun(name: string, sizeBytes: number): Promise<unknown> {
    return this.pool.createLun(name, sizeBytes);
  }

  async removeLun(name: string): Promise<void> {
    this.pool.lunByName(name); // ENOENT first
    if ((this.openCounts.get(name) ?? 0) > 0) throw new LunfsError('EBUSY', `LUN '${name}' is open; close it (detach loop devices) first`);
    const stack = this.stacks.get(name);
    this.stacks.delete(name);
    if (stack) await stack.cache.drop();
    await this.pool.removeLun(name, () => stack?.thin.releaseAll());
  }

  async resizeLun(name: string, sizeBytes: number): Promise<void> {
    await this.pool.resizeLun(name, sizeBytes);
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.stacks.values()].map((stack) => stack.cache.flush()));
  }

  status(): StatusJson {
    const pool = this.pool;
    const metadata = pool.metadata;
    const luns = [...metadata.luns.values()].map((lun) => {
      const stack = this.stacks.get(lun.name);
      const allocatedBytes = stack ? stack.thin.allocatedBytes : lun.map.mappedCount * metadata.config.allocationUnitBytes;
      return { name: lun.name, sizeBytes: lun.sizeBytes, allocatedBytes, createdAt: new Date(lun.createdAtMs).toISOString(), open: this.openCounts.get(lun.name) ?? 0 };
    });
    const totalBytes = pool.capacityBytes();
    const freeBytes = pool.freeBytes();
    return {
      pool: {
        uuid: metadata.config.poolUuid,
        raid: `raid${metadata.config.raidLevel}`,
        state: 'online',
        totalBytes,
        freeBytes,
        allocatedBytes: totalBytes - freeBytes,
        psegSizeBytes: metadata.config.psegSizeBytes,
        allocationUnitBytes: metadata.config.allocationUnitBytes,
        createdAt: new Date(metadata.config.createdAtMs).toISOString(),
      },
      drives: metadata.drives.map((drive) => {
        const report = pool.copyReports.find((copy) => copy.driveIndex === drive.index);
        return {
          index: drive.index,
          path: pool.drives[drive.index]!.path,
          sizeBytes: drive.sizeBytes,
          state: 'online' as const,
          io: (pool.drives[drive.index] as { inline?: boolean }).inline ? ('inline' as const) : ('async' as const),
          psegCount: drive.psegCount,
          holdsMetadataCopy: report !== undefined,
          ...(report ? { metadataCopy: report.state } : {}),
        };
      }),
      luns,
      cache: { capacityBytes: this.budget.capacityBytes, cachedBytes: this.budget.cachedBytes(), dirtyBytes: this.budget.dirtyBytes() },
      metadata: { journalFillRatio: Number(pool.metadataJournalFillRatio.toFixed(4)) },
      kernels: kernelImplementation,
    };
  }

  /** Flushes every LUN and closes the pool cleanly. */
  async close(): Promise<void> {
    for (const stack of this.stacks.values()) await stack.cache.close();
    this.stacks.clear();
    await this.pool.close();
  }
}
