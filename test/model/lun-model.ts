// The model of one LUN's contents for the seeded model test: what was acknowledged, what was
// durable at the last completed flush, and, per 512-byte sector, every value the sector held since
// that flush. 512 bytes is the unit a simulated drive tears at, so after a power cut each sector
// must read either its durable value or one of those values: a crash may land any prefix of the
// destaged history of a sector, never data that was never written to it.

export const sectorBytes = 512;

export interface PendingWrite {
  offsetBytes: number;
  data: Buffer;
}

export class LunModel {
  acknowledged: Buffer;
  durable: Buffer;
  /**
   * Sector index -> values (base64) the sector held since the last flush, besides the durable one.
   */
  private versions = new Map<number, Set<string>>();

  constructor(
    readonly name: string,
    sizeBytes: number,
  ) {
    this.acknowledged = Buffer.alloc(sizeBytes);
    this.durable = Buffer.alloc(sizeBytes);
  }

  get sizeBytes(): number {
    return this.acknowledged.length;
  }

  write(offsetBytes: number, data: Buffer): void {
    data.copy(this.acknowledged, offsetBytes);
    this.recordVersions(offsetBytes, data.length);
  }

  discard(offsetBytes: number, lengthBytes: number): void {
    this.acknowledged.fill(0, offsetBytes, offsetBytes + lengthBytes);
    this.recordVersions(offsetBytes, lengthBytes);
  }

  /**
   * Writes issued together to disjoint ranges: any subset of them may have reached a sector when
   * it was destaged, so every combination is a value the sector may have held.
   */
  writeTogether(writes: PendingWrite[]): void {
    const before = Buffer.from(this.acknowledged);
    for (const write of writes) write.data.copy(this.acknowledged, write.offsetBytes);
    const bySector = new Map<number, PendingWrite[]>();
    for (const write of writes) {
      for (const sector of sectorsOf(write.offsetBytes, write.data.length)) {
        let list = bySector.get(sector);
        if (!list) bySector.set(sector, (list = []));
        list.push(write);
      }
    }
    for (const [sector, touching] of bySector) {
      const start = sector * sectorBytes;
      for (let subset = 1; subset < 1 << touching.length; subset += 1) {
        const value = Buffer.from(before.subarray(start, start + sectorBytes));
        touching.forEach((write, index) => {
          if ((subset & (1 << index)) === 0) return;
          const from = Math.max(start, write.offsetBytes);
          const to = Math.min(start + sectorBytes, write.offsetBytes + write.data.length);
          write.data.copy(value, from - start, from - write.offsetBytes, to - write.offsetBytes);
        });
        this.addVersion(sector, value);
      }
    }
  }

  /** A write that was issued but may not have completed when the power went: it may have landed. */
  mayHaveWritten(offsetBytes: number, data: Buffer): void {
    for (const sector of sectorsOf(offsetBytes, data.length)) {
      const start = sector * sectorBytes;
      const value = Buffer.from(this.acknowledged.subarray(start, start + sectorBytes));
      const from = Math.max(start, offsetBytes);
      const to = Math.min(start + sectorBytes, offsetBytes + data.length);
      data.copy(value, from - start, from - offsetBytes, to - offsetBytes);
      this.addVersion(sector, value);
    }
  }

  /**
   * A write that failed part-way (a full pool): the range now reads as image does, byte for byte
   * the old or the new value, acknowledged but not durable.
   */
  partlyWritten(offsetBytes: number, lengthBytes: number, image: Buffer): void {
    image.copy(this.acknowledged, offsetBytes, offsetBytes, offsetBytes + lengthBytes);
    this.recordVersions(offsetBytes, lengthBytes);
  }

  flushed(): void {
    this.durable = Buffer.from(this.acknowledged);
    this.versions.clear();
  }

  /** Growth is committed at once (resize commits metadata); the new space reads zeros. */
  grow(sizeBytes: number): void {
    const grow = (buffer: Buffer): Buffer =>
      Buffer.concat([buffer, Buffer.alloc(sizeBytes - buffer.length)]);
    this.acknowledged = grow(this.acknowledged);
    this.durable = grow(this.durable);
  }

  /**
   * undefined when every sector of image is allowed after a power cut, else what is wrong first.
   */
  checkRecovered(image: Buffer): string | undefined {
    if (image.length !== this.sizeBytes) return `size ${image.length}, model ${this.sizeBytes}`;
    for (let sector = 0; sector * sectorBytes < image.length; sector += 1) {
      const start = sector * sectorBytes;
      const value = image.subarray(start, start + sectorBytes);
      if (value.equals(this.durable.subarray(start, start + sectorBytes))) continue;
      if (this.versions.get(sector)?.has(value.toString('base64'))) continue;
      const zero = value.every((byte) => byte === 0);
      const acknowledged = value.equals(this.acknowledged.subarray(start, start + sectorBytes));
      const durable = this.durable.subarray(start, start + sectorBytes);
      const first = value.findIndex((byte, index) => byte !== durable[index]);
      return (
        `sector ${sector} (byte ${start}) holds ${value.subarray(0, 12).toString('hex')}${zero ? ' (zeros)' : ''}, first differing from the durable value at byte ${start + first} (${value[first]!.toString(16)} for ${durable[first]!.toString(16)}), ` +
        `durable ${this.durable.subarray(start, start + 12).toString('hex')}, acknowledged ${this.acknowledged.subarray(start, start + 12).toString('hex')}` +
        `${acknowledged ? ' (equal to the acknowledged value, which was never recorded: model bug)' : ''}, ${this.versions.get(sector)?.size ?? 0} values since the flush`
      );
    }
    return undefined;
  }

  /** After recovery the recovered contents are the truth, acknowledged and durable. */
  resetTo(image: Buffer): void {
    this.acknowledged = Buffer.from(image);
    this.durable = Buffer.from(image);
    this.versions.clear();
  }

  private recordVersions(offsetBytes: number, lengthBytes: number): void {
    for (const sector of sectorsOf(offsetBytes, lengthBytes)) {
      const start = sector * sectorBytes;
      this.addVersion(sector, this.acknowledged.subarray(start, start + sectorBytes));
    }
  }

  private addVersion(sector: number, value: Buffer): void {
    let set = this.versions.get(sector);
    if (!set) this.versions.set(sector, (set = new Set()));
    set.add(value.toString('base64'));
  }
}

function sectorsOf(offsetBytes: number, lengthBytes: number): number[] {
  if (lengthBytes === 0) return [];
  const sectors: number[] = [];
  for (
    let sector = Math.floor(offsetBytes / sectorBytes);
    sector * sectorBytes < offsetBytes + lengthBytes;
    sector += 1
  )
    sectors.push(sector);
  return sectors;
}
