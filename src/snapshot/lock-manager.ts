// The lock mechanism of seed 002 (claims 4-5, 9-10, 13-14): one lock per chunk of a LUN, kept
// apart from both the LUN's image and the snapshots' images. It serialises, chunk by chunk, a
// destage to the LUN (with its copy-on-write into the target), a read of a snapshot that still
// takes the chunk from the LUN, and a write to a snapshot. Locks exist only while held or waited
// for; acquiring a free lock costs a map lookup.

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
      for (const chunkIndex of [...chunkIndexes].sort((a, b) => a - b)) releases.push(await this.acquire(chunkIndex));
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
