// A snapshot's bitmap (seed 000, claims 3, 5, 8): one bit per chunk of the snapshot, set when the
// snapshot's data for that chunk sits in the target volume (preserved original data, or the
// snapshot's own written data) and clear while the source LUN still holds it. Bits live in 4 KiB
// pages made on first set, so a snapshot of a large LUN that diverges little costs little memory.

const pageBits = 4096 * 8;

export class SnapshotBitmap {
  private readonly pages = new Map<number, Uint8Array>();
  private setCount = 0;

  /** Number of set bits. */
  get count(): number {
    return this.setCount;
  }

  get(chunkIndex: number): boolean {
    const page = this.pages.get(Math.floor(chunkIndex / pageBits));
    if (!page) return false;
    const bit = chunkIndex % pageBits;
    return (page[bit >>> 3]! & (1 << (bit & 7))) !== 0;
  }

  set(chunkIndex: number): void {
    const pageIndex = Math.floor(chunkIndex / pageBits);
    let page = this.pages.get(pageIndex);
    if (!page) {
      page = new Uint8Array(pageBits / 8);
      this.pages.set(pageIndex, page);
    }
    const bit = chunkIndex % pageBits;
    const mask = 1 << (bit & 7);
    if ((page[bit >>> 3]! & mask) !== 0) return;
    page[bit >>> 3] = page[bit >>> 3]! | mask;
    this.setCount += 1;
  }

  clear(chunkIndex: number): void {
    const page = this.pages.get(Math.floor(chunkIndex / pageBits));
    if (!page) return;
    const bit = chunkIndex % pageBits;
    const mask = 1 << (bit & 7);
    if ((page[bit >>> 3]! & mask) === 0) return;
    page[bit >>> 3] = page[bit >>> 3]! & ~mask;
    this.setCount -= 1;
  }

  /** An independent copy (a snapshot taken of a snapshot starts with its source's bits). */
  clone(): SnapshotBitmap {
    const copy = new SnapshotBitmap();
    for (const [pageIndex, page] of this.pages) copy.pages.set(pageIndex, page.slice());
    copy.setCount = this.setCount;
    return copy;
  }

  /** The bitmap as bytes up to its last set bit (the checkpoint form; docs/on-disk-format.md). */
  toBytes(): Buffer {
    const last = Math.max(-1, ...this.pages.keys());
    const bytes = Buffer.alloc((last + 1) * (pageBits / 8));
    for (const [pageIndex, page] of this.pages) bytes.set(page, pageIndex * (pageBits / 8));
    let end = bytes.length;
    while (end > 0 && bytes[end - 1] === 0) end -= 1;
    return bytes.subarray(0, end);
  }

  static fromBytes(bytes: Buffer): SnapshotBitmap {
    const bitmap = new SnapshotBitmap();
    for (let byteIndex = 0; byteIndex < bytes.length; byteIndex += 1) {
      const byte = bytes[byteIndex]!;
      if (byte === 0) continue;
      for (let bit = 0; bit < 8; bit += 1)
        if ((byte & (1 << bit)) !== 0) bitmap.set(byteIndex * 8 + bit);
    }
    return bitmap;
  }
}
