// What RAID-5 keeps in memory between requests, one Raid5Memory per pool (not per process: two
// pools in one process, as in the tests, do not share or evict each other's rows; issue 13 left
// no module-level state shared between pools):
// - buffers of a held row's data and of a whole row's parity, kept for reuse: a fresh buffer of
//   128 KiB or more is memory the kernel maps on first touch, page by page, and that cost more
//   than the XOR of the row (a sequential stream writes one row per three or more units); and
//   those a small read-modify-write reads the old data and parity into (a 4 KiB read into a
//   fresh Buffer cost 7.9 us of CPU, into a reused one 3.1 us: bench/micro-io.mjs);
// - the RStores holding known rows (raid5-row-cache.ts), least recently used first: at most
//   layoutsWithKnownRows of them keep rows at once, the oldest writes its rows back.

/**
 * At most this many layouts (RStores) keep rows at once, pool-wide: each row costs a stripe unit
 * per member (512 KiB with four 128 KiB members).
 */
const layoutsWithKnownRows = 16;

/**
 * Spare buffers of one size kept for reuse at most: more of the small ones (a random 4 KiB
 * write's old data and parity; a fresh 4 KiB Buffer costs more than the read into it), which
 * every destage under way holds.
 */
const spareBuffersPerSize = 8;
const spareSmallBuffers = 128;
const smallBufferBytes = 16 * 1024;

/** What the pool's memory asks of an RStore holding rows: write them back and let them go. */
export interface RowHolder {
  writeBackKnownRows(): Promise<void>;
}

export class Raid5Memory {
  private readonly free = new Map<number, Buffer[]>();
  private readonly holders = new Set<RowHolder>();

  take(bytes: number): Buffer {
    return this.free.get(bytes)?.pop() ?? Buffer.allocUnsafe(bytes);
  }

  give(buffer: Buffer): void {
    let list = this.free.get(buffer.length);
    if (!list) this.free.set(buffer.length, (list = []));
    if (list.length < (buffer.length <= smallBufferBytes ? spareSmallBuffers : spareBuffersPerSize))
      list.push(buffer);
  }

  /**
   * layout keeps known rows now: it becomes the most recent holder; the oldest beyond the limit
   * writes its rows back.
   */
  touch(layout: RowHolder): void {
    this.holders.delete(layout);
    this.holders.add(layout);
    if (this.holders.size > layoutsWithKnownRows) {
      const oldest = this.holders.values().next().value as RowHolder;
      this.holders.delete(oldest);
      void oldest.writeBackKnownRows();
    }
  }

  /** layout holds no rows any more. */
  forget(layout: RowHolder): void {
    this.holders.delete(layout);
  }

  /** Layouts holding known rows (for tests). */
  get holderCount(): number {
    return this.holders.size;
  }
}

/**
 * A copy of bytes in memory not zeroed first (Buffer.from of a Buffer zero-fills a new buffer, then
 * copies).
 */
export function copyOf(source: Uint8Array): Buffer {
  const copy = Buffer.allocUnsafe(source.length);
  copy.set(source);
  return copy;
}
