// A snapshot's log file (seed 000, claims 2, 4, 7, 13): the pointers that locate its data in the
// target volume, one per chunk whose bit is set in its bitmap. Several log files may point at the
// same target slot (one preserved copy serves every snapshot that needs it). The seed appends
// pointers to a list; here the list is indexed by chunk, so a lookup is one array access whatever
// the snapshot's age or the number of snapshots, and a writable snapshot's newer pointer for a
// chunk replaces the older one. In memory: pages of 1024 u32 entries, slot + 1 (0 = none).

/** The pointer to a chunk that was all zeros (an unallocated source unit): no slot is spent. */
export const zeroSlot = 0xfffffffe;

const pageEntries = 1024;

export class LogFile {
  private readonly pages = new Map<number, Uint32Array>();
  private entryCount = 0;

  get count(): number {
    return this.entryCount;
  }

  /** The target slot of the chunk, zeroSlot, or undefined when the log has no pointer for it. */
  get(chunkIndex: number): number | undefined {
    const value =
      this.pages.get(Math.floor(chunkIndex / pageEntries))?.[chunkIndex % pageEntries] ?? 0;
    return value === 0 ? undefined : value - 1;
  }

  /** Sets the pointer; returns the slot it replaces, if any. */
  set(chunkIndex: number, slot: number): number | undefined {
    const pageIndex = Math.floor(chunkIndex / pageEntries);
    let page = this.pages.get(pageIndex);
    if (!page) {
      page = new Uint32Array(pageEntries);
      this.pages.set(pageIndex, page);
    }
    const old = page[chunkIndex % pageEntries]!;
    page[chunkIndex % pageEntries] = slot + 1;
    if (old === 0) this.entryCount += 1;
    return old === 0 ? undefined : old - 1;
  }

  /** Removes the chunk's pointer; returns the slot it named, if any. */
  delete(chunkIndex: number): number | undefined {
    const page = this.pages.get(Math.floor(chunkIndex / pageEntries));
    const old = page?.[chunkIndex % pageEntries] ?? 0;
    if (old === 0) return undefined;
    page![chunkIndex % pageEntries] = 0;
    this.entryCount -= 1;
    return old - 1;
  }

  /** An independent copy (a snapshot taken of a snapshot starts with its source's pointers). */
  clone(): LogFile {
    const copy = new LogFile();
    for (const [pageIndex, page] of this.pages) copy.pages.set(pageIndex, page.slice());
    copy.entryCount = this.entryCount;
    return copy;
  }

  /** Visits every pointer in ascending chunk order. */
  forEach(visit: (chunkIndex: number, slot: number) => void): void {
    for (const pageIndex of [...this.pages.keys()].sort((a, b) => a - b)) {
      const page = this.pages.get(pageIndex)!;
      for (let index = 0; index < pageEntries; index += 1)
        if (page[index] !== 0) visit(pageIndex * pageEntries + index, page[index]! - 1);
    }
  }
}
