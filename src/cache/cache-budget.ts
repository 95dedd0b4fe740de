// The byte budget that the caches of all LUNs of a pool share (--cache-size). Each LUN's page
// table is a member: clean pages of any member are evicted to keep the total within
// capacityBytes, and writers wait on the total dirty bytes. The page buffers of every member come
// from one PageBufferPool, allocated and touched at mount.

import { PageBufferPool } from './page-buffer-pool.js';

/** What the budget sees of one LUN's cache. */
export interface BudgetMember {
  readonly cachedBytes: number;
  readonly dirtyBytes: number;
  /** Drops the least recently used clean page; false when there is none. */
  evictOneCleanPage(): boolean;
}

/**
 * The byte budget that the caches of all LUNs of a pool share: clean pages of any of them are
 * evicted to keep the total within capacityBytes, and writers wait on the total dirty bytes.
 */
export class CacheBudget {
  readonly caches = new Set<BudgetMember>();
  readonly pageBuffers: PageBufferPool;

  constructor(
    readonly capacityBytes: number,
    pageBytes: number,
  ) {
    this.pageBuffers = new PageBufferPool(pageBytes);
  }

  cachedBytes(): number {
    let bytes = 0;
    for (const cache of this.caches) bytes += cache.cachedBytes;
    return bytes;
  }

  dirtyBytes(): number {
    let bytes = 0;
    for (const cache of this.caches) bytes += cache.dirtyBytes;
    return bytes;
  }

  /** Evicts one clean page of a cache other than the caller's; false when none has one. */
  evictFromOthers(caller: BudgetMember): boolean {
    for (const cache of this.caches) if (cache !== caller && cache.evictOneCleanPage()) return true;
    return false;
  }
}
