// The write-back cache: LUN data in pages of pageBytes with per-sector valid and dirty bits.
// A write is acknowledged once it is in a page; a background destager sends dirty sectors down
// the destage pipeline; flush() waits until every write acknowledged before it has gone down,
// then flushes below. Clean pages live in an LRU (lru-cache) bounded so that clean plus dirty
// bytes stay within the capacity; dirty pages are never evicted, and writers wait when dirty
// bytes pass the dirty limit.
//
// WriteBackCache is the block device its users see; it checks ranges, counts writes, and holds
// the read path, discard and overlayBefore. The rest is in this folder, one part per file:
//   cache-page.ts      a page, its sector masks and the cache's counters
//   page-table.ts      which pages are held (dirty map, clean LRU), copy on write, eviction
//   cache-budget.ts    the byte budget every LUN cache of a pool shares
//   page-writer.ts     the write path into pages (partial sectors, epochs, applied at once)
//   write-through.ts   whole pages sent straight below when the drives are memory
//   destager.ts        destages and their failures, expiry, the flush's wait
//
// Invariants:
// - A page is in exactly one of the dirty pages (dirty or inflight bits set) or the clean LRU.
// - At most one destage of a page is in flight, so two versions of a sector never race below.
// - A valid sector in a page is never older than the same sector below.
// - A page that a read fills from below stays the same object for the whole read, or the read
//   does not fill the cache (see read()).
// - Snapshot epochs: every write is tagged with the epoch (options.epoch()) of the instant it is
//   applied, all its pages at once. A page's dirty sectors share one epoch: before a write of a
//   newer epoch touches a page holding dirty data of an older one, that data is destaged, so the
//   older version reaches the source (and the snapshot that holds it) before it is overwritten.
//   Such a write also waits for a destage of older-epoch data in flight on the page, so that a
//   failed destage puts its data back under its own epoch, never under a newer one. Only that
//   page waits; nothing else pauses.
// - The bytes of a page past the end of the device are zeros, as below (nothing is ever written
//   there). A sector cut short by the end is valid as a whole, so when the device grows (a LUN
//   resize) its tail is data at once: read from the cache, and destaged with the sector.

import { checkRange, forEachPiece, type BlockDevice } from '../block/block-device.js';
import { assert } from '../util/assert.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/logger.js';
import type { CacheBudget } from './cache-budget.js';
import { Destager } from './destager.js';
import { PageTable } from './page-table.js';
import { PageWriter } from './page-writer.js';
import { WriteThrough } from './write-through.js';
import { sectorMask, sectorRuns, wholeSectorMask, type CacheStats } from './cache-page.js';
import { blockBytes } from '../util/constants.js';

export interface WriteBackCacheOptions {
  /** Shared by every LUN cache of a pool. */
  budget: CacheBudget;
  pageBytes: number;
  /** Writers wait while dirty bytes are above this. */
  dirtyLimitBytes: number;
  /** The destager starts when dirty bytes pass this, or when dirty data is older than expireMs. */
  dirtyBackgroundBytes: number;
  expireMs: number;
  /**
   * Destages of pages under way at most; a function, so the layer above can allow more while
   * destages wait for something shared (preservations waiting for their batch's commit).
   */
  maxInflightDestages: number | (() => number);
  clock: Clock;
  log: Logger;
  /** The LUN's current snapshot epoch (0 when it never had snapshots). */
  epoch?: () => number;
  /**
   * Whether a write of whole pages that the cache holds no dirty data for may go straight below
   * (write-through) instead of into pages: true when the drives are memory, where a cache copy
   * costs more than the drive write it would defer. Asked at every write.
   */
  writeThrough?: () => boolean;
}

export class WriteBackCache implements BlockDevice {
  private readonly sectorsPerPage: number;
  private readonly pages: PageTable;
  private writeSeq = 0;
  private readonly destager: Destager;
  private readonly writeThrough: WriteThrough;
  private readonly writer: PageWriter;
  private closed = false;
  readonly stats: CacheStats = {
    readHits: 0,
    readMisses: 0,
    writes: 0,
    destagedBytes: 0,
    destageErrors: 0,
    writtenThroughBytes: 0,
  };

  constructor(
    private readonly below: BlockDevice,
    private readonly options: WriteBackCacheOptions,
  ) {
    assert(options.pageBytes % blockBytes === 0, 'cache page must be whole sectors');
    this.sectorsPerPage = options.pageBytes / blockBytes;
    assert(this.sectorsPerPage <= 32, 'cache page holds at most 32 sectors (one 32-bit mask)');
    assert(
      options.dirtyLimitBytes <= options.budget.capacityBytes,
      'dirty limit exceeds the cache capacity',
    );
    assert(
      options.dirtyBackgroundBytes <= options.dirtyLimitBytes,
      'background threshold exceeds the dirty limit',
    );
    assert(
      options.budget.capacityBytes >= 2 * options.pageBytes,
      'cache must hold at least two pages',
    );
    assert(
      options.budget.pageBuffers.pageBytes === options.pageBytes,
      'cache budget and cache disagree on the page size',
    );
    this.pages = new PageTable(options.budget, options.pageBytes, options.clock);
    this.destager = new Destager(this.pages, below, options, this.stats);
    this.writeThrough = new WriteThrough(
      this.pages,
      below,
      options.pageBytes,
      options.writeThrough,
      this.destager,
      this.stats,
    );
    this.writer = new PageWriter(
      this.pages,
      this.destager,
      below,
      options.pageBytes,
      options.epoch,
    );
  }

  get sizeBytes(): number {
    return this.below.sizeBytes;
  }

  get dirtyBytes(): number {
    return this.pages.dirtyBytes;
  }

  get cachedBytes(): number {
    return this.pages.cachedBytes;
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    checkRange(this, offsetBytes, target.length, 'read');
    if (this.writeThrough.active) await this.writeThrough.waitFor(offsetBytes, target.length);
    const misses: Promise<void>[] = [];
    forEachPiece(
      offsetBytes,
      target.length,
      this.options.pageBytes,
      (pageIndex, inPage, length, inRequest) => {
        const slice = target.subarray(inRequest, inRequest + length);
        const page = this.pages.lookup(pageIndex);
        const mask = sectorMask(inPage, length);
        if (page && (page.valid & mask) >>> 0 === mask) {
          page.buffer.copy(slice, 0, inPage, inPage + length);
          this.stats.readHits += 1;
          return;
        }
        this.stats.readMisses += 1;
        misses.push(
          !page && length === this.options.pageBytes
            ? this.readStreaming(pageIndex, slice)
            : this.readMiss(pageIndex, inPage, slice),
        );
      },
    );
    if (misses.length === 1) return misses[0];
    await Promise.all(misses);
  }

  /**
   * A whole page that is not cached: read it straight into the caller's buffer and do not keep
   * it. Streaming reads then cost one copy, as with no cache at all, and do not evict pages that
   * hold data worth keeping (dirty data, or small blocks that are read again).
   */
  private async readStreaming(pageIndex: number, slice: Buffer): Promise<void> {
    await this.below.read(pageIndex * this.options.pageBytes, slice);
    const current = this.pages.lookup(pageIndex);
    if (!current || current.valid === 0) return;
    // A write during the read made a page: its sectors are newer than what was read.
    for (const [firstSector, sectorCount] of sectorRuns(current.valid)) {
      const start = firstSector * blockBytes;
      current.buffer.copy(slice, start, start, start + sectorCount * blockBytes);
    }
  }

  write(offsetBytes: number, data: Buffer): Promise<void> {
    return this.writeData(offsetBytes, data, true);
  }

  private async writeData(offsetBytes: number, data: Buffer, prepare: boolean): Promise<void> {
    checkRange(this, offsetBytes, data.length, 'write');
    this.throwIfClosed();
    if (prepare) this.below.prepareWrite?.(offsetBytes, data.length);
    this.writeSeq += 1;
    this.stats.writes += 1;
    const seq = this.writeSeq;
    if (this.writeThrough.active) await this.writeThrough.waitFor(offsetBytes, data.length);
    if (this.writeThrough.may(offsetBytes, data.length)) {
      await this.writeThrough.write(offsetBytes, data, this.currentEpoch());
      return;
    }
    const firstPage = Math.floor(offsetBytes / this.options.pageBytes);
    const lastPage = Math.floor(
      (offsetBytes + Math.max(1, data.length) - 1) / this.options.pageBytes,
    );
    this.writeThrough.beginPreparing(firstPage, lastPage);
    try {
      await this.writer.write(offsetBytes, data, seq);
    } finally {
      this.writeThrough.endPreparing(firstPage, lastPage);
    }
    this.destager.kickSoon();
    if (this.options.budget.dirtyBytes() > this.options.dirtyLimitBytes)
      await this.destager.waitForDirtyBelow(this.options.dirtyLimitBytes);
  }

  /** Waits until no write-through is on its way (a snapshot is about to be taken). */
  quiesceWriteThrough(): Promise<void> {
    return this.writeThrough.quiesce();
  }

  private currentEpoch(): number {
    return this.options.epoch?.() ?? 0;
  }

  /**
   * Copies into target, over data read from below, the cached writes tagged with an epoch below
   * epoch (dirty, or on their way below): what a snapshot of that epoch holds there.
   */
  overlayBefore(offsetBytes: number, target: Buffer, epoch: number): void {
    forEachPiece(
      offsetBytes,
      target.length,
      this.options.pageBytes,
      (pageIndex, inPage, length, inRequest) => {
        const page = this.pages.dirtyPage(pageIndex);
        if (!page) return;
        const overlay = (buffer: Buffer | undefined, mask: number): void => {
          if (!buffer) return;
          for (const [firstSector, sectorCount] of sectorRuns(mask)) {
            const from = Math.max(firstSector * blockBytes, inPage);
            const to = Math.min((firstSector + sectorCount) * blockBytes, inPage + length);
            if (from < to) buffer.copy(target, inRequest + from - inPage, from, to);
          }
        };
        if (page.inflight !== 0 && page.inflightEpoch < epoch)
          overlay(page.destageBuffer, page.inflight);
        if (page.dirty !== 0 && page.dirtyEpoch < epoch) overlay(page.buffer, page.dirty);
      },
    );
  }

  flush(): Promise<void> {
    return this.destager.flushUpTo(this.writeSeq);
  }

  /**
   * The whole sectors of the range are forgotten here (dropped pages, or sectors made clean
   * zeros) and discarded below; the partial sectors at its ends get zeros written through the
   * cache like any write. Discarding below only whole sectors keeps every sector a value it
   * really had: zeroing part of a sector below while newer data for the rest of it is still
   * dirty here would leave, after a crash, a sector that never existed.
   */
  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, 'discard');
    if (lengthBytes === 0) return;
    if (this.writeThrough.active) await this.writeThrough.waitFor(offsetBytes, lengthBytes);
    const endBytes = offsetBytes + lengthBytes;
    const innerStart = Math.ceil(offsetBytes / blockBytes) * blockBytes;
    // A last sector cut short by the device end is whole when the range reaches the end.
    const innerEnd =
      endBytes === this.sizeBytes ? endBytes : Math.floor(endBytes / blockBytes) * blockBytes;
    if (innerEnd <= innerStart) {
      await this.writeZeros(offsetBytes, lengthBytes);
      return;
    }
    await this.forgetAndDiscardWholeSectors(innerStart, innerEnd - innerStart);
    this.destager.notifyProgress();
    if (innerStart > offsetBytes) await this.writeZeros(offsetBytes, innerStart - offsetBytes);
    if (endBytes > innerEnd) await this.writeZeros(innerEnd, endBytes - innerEnd);
  }

  /**
   * Drops what the cache holds for a sector-aligned range and discards it below. First, until none
   * is left: dirty data of an older snapshot epoch goes below (it belongs to a snapshot, which must
   * get it before the discard forgets it), and destages in flight in the range end (no older
   * version may land below after the discard). Then the pages go, and the discard below starts in
   * the same turn: it takes the epoch of that turn, the one the dropped data was written in. A
   * turn between them would let a snapshot instant fall there, and the discard below would then
   * preserve for that snapshot an original without the data the cache just dropped.
   */
  private async forgetAndDiscardWholeSectors(
    offsetBytes: number,
    lengthBytes: number,
  ): Promise<void> {
    const pageBytes = this.options.pageBytes;
    const first = Math.floor(offsetBytes / pageBytes);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / pageBytes);
    for (;;) {
      const epoch = this.currentEpoch();
      let waited = false;
      for (let index = first; index <= last; index += 1) {
        const page = this.pages.dirtyPage(index);
        if (page && page.dirty !== 0 && page.dirtyEpoch < epoch) {
          await this.destager.destageOlderEpoch(page, epoch);
          waited = true;
        }
      }
      for (let index = first; index <= last && !waited; index += 1) {
        if ((this.pages.dirtyPage(index)?.inflight ?? 0) !== 0) {
          await this.destager.nextProgress();
          waited = true;
        }
      }
      if (!waited) break;
    }
    forEachPiece(offsetBytes, lengthBytes, pageBytes, (pageIndex, inPage, length) => {
      const page = this.pages.lookup(pageIndex);
      if (!page) return;
      if (
        inPage === 0 &&
        (length === pageBytes || pageIndex * pageBytes + length === this.sizeBytes)
      ) {
        this.pages.forget(page);
        return;
      }
      // Those sectors read as zeros below once discarded: here they become clean zeros.
      this.pages.unshare(page);
      page.buffer.fill(0, inPage, inPage + length);
      const mask = sectorMask(inPage, length);
      page.valid = (page.valid | mask) >>> 0;
      page.dirty = (page.dirty & ~mask) >>> 0;
      if (page.dirty === 0 && page.inflight === 0 && this.pages.dirtyPage(pageIndex) === page) {
        page.dirtySinceSeq = Infinity;
        this.pages.moveToClean(page);
      }
    });
    await this.below.discard(offsetBytes, lengthBytes);
  }

  /** Zeros through the cache (no allocation: a thin volume skips zeros over unallocated space). */
  private async writeZeros(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.writeData(offsetBytes, Buffer.alloc(lengthBytes), false);
  }

  /** Flushes, then stops the expiry timer and leaves the budget. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    this.destager.stop();
    this.pages.forgetAll();
  }

  /** Waits for in-flight destages, then forgets every page (the volume is being removed). */
  async drop(): Promise<void> {
    this.closed = true;
    this.destager.stop();
    while (this.destager.inflightCount > 0) await this.destager.nextProgress();
    this.pages.forgetAll();
  }

  private async readMiss(pageIndex: number, inPage: number, slice: Buffer): Promise<void> {
    // Create the page before reading below: a write during the read marks its sectors valid in
    // this same object, so the fill below never overwrites newer data (see the invariants).
    const page = this.pages.lookupOrCreate(pageIndex, this.sizeBytes);
    const offsetBytes = pageIndex * this.options.pageBytes + inPage;
    await this.below.read(offsetBytes, slice);
    let current = this.pages.lookup(pageIndex);
    if (current !== page) {
      // The page left the cache while this read (evicted, perhaps replaced since). It may have
      // been dirty or in flight when the read began, its data reaching below only during the
      // read: what was read can be older than a write acknowledged before it. A page leaves only
      // once its data is below, so below holds it now: read again (model seed 109987790 read
      // zeros over data written and acknowledged before the read).
      await this.below.read(offsetBytes, slice);
      current = this.pages.lookup(pageIndex);
    }
    if (!current) return;
    // Cached data is never older than below: valid sectors win over what was read.
    for (const [firstSector, sectorCount] of sectorRuns(current.valid)) {
      const from = Math.max(firstSector * blockBytes, inPage);
      const to = Math.min((firstSector + sectorCount) * blockBytes, inPage + slice.length);
      if (from < to) current.buffer.copy(slice, from - inPage, from, to);
    }
    if (current !== page) return; // the page was replaced while reading: keep nothing
    // Keep the whole sectors that were read and are not valid yet.
    const readMask = wholeSectorMask(inPage, slice.length) & ~current.valid;
    for (const [firstSector, sectorCount] of sectorRuns(readMask)) {
      const start = firstSector * blockBytes;
      slice.copy(current.buffer, start, start - inPage, start - inPage + sectorCount * blockBytes);
    }
    current.valid = (current.valid | readMask) >>> 0;
  }

  private throwIfClosed(): void {
    assert(!this.closed, 'write to a closed cache');
  }
}
