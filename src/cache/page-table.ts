// The page table of one LUN's cache: the pages it holds, by page index. Dirty pages (dirty or
// inflight bits set) are in dirtyPages, in the order in which they became dirty (the destager's
// expiry scan relies on it); clean pages are in an LRU (lru-cache) bounded so that clean plus
// dirty bytes of every LUN stay within the shared budget's capacity. It is the LUN's member of
// that budget.
//
// Invariants:
// - A page is in exactly one of dirtyPages or cleanPages.
// - Dirty pages are never evicted; a clean page that leaves the table gives its buffer back to
//   the pool, a page that moves between the two maps keeps it.
// - A page's buffer past the end of the device holds zeros (see lookupOrCreate).

import { LRUCache } from 'lru-cache';
import { assert } from '../util/assert.js';
import type { Clock } from '../util/clock.js';
import type { BudgetMember, CacheBudget } from './cache-budget.js';
import { CachePage } from './cache-page.js';

export class PageTable implements BudgetMember {
  private readonly cleanPages: LRUCache<number, CachePage>;
  private readonly dirtyPages = new Map<number, CachePage>();
  /** True while a write applies its pieces: clean pages are not trimmed meanwhile. */
  applying = false;

  constructor(
    private readonly budget: CacheBudget,
    private readonly pageBytes: number,
    private readonly clock: Clock,
  ) {
    const pageBuffers = budget.pageBuffers;
    this.cleanPages = new LRUCache<number, CachePage>({
      max: Math.floor(budget.capacityBytes / pageBytes),
      // An evicted page's buffer goes back to the pool; pages moved to dirtyPages are 'delete'd,
      // not evicted.
      dispose: (page, _index, reason) => {
        if (reason === 'evict') pageBuffers.give(page.buffer);
      },
    });
    budget.caches.add(this);
  }

  get dirtyBytes(): number {
    return this.dirtyPages.size * this.pageBytes;
  }

  get cachedBytes(): number {
    return (this.dirtyPages.size + this.cleanPages.size) * this.pageBytes;
  }

  get dirtyPageCount(): number {
    return this.dirtyPages.size;
  }

  /** Dirty pages in the order in which they became dirty. */
  dirtyPagesInOrder(): IterableIterator<CachePage> {
    return this.dirtyPages.values();
  }

  dirtyPage(pageIndex: number): CachePage | undefined {
    return this.dirtyPages.get(pageIndex);
  }

  lookup(pageIndex: number): CachePage | undefined {
    return this.dirtyPages.get(pageIndex) ?? this.cleanPages.get(pageIndex);
  }

  /** The page, or a new clean page with no valid sector; deviceBytes is the device's size now. */
  lookupOrCreate(pageIndex: number, deviceBytes: number): CachePage {
    let page = this.lookup(pageIndex);
    if (!page) {
      page = new CachePage(pageIndex, this.budget.pageBuffers.take());
      // A recycled buffer holds another page's data (maybe another LUN's): past the device end it
      // must read as zeros once the device grows (see the invariants). Only the last page pays.
      const endInPage = deviceBytes - pageIndex * this.pageBytes;
      if (endInPage < this.pageBytes) page.buffer.fill(0, endInPage);
      this.cleanPages.set(pageIndex, page);
    }
    return page;
  }

  /** Copy on write: gives the page its own buffer if a destage in flight is sending from it. */
  unshare(page: CachePage): void {
    if (page.destageBuffer !== page.buffer) return;
    const own = this.budget.pageBuffers.take();
    page.buffer.copy(own);
    page.buffer = own;
  }

  /** Marks the sectors of mask dirty, written by write seq in epoch; a clean page becomes dirty. */
  markDirty(page: CachePage, mask: number, seq: number, epoch: number): void {
    if (page.dirty === 0 && page.inflight === 0) {
      this.cleanPages.delete(page.index);
      this.dirtyPages.set(page.index, page);
      this.trim();
    }
    if (page.dirty === 0) {
      page.dirtySinceSeq = seq;
      page.dirtySinceMs = this.clock.nowMs();
      page.dirtyEpoch = epoch;
    }
    assert(page.dirtyEpoch === epoch, 'dirty data of two snapshot epochs in one page');
    page.dirty = (page.dirty | mask) >>> 0;
  }

  /** Moves a dirty page that has no dirty data left among the clean pages (no trim). */
  moveToClean(page: CachePage): void {
    this.dirtyPages.delete(page.index);
    this.cleanPages.set(page.index, page);
  }

  /** Drops the clean page of pageIndex, if any, and gives its buffer back. */
  dropClean(pageIndex: number): void {
    const page = this.cleanPages.get(pageIndex);
    if (!page) return;
    this.cleanPages.delete(pageIndex);
    this.budget.pageBuffers.give(page.buffer);
  }

  /** Drops a page, dirty or clean, and gives its buffer back (its sectors were discarded). */
  forget(page: CachePage): void {
    this.dirtyPages.delete(page.index);
    this.cleanPages.delete(page.index);
    this.budget.pageBuffers.give(page.buffer);
  }

  /** Evicts clean pages (this LUN's first, then others') until the budget holds its capacity. */
  trim(): void {
    if (this.applying) return;
    const budget = this.budget;
    while (budget.cachedBytes() > budget.capacityBytes) {
      if (this.cleanPages.pop() === undefined && !budget.evictFromOthers(this)) break;
    }
  }

  /** Drops the least recently used clean page; false when there is none. */
  evictOneCleanPage(): boolean {
    return this.cleanPages.pop() !== undefined;
  }

  /** Gives every page's buffer back and leaves the budget (the cache is closed or dropped). */
  forgetAll(): void {
    const pageBuffers = this.budget.pageBuffers;
    for (const page of this.dirtyPages.values()) pageBuffers.give(page.buffer);
    for (const page of this.cleanPages.values()) pageBuffers.give(page.buffer);
    this.dirtyPages.clear();
    this.cleanPages.clear();
    this.budget.caches.delete(this);
  }
}
