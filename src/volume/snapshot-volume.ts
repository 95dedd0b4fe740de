// A snapshot as a block device (what snapshots/LUN@NAME serves): reads see the LUN as it stood at
// the snapshot instant, writes land in the snapshot's own image in the target volume (a writable
// snapshot, seed 002). Its size is the LUN's size at the snapshot instant. It has no cache of its
// own: reads of data still in the LUN's cache come from there (writes older than the snapshot),
// and writes go to the target at once; flush makes them durable.

import { checkRange, type BlockDevice } from '../block/block-device.js';
import type { SnapshotRecord } from '../meta/pool-metadata.js';
import type { LunStack } from './stack.js';

export class SnapshotVolume implements BlockDevice {
  constructor(
    readonly record: SnapshotRecord,
    private readonly lun: LunStack,
  ) {}

  get sizeBytes(): number {
    return this.record.sizeBytes;
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    checkRange(this, offsetBytes, target.length, `read of snapshot ${this.record.name}`);
    if (target.length === 0) return;
    await this.lun.snapshots.read(this.record, offsetBytes, target, this.lun.thin, this.lun.cache);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    checkRange(this, offsetBytes, data.length, `write to snapshot ${this.record.name}`);
    if (data.length === 0) return;
    await this.lun.snapshots.write(this.record, offsetBytes, data, this.lun.thin, this.lun.cache);
  }

  async flush(): Promise<void> {
    await this.lun.snapshots.targetVolume?.flush();
  }

  /** The range reads as zeros afterwards (written as zeros into the snapshot's own image). */
  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, `discard of snapshot ${this.record.name}`);
    if (lengthBytes > 0) await this.write(offsetBytes, Buffer.alloc(lengthBytes));
  }
}
