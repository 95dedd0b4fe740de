// Write-through of whole pages: when every drive of the pool is memory, a write of whole pages
// that the cache holds no dirty data for, no destage in flight and no other write being prepared
// goes straight below and is acknowledged when it is there (one copy instead of the cache copy
// plus the destage). This class keeps the pages such writes are sending (reads, writes and
// discards of them wait) and the pages cached writes are preparing (no write-through there).
//
// Invariants:
// - A page being written through has no page in the table: its clean copy is dropped first, and
//   no request touches it until the write ends, so none sees or keeps older data.
// - A snapshot is taken only after quiesce(): every write is below or in the cache then.

import type { BlockDevice } from '../block/block-device.js';
import type { CacheStats } from './cache-page.js';
import type { PageTable } from './page-table.js';

/** Told when a write-through ends, so that requests waiting for progress look again. */
export interface ProgressNotifier {
  notifyProgress(): void;
}

export class WriteThrough {
  /** Pages a write-through is sending below: other requests on them wait for it. */
  private readonly writingThrough = new Map<number, Promise<void>>();
  /**
   * Pages a cached write is preparing (reading partial sectors, waiting): no write-through there.
   */
  private readonly preparing = new Map<number, number>();

  constructor(
    private readonly pages: PageTable,
    private readonly below: BlockDevice,
    private readonly pageBytes: number,
    /** Whether write-through is allowed now (the drives are memory); asked at every write. */
    private readonly allowed: (() => boolean) | undefined,
    private readonly progress: ProgressNotifier,
    private readonly stats: CacheStats,
  ) {}

  /** Whether any write-through is on its way (requests then check their pages). */
  get active(): boolean {
    return this.writingThrough.size > 0;
  }

  /**
   * Whole pages, none dirty, in flight or being prepared by another write: they may go straight
   * below.
   */
  may(offsetBytes: number, lengthBytes: number): boolean {
    const pageBytes = this.pageBytes;
    if (
      lengthBytes === 0 ||
      offsetBytes % pageBytes !== 0 ||
      (lengthBytes % pageBytes !== 0 && offsetBytes + lengthBytes !== this.below.sizeBytes)
    )
      return false;
    if (!this.allowed?.()) return false;
    for (
      let index = offsetBytes / pageBytes;
      index * pageBytes < offsetBytes + lengthBytes;
      index += 1
    ) {
      if (
        this.pages.dirtyPage(index) !== undefined ||
        this.preparing.has(index) ||
        this.writingThrough.has(index)
      )
        return false;
    }
    return true;
  }

  /**
   * Sends whole pages below at once and acknowledges when they are there (one copy instead of
   * two: the cache copy and the destage). Clean copies of the pages are dropped first; reads and
   * writes of these pages wait until it is done, so none sees or keeps older data.
   */
  async write(offsetBytes: number, data: Buffer, epoch: number): Promise<void> {
    const pageBytes = this.pageBytes;
    const indexes: number[] = [];
    for (
      let index = offsetBytes / pageBytes;
      index * pageBytes < offsetBytes + data.length;
      index += 1
    )
      indexes.push(index);
    for (const index of indexes) this.pages.dropClean(index);
    const sent = this.below.write(offsetBytes, data, epoch);
    const settled = sent.then(
      () => undefined,
      () => undefined,
    );
    for (const index of indexes) this.writingThrough.set(index, settled);
    try {
      await sent;
      this.stats.writtenThroughBytes += data.length;
    } finally {
      for (const index of indexes)
        if (this.writingThrough.get(index) === settled) this.writingThrough.delete(index);
      this.progress.notifyProgress();
    }
  }

  /** Waits until no write-through is on its way in the pages of the range. */
  async waitFor(offsetBytes: number, lengthBytes: number): Promise<void> {
    const pageBytes = this.pageBytes;
    for (;;) {
      let pending: Promise<void> | undefined;
      for (
        let index = Math.floor(offsetBytes / pageBytes);
        index * pageBytes < offsetBytes + Math.max(1, lengthBytes);
        index += 1
      ) {
        pending = this.writingThrough.get(index);
        if (pending) break;
      }
      if (!pending) return;
      await pending;
    }
  }

  /** Waits until no write-through is on its way (a snapshot is about to be taken). */
  async quiesce(): Promise<void> {
    while (this.writingThrough.size > 0)
      await Promise.all([...new Set(this.writingThrough.values())]);
  }

  /** A cached write starts preparing pages firstPage to lastPage: none may be written through. */
  beginPreparing(firstPage: number, lastPage: number): void {
    for (let index = firstPage; index <= lastPage; index += 1)
      this.preparing.set(index, (this.preparing.get(index) ?? 0) + 1);
  }

  /** The write that called beginPreparing with the same pages has applied them (or failed). */
  endPreparing(firstPage: number, lastPage: number): void {
    for (let index = firstPage; index <= lastPage; index += 1) {
      const count = this.preparing.get(index)! - 1;
      if (count === 0) this.preparing.delete(index);
      else this.preparing.set(index, count);
    }
  }
}
