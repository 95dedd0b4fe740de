// The destage pipeline: the path dirty data takes from the write-back cache to the map. Today it
// forwards each step unchanged. It is where the snapshot issue slots in seed 000's order
// (claims 14-16): preserve the original data of a chunk that snapshots still need into the
// target store, make the bitmaps and log files durable, then let the modified data reach the
// source. Keeping it a layer of its own keeps that ordering in one place.

import type { BlockDevice } from '../block/block-device.js';

export class DestagePipeline implements BlockDevice {
  constructor(private readonly below: BlockDevice) {}

  get sizeBytes(): number {
    return this.below.sizeBytes;
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    return this.below.read(offsetBytes, target);
  }

  /** Destages one run of modified data. Step 1 (preserve originals) is empty until snapshots exist. */
  write(offsetBytes: number, data: Buffer): Promise<void> {
    return this.below.write(offsetBytes, data);
  }

  flush(): Promise<void> {
    return this.below.flush();
  }

  discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.below.discard(offsetBytes, lengthBytes);
  }

  prepareWrite(offsetBytes: number, lengthBytes: number): void {
    this.below.prepareWrite?.(offsetBytes, lengthBytes);
  }
}
