// The destager of one LUN's cache: it hands dirty sectors to the layer below (the destage
// pipeline) and tells waiters when a destage ends. Destages start when dirty bytes pass the
// background threshold, when dirty data is older than expireMs, when a flush waits, or when a
// write of a newer snapshot epoch needs a page's older data gone first (destageOlderEpoch).
// flushUpTo() is the cache's flush: it waits until every write acknowledged before it has gone
// below, then flushes below.
//
// Invariants:
// - At most one destage of a page is in flight, so two versions of a sector never race below.
// - A destage sends from the page's own buffer; a write to the page meanwhile copies it first
//   (PageTable.unshare), so the data sent is the data as it was when the destage began.
// - A failed destage puts its data back as dirty data of its own epoch, and flush reports the
//   error once; writers waiting for dirty bytes to fall are not blocked by it forever.

import type { BlockDevice } from '../block/block-device.js';
import { assert } from '../util/assert.js';
import type { Clock } from '../util/clock.js';
import { blockBytes } from '../util/constants.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { CacheBudget } from './cache-budget.js';
import { holdsOlderEpoch, sectorRuns, type CachePage, type CacheStats } from './cache-page.js';
import type { PageTable } from './page-table.js';

/** What the destager needs of the cache's options (WriteBackCacheOptions has them all). */
export interface DestagerOptions {
  budget: CacheBudget;
  pageBytes: number;
  dirtyBackgroundBytes: number;
  expireMs: number;
  maxInflightDestages: number | (() => number);
  clock: Clock;
  log: Logger;
}

export class Destager {
  private inflightDestages = 0;
  private destageError: unknown;
  private flushWaiters = 0;
  private progressWaiters: Array<() => void> = [];
  private expireTimer: NodeJS.Timeout | undefined;
  private kickScheduled = false;
  private stopped = false;

  constructor(
    private readonly pages: PageTable,
    private readonly below: BlockDevice,
    private readonly options: DestagerOptions,
    private readonly stats: CacheStats,
  ) {}

  /** Destages of pages under way. */
  get inflightCount(): number {
    return this.inflightDestages;
  }

  /**
   * Waits until no data of a write up to seq is dirty or on its way below, then flushes below.
   * Throws (once) the error of a destage that failed since the last flush.
   */
  async flushUpTo(upToSeq: number): Promise<void> {
    this.flushWaiters += 1;
    try {
      for (;;) {
        if (this.destageError !== undefined) {
          const error = this.destageError;
          this.destageError = undefined;
          throw error;
        }
        if (!this.hasDataUpTo(upToSeq)) break;
        this.kick();
        await this.nextProgress();
      }
    } finally {
      this.flushWaiters -= 1;
    }
    await this.below.flush();
  }

  /** No destage starts on its own any more (the cache is closed or dropped). */
  stop(): void {
    this.stopped = true;
    if (this.expireTimer) clearTimeout(this.expireTimer);
  }

  private hasDataUpTo(seq: number): boolean {
    for (const page of this.pages.dirtyPagesInOrder()) {
      if (page.dirtySinceSeq <= seq || page.inflightSinceSeq <= seq) return true;
    }
    return false;
  }

  /**
   * Kicks the destager after the current request has been answered: with inline drive I/O a
   * destage runs on this thread, and the FUSE reply should not wait behind it.
   */
  kickSoon(): void {
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    setImmediate(() => {
      this.kickScheduled = false;
      this.kick();
    });
  }

  /**
   * Starts destages: every eligible page when urgent (a flush waits, or dirty bytes passed the
   * background threshold), otherwise only pages whose dirty data expired. The page table keeps
   * the order in which pages became dirty, so the scan stops at the first page not yet due.
   */
  private kick(): void {
    if (this.stopped && this.flushWaiters === 0) return;
    const limit = this.options.maxInflightDestages;
    const maxInflight = typeof limit === 'number' ? limit : limit();
    if (this.inflightDestages >= maxInflight) return;
    const now = this.options.clock.nowMs();
    const urgent =
      this.flushWaiters > 0 || this.options.budget.dirtyBytes() > this.options.dirtyBackgroundBytes;
    for (const page of this.pages.dirtyPagesInOrder()) {
      if (this.inflightDestages >= maxInflight) return;
      if (page.dirty === 0 || page.inflight !== 0) continue;
      if (!urgent && now - page.dirtySinceMs < this.options.expireMs) {
        this.armExpireTimer(page.dirtySinceMs + this.options.expireMs - now);
        return;
      }
      void this.destagePage(page);
    }
  }

  private armExpireTimer(delayMs: number): void {
    if (this.expireTimer || this.stopped) return;
    this.expireTimer = setTimeout(
      () => {
        this.expireTimer = undefined;
        this.kick();
      },
      Math.max(1, delayMs),
    );
    this.expireTimer.unref();
  }

  private async destagePage(page: CachePage): Promise<void> {
    const mask = page.dirty;
    page.inflight = mask;
    page.inflightSinceSeq = page.dirtySinceSeq;
    page.inflightEpoch = page.dirtyEpoch;
    page.dirty = 0;
    page.dirtySinceSeq = Infinity;
    this.inflightDestages += 1;
    // Send from the page's own buffer; a write to the page while this is in flight copies it
    // first (unshare), so the data sent is the data as it was now. Sequential writes never pay
    // for a copy.
    const pageBuffers = this.options.budget.pageBuffers;
    const buffer = page.buffer;
    page.destageBuffer = buffer;
    try {
      const writes: Promise<void>[] = [];
      for (const [firstSector, sectorCount] of sectorRuns(mask)) {
        const start = firstSector * blockBytes;
        // The last sector of a device whose size is not a multiple of the sector ends early.
        const end = Math.min(
          start + sectorCount * blockBytes,
          this.below.sizeBytes - page.index * this.options.pageBytes,
        );
        writes.push(
          this.below.write(
            page.index * this.options.pageBytes + start,
            buffer.subarray(start, end),
            page.inflightEpoch,
          ),
        );
        this.stats.destagedBytes += end - start;
      }
      // Wait for every run, even after a failure: the buffer goes back to the pool only when
      // unused.
      const results = await Promise.allSettled(writes);
      const failure = results.find(
        (result): result is PromiseRejectedResult => result.status === 'rejected',
      );
      if (failure) throw failure.reason;
    } catch (error) {
      this.putBackAfterFailure(page, mask, error);
    } finally {
      page.destageBuffer = undefined;
      if (page.buffer !== buffer) pageBuffers.give(buffer); // the page was unshared meanwhile
      page.inflight = 0;
      page.inflightSinceSeq = Infinity;
      this.inflightDestages -= 1;
      if (page.dirty === 0 && this.pages.dirtyPage(page.index) === page) {
        this.pages.moveToClean(page);
        this.pages.trim();
      }
      this.notifyProgress();
      if (this.destageError === undefined) this.kick();
    }
  }

  /** A failed destage: its sectors are dirty again, for flush to report and a later destage. */
  private putBackAfterFailure(page: CachePage, mask: number, error: unknown): void {
    this.stats.destageErrors += 1;
    this.destageError = error;
    this.options.log.error(
      { err: error, page: page.index },
      'destage failed; data stays dirty in the cache',
    );
    // Back under the epoch it was written in: writes since the destage began share it (a
    // write of a newer epoch waits for this destage to end, see destageOlderEpoch).
    assert(
      page.dirty === 0 || page.dirtyEpoch === page.inflightEpoch,
      'a failed destage of an older epoch under newer dirty data',
    );
    page.dirty = (page.dirty | mask) >>> 0;
    page.dirtyEpoch = page.inflightEpoch;
    page.dirtySinceSeq = Math.min(page.dirtySinceSeq, page.inflightSinceSeq);
  }

  /**
   * Destages the page's dirty data of an epoch older than epoch, and waits for it and for a
   * destage of such data already in flight: should that fail, its data goes back to the page as
   * dirty data of its own epoch, which a newer write must not have joined meanwhile.
   */
  async destageOlderEpoch(page: CachePage, epoch: number): Promise<void> {
    const errorsBefore = this.stats.destageErrors;
    while (this.pages.dirtyPage(page.index) === page && holdsOlderEpoch(page, epoch)) {
      if (page.inflight === 0) void this.destagePage(page);
      await this.nextProgress();
      if (this.stats.destageErrors !== errorsBefore)
        throw new LunfsError(
          'EIO',
          `destage of cache page ${page.index} failed; the write was not applied`,
        );
    }
  }

  /** Waits while the pool's dirty bytes are above limitBytes (writers wait here). */
  async waitForDirtyBelow(limitBytes: number): Promise<void> {
    while (this.options.budget.dirtyBytes() > limitBytes && this.pages.dirtyPageCount > 0) {
      if (this.destageError !== undefined) return; // flush reports it; do not block writers forever
      this.kick();
      await this.nextProgress();
    }
  }

  /** Resolves at the next notifyProgress: a destage, write-through or discard ended. */
  nextProgress(): Promise<void> {
    return new Promise((resolve) => this.progressWaiters.push(resolve));
  }

  notifyProgress(): void {
    const waiters = this.progressWaiters;
    this.progressWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
