// Per-index locks: one promise chain per numbered chunk (or row, or block), held only while
// someone holds or waits for it; acquiring a free lock costs a map lookup. A generic tool, so it
// lives in util/: the snapshot layer uses one per LUN as seed 002's lock mechanism (claims 4-5,
// 9-10, 13-14: kept apart from both the LUN's image and the snapshots' images, it serialises a
// destage with its copy-on-write, a snapshot read that still takes the chunk from the LUN, and a
// write to a snapshot); the RAID layer uses them for rows and stripes.

export class ChunkLockManager {
  private readonly tails = new Map<number, Promise<void>>();

  /** Waits for the chunk's lock; the returned function releases it. */
  async acquire(chunkIndex: number): Promise<() => void> {
    const previous = this.tails.get(chunkIndex);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous ? previous.then(() => mine) : mine;
    this.tails.set(chunkIndex, tail);
    if (previous) await previous;
    return () => {
      release();
      if (this.tails.get(chunkIndex) === tail) this.tails.delete(chunkIndex);
    };
  }

  /** Runs task holding the locks of the chunks, taken in ascending order (no deadlock). */
  async withChunks<T>(chunkIndexes: number[], task: () => Promise<T>): Promise<T> {
    const releases: Array<() => void> = [];
    try {
      for (const chunkIndex of [...chunkIndexes].sort((a, b) => a - b))
        releases.push(await this.acquire(chunkIndex));
      return await task();
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  /** Number of chunks locked or waited for (for tests and status). */
  get heldCount(): number {
    return this.tails.size;
  }
}
