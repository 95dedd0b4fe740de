// The destage pipeline: the path dirty data takes from the write-back cache to the LUN's map, and
// where seed 000's order is kept (claims 14-16, 17-24). For each chunk a destage touches, holding
// the chunk's lock (seed 002's lock mechanism, shared with snapshot reads and writes):
//   1. search the bitmaps for snapshots that still need the chunk's original (taken at or before
//      the epoch of the data being destaged, bit clear);
//   2. copy the original to the target volume once and make every such snapshot's log pointer and
//      bitmap bit durable (SnapshotSet.preserve -> TargetVolume);
//   3. write the modified data to the source;
// then the cache clears the dirty mark. A LUN without valid snapshots skips 1-2 and the lock.
// Before all of it, a LUN with snap-point maps (issue 16) has the range marked in each, durably
// (SnapPointTracker): no change reaches the drives unmarked.

import { checkRange, type BlockDevice } from '../block/block-device.js';
import type { ThinVolume } from '../map/thin-volume.js';
import type { SnapshotSet } from '../snapshot/snapshot-set.js';
import type { SnapPointTracker } from '../snapshot/snap-point-tracker.js';

export class DestagePipeline implements BlockDevice {
  constructor(
    private readonly below: ThinVolume,
    private readonly snapshots: SnapshotSet,
    private readonly snapPoints?: SnapPointTracker,
  ) {}

  get sizeBytes(): number {
    return this.below.sizeBytes;
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    return this.below.read(offsetBytes, target);
  }

  /** Changes on their way to the drives (a migration waits for those begun before its map). */
  private readonly changes = new Set<Promise<void>>();

  /** Destages one run of modified data written in epoch (the LUN's current epoch if not given). */
  write(offsetBytes: number, data: Buffer, epoch?: number): Promise<void> {
    if (this.snapPoints?.active) {
      checkRange(this, offsetBytes, data.length, 'destage');
      return this.tracked(
        this.snapPoints
          .mark(offsetBytes, data.length)
          .then(() => this.writeMarked(offsetBytes, data, epoch)),
      );
    }
    return this.tracked(this.writeMarked(offsetBytes, data, epoch));
  }

  private tracked(change: Promise<void>): Promise<void> {
    this.changes.add(change);
    const forget = (): void => void this.changes.delete(change);
    change.then(forget, forget);
    return change;
  }

  /**
   * Resolves once every change that began before the call has ended (reached the drives or
   * failed). A snap-point map started before this call marks every change that begins after it.
   */
  async changesSettled(): Promise<void> {
    await Promise.allSettled([...this.changes]);
  }

  private writeMarked(offsetBytes: number, data: Buffer, epoch?: number): Promise<void> {
    if (!this.snapshots.active) return this.below.write(offsetBytes, data);
    checkRange(this, offsetBytes, data.length, 'destage');
    const dataEpoch = epoch ?? this.snapshots.epoch;
    return this.preservingChunks(offsetBytes, data.length, dataEpoch, () =>
      this.below.write(offsetBytes, data),
    );
  }

  flush(): Promise<void> {
    return this.below.flush();
  }

  /** A discard changes the source too: originals are preserved first, as for a write of now. */
  discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (this.snapPoints?.active && lengthBytes > 0) {
      checkRange(this, offsetBytes, lengthBytes, 'discard');
      return this.tracked(
        this.snapPoints
          .mark(offsetBytes, lengthBytes)
          .then(() => this.discardMarked(offsetBytes, lengthBytes)),
      );
    }
    return this.tracked(this.discardMarked(offsetBytes, lengthBytes));
  }

  private discardMarked(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (!this.snapshots.active || lengthBytes === 0)
      return this.below.discard(offsetBytes, lengthBytes);
    checkRange(this, offsetBytes, lengthBytes, 'discard');
    return this.preservingChunks(offsetBytes, lengthBytes, this.snapshots.epoch, () =>
      this.below.discard(offsetBytes, lengthBytes),
    );
  }

  prepareWrite(offsetBytes: number, lengthBytes: number): void {
    this.below.prepareWrite(offsetBytes, lengthBytes);
  }

  private preservingChunks(
    offsetBytes: number,
    lengthBytes: number,
    epoch: number,
    change: () => Promise<void>,
  ): Promise<void> {
    const chunkBytes = this.snapshots.chunkBytes;
    const chunks: number[] = [];
    for (
      let chunk = Math.floor(offsetBytes / chunkBytes);
      chunk * chunkBytes < offsetBytes + lengthBytes;
      chunk += 1
    )
      chunks.push(chunk);
    return this.snapshots.locks.withChunks(chunks, async () => {
      for (const chunk of chunks) await this.snapshots.preserve(chunk, epoch, this.below);
      await change();
    });
  }
}
