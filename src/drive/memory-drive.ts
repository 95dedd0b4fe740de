// A simulated drive in memory with seeded faults, for the model test and for tests of the layers
// above the drive. It keeps two images: the durable one (what survives a crash) and the current
// one (what reads see). Writes land in the current image and in a list of unflushed writes;
// flush() moves them to the durable image. crash() decides, per unflushed write and from the
// seed, whether it was lost, completed, or torn (a random subset of its 512-byte sectors reached
// the medium; sectors are aligned on the drive, as the OS writes whole sectors), then rebuilds
// the current image from the durable one: a power cut.

import { checkRange } from '../block/block-device.js';
import { SeededRandom } from '../util/clock.js';
import { LunfsError } from '../util/errors.js';
import type { Drive } from './drive.js';
import { sectorBytes } from '../util/constants.js';

const pageBytes = 64 * 1024;

class SparseImage {
  readonly pages = new Map<number, Buffer>();

  read(offsetBytes: number, target: Buffer): void {
    let done = 0;
    while (done < target.length) {
      const position = offsetBytes + done;
      const pageIndex = Math.floor(position / pageBytes);
      const inPage = position - pageIndex * pageBytes;
      const length = Math.min(pageBytes - inPage, target.length - done);
      const page = this.pages.get(pageIndex);
      if (page) page.copy(target, done, inPage, inPage + length);
      else target.fill(0, done, done + length);
      done += length;
    }
  }

  write(offsetBytes: number, data: Buffer): void {
    let done = 0;
    while (done < data.length) {
      const position = offsetBytes + done;
      const pageIndex = Math.floor(position / pageBytes);
      const inPage = position - pageIndex * pageBytes;
      const length = Math.min(pageBytes - inPage, data.length - done);
      let page = this.pages.get(pageIndex);
      if (!page) {
        page = Buffer.alloc(pageBytes);
        this.pages.set(pageIndex, page);
      }
      data.copy(page, inPage, done, done + length);
      done += length;
    }
  }

  clone(): SparseImage {
    const copy = new SparseImage();
    for (const [index, page] of this.pages) copy.pages.set(index, Buffer.from(page));
    return copy;
  }
}

export interface CrashOutcome {
  lostWrites: number;
  completedWrites: number;
  tornWrites: number;
}

export class MemoryDrive implements Drive {
  private current = new SparseImage();
  private durable = new SparseImage();
  private unflushed: Array<{ offsetBytes: number; data: Buffer }> = [];
  private failed = false;
  private closed = false;
  /** Counts of operations, for tests that check what reached the drive. */
  readonly counters = { reads: 0, writes: 0, flushes: 0 };

  constructor(
    readonly path: string,
    readonly sizeBytes: number,
  ) {}

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    checkRange(this, offsetBytes, target.length, `read of ${this.path}`);
    this.checkUsable('read');
    this.counters.reads += 1;
    this.current.read(offsetBytes, target);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    checkRange(this, offsetBytes, data.length, `write of ${this.path}`);
    this.checkUsable('write');
    this.counters.writes += 1;
    this.current.write(offsetBytes, data);
    // A drive writes whole sectors: for an unaligned write the operating system reads, modifies
    // and writes the sectors it touches. So what may reach the medium is whole aligned sectors as
    // they are now, and a torn write tears at the drive's sector boundaries, never inside one.
    const fromBytes = Math.floor(offsetBytes / sectorBytes) * sectorBytes;
    const toBytes = Math.min(
      Math.ceil((offsetBytes + data.length) / sectorBytes) * sectorBytes,
      this.sizeBytes,
    );
    const sectors = Buffer.alloc(toBytes - fromBytes);
    this.current.read(fromBytes, sectors);
    this.unflushed.push({ offsetBytes: fromBytes, data: sectors });
  }

  async flush(): Promise<void> {
    this.checkUsable('flush');
    this.counters.flushes += 1;
    for (const write of this.unflushed) this.durable.write(write.offsetBytes, write.data);
    this.unflushed = [];
  }

  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, `discard of ${this.path}`);
    await this.write(offsetBytes, Buffer.alloc(lengthBytes));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Reopens after close() (the simulated drive outlives the process that used it). */
  reopen(): void {
    this.closed = false;
  }

  /** Power cut: each unflushed write is lost, completed or torn, as the seed decides. */
  crash(random: SeededRandom): CrashOutcome {
    const outcome: CrashOutcome = { lostWrites: 0, completedWrites: 0, tornWrites: 0 };
    for (const write of this.unflushed) {
      const fate = random.integer(3);
      if (fate === 0) {
        outcome.lostWrites += 1;
      } else if (fate === 1) {
        this.durable.write(write.offsetBytes, write.data);
        outcome.completedWrites += 1;
      } else {
        for (let sector = 0; sector * sectorBytes < write.data.length; sector += 1) {
          if (!random.chance(0.5)) continue;
          const start = sector * sectorBytes;
          this.durable.write(
            write.offsetBytes + start,
            write.data.subarray(start, Math.min(start + sectorBytes, write.data.length)),
          );
        }
        outcome.tornWrites += 1;
      }
    }
    this.unflushed = [];
    this.current = this.durable.clone();
    this.closed = false;
    return outcome;
  }

  /** Number of writes not yet flushed. */
  get unflushedWriteCount(): number {
    return this.unflushed.length;
  }

  /** Makes every later operation fail with EIO, as a drive that is gone. */
  fail(): void {
    this.failed = true;
  }

  /** Flips one bit in both images (silent corruption of data at rest). */
  flipBit(offsetBytes: number, bit: number): void {
    for (const image of [this.current, this.durable]) {
      const byte = Buffer.alloc(1);
      image.read(offsetBytes, byte);
      byte[0] = byte[0]! ^ (1 << bit);
      image.write(offsetBytes, byte);
    }
  }

  private checkUsable(operation: string): void {
    if (this.failed)
      throw new LunfsError(
        'EIO',
        `${operation} failed on drive ${this.path}: simulated drive failure`,
      );
    if (this.closed) throw new LunfsError('EIO', `drive ${this.path} is closed`);
  }
}
