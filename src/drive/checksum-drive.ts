// A drive filter that keeps a crc32c of every 4 KiB block of the PSEG area in the checksum table
// on the same drive (src/drive/checksum-table.ts), as an nbdkit filter wraps `next`: a write
// records the checksums of its blocks, then writes the data; a read checks every block whose
// checksum is known and throws ChecksumError (EIO) on a mismatch, so that the RStore above can
// rebuild the block from redundancy and write it back (which records a fresh checksum).
//
// Invariants:
// - the data area is [dataOffsetBytes, + dataBytes), 4 KiB aligned; everything else (drive
//   header, quorum area) passes straight through; the table area is written only by this layer,
//   so writes and discards from above that touch it are refused with EINVAL;
// - requests on the same 4 KiB block run one at a time, in arrival order (BlockLocks): a read
//   never sees the new checksum with the old data, and a partial write's read-modify-write is
//   never interleaved with another write of its block;
// - after flush() resolves, the data and the table entries of every write acknowledged before it
//   are durable: dirty table pages are written first, then the child is flushed. After an unclean
//   shutdown a block written since the last flush may disagree with its entry; recompute() the
//   regions that had writes in flight (md's resync trusts the data the same way).

import { checkRange } from '../block/block-device.js';
import { crc32cBlocks } from '../native/native-kernels.js';
import type { DriveHeader } from '../meta/drive-header.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import { Mutex } from '../util/mutex.js';
import {
  ChecksumTable,
  checksumBlockBytes,
  storedChecksum,
  unknownChecksum,
} from './checksum-table.js';
import type { Drive } from './drive.js';

/** Where the protected data and its table lie on the drive, in drive byte offsets. */
export interface ChecksumGeometry {
  dataOffsetBytes: number;
  dataBytes: number;
  tableOffsetBytes: number;
  tableBytes: number;
}

/** The geometry of a pool drive: its PSEG area, protected by the table the header names. */
export function checksumGeometryOf(header: DriveHeader): ChecksumGeometry {
  return {
    dataOffsetBytes: header.psegAreaOffsetBytes,
    dataBytes: header.psegCount * header.psegSizeBytes,
    tableOffsetBytes: header.checksumTableOffsetBytes,
    tableBytes: header.checksumTableBytes,
  };
}

/** Blocks handled under one lock by the range operations (discard, recompute, verify, forget). */
const maxBlocksPerPiece = 256;

/** crc32c of a 4 KiB block of zeros, as stored: what a discarded block's entry becomes. */
const zeroBlockChecksum = (() => {
  const out = new Uint32Array(1);
  crc32cBlocks(Buffer.alloc(checksumBlockBytes), checksumBlockBytes, out);
  return storedChecksum(out[0]!);
})();

/** A block read from the drive did not match its recorded checksum: silent corruption (EIO). */
export class ChecksumError extends LunfsError {
  /** Drive offset of the first bad block, and the length up to the end of the last bad one. */
  readonly driveOffsetBytes: number;
  readonly lengthBytes: number;
  /** Drive byte offsets of every bad 4 KiB block, ascending. */
  readonly badBlocks: number[];

  constructor(
    readonly drivePath: string,
    badBlocks: readonly number[],
  ) {
    assert(badBlocks.length > 0, 'a ChecksumError names at least one bad block');
    const first = badBlocks[0]!;
    const last = badBlocks[badBlocks.length - 1]!;
    super(
      'EIO',
      `checksum mismatch on drive ${drivePath}: ${badBlocks.length} bad 4 KiB block(s) between drive offsets ${first} and ${last + checksumBlockBytes}`,
    );
    this.name = 'ChecksumError';
    this.driveOffsetBytes = first;
    this.lengthBytes = last + checksumBlockBytes - first;
    this.badBlocks = [...badBlocks];
  }
}

export function isChecksumError(error: unknown): error is ChecksumError {
  return error instanceof ChecksumError;
}

export class ChecksumDrive implements Drive {
  /**
   * Blocks that failed their checksum (reads, partial writes, verify); damaged table pages; blocks
   * checked.
   */
  readonly counters = { mismatches: 0, tablePagesDamaged: 0, verifiedBlocks: 0 };
  private readonly table: ChecksumTable;
  private readonly locks = new BlockLocks();
  private readonly flushes = new Mutex();
  private readonly dataEndBytes: number;
  /** Reused by the synchronous checksum passes of requests up to maxBlocksPerPiece blocks. */
  private readonly scratch = new Uint32Array(maxBlocksPerPiece);

  constructor(
    private readonly child: Drive,
    private readonly geometry: ChecksumGeometry,
  ) {
    const { dataOffsetBytes, dataBytes, tableOffsetBytes, tableBytes } = geometry;
    for (const [name, value] of Object.entries(geometry)) {
      assert(
        Number.isSafeInteger(value) && value >= 0 && value % checksumBlockBytes === 0,
        `checksum geometry ${name} ${value} is not a whole number of 4 KiB blocks`,
      );
    }
    this.dataEndBytes = dataOffsetBytes + dataBytes;
    assert(
      tableOffsetBytes + tableBytes <= dataOffsetBytes || this.dataEndBytes <= tableOffsetBytes,
      'the checksum table overlaps the data it protects',
    );
    if (Math.max(this.dataEndBytes, tableOffsetBytes + tableBytes) > child.sizeBytes) {
      throw new LunfsError(
        'EINVAL',
        `drive ${child.path} (${child.sizeBytes} bytes) is too small for its data area and checksum table`,
      );
    }
    this.table = new ChecksumTable(
      child,
      tableOffsetBytes,
      tableBytes,
      dataBytes / checksumBlockBytes,
      this.counters,
    );
  }

  get sizeBytes(): number {
    return this.child.sizeBytes;
  }

  get path(): string {
    return this.child.path;
  }

  /**
   * The child's `inline` flag (a FileDrive on tmpfs), which the LUN stack reads to pick
   * write-through.
   */
  get inline(): boolean | undefined {
    return (this.child as { inline?: boolean }).inline;
  }

  /** Table pages changed since they were last written. */
  get dirtyTablePageCount(): number {
    return this.table.dirtyPageCount;
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    if (this.readInline(offsetBytes, target)) return;
    await this.eachPart(offsetBytes, target.length, (partOffsetBytes, from, to, inData) => {
      const part = target.subarray(from, to);
      return inData ? this.readData(partOffsetBytes, part) : this.child.read(partOffsetBytes, part);
    });
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    if (this.writeInline(offsetBytes, data)) return;
    await this.eachPart(offsetBytes, data.length, (partOffsetBytes, from, to, inData) => {
      const part = data.subarray(from, to);
      return inData
        ? this.writeData(partOffsetBytes, part)
        : this.child.write(partOffsetBytes, part);
    });
  }

  /**
   * The read done at once, with sync calls, when it can be (see readDataInline); false, having
   * done nothing but the range check, when it must go through read().
   */
  readInline(offsetBytes: number, target: Buffer): boolean {
    checkRange(this, offsetBytes, target.length, `read of ${this.path}`);
    return this.readDataInline(offsetBytes, target);
  }

  /** The same for a write. */
  writeInline(offsetBytes: number, data: Buffer): boolean {
    checkRange(this, offsetBytes, data.length, `write of ${this.path}`);
    this.refuseTableArea(offsetBytes, data.length, 'write');
    return this.writeDataInline(offsetBytes, data);
  }

  /** Writes the dirty table pages, then flushes the child: data and table are durable together. */
  flush(): Promise<void> {
    return this.flushes.run(async () => {
      await this.table.writeDirtyPages();
      await this.child.flush();
    });
  }

  /** The range reads as zeros; its blocks get the checksum of zeros (not "unknown"). */
  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, `discard of ${this.path}`);
    this.refuseTableArea(offsetBytes, lengthBytes, 'discard');
    await this.eachPart(offsetBytes, lengthBytes, (partOffsetBytes, from, to, inData) => {
      if (!inData) return this.child.discard(partOffsetBytes, to - from);
      return this.eachPiece(partOffsetBytes, to - from, (pieceOffsetBytes, pieceBytes) =>
        this.discardData(pieceOffsetBytes, pieceBytes),
      );
    });
  }

  /**
   * Reads the blocks of the range as they are, without checking them, and records their
   * checksums: after an unclean shutdown, for the regions that had writes in flight.
   */
  async recompute(offsetBytes: number, lengthBytes: number): Promise<void> {
    this.checkDataRange(offsetBytes, lengthBytes, 'recompute');
    await this.eachPiece(offsetBytes, lengthBytes, async (pieceOffsetBytes, pieceBytes) => {
      const { firstBlock, blockCount } = this.blocksOf(pieceOffsetBytes, pieceBytes);
      await this.locked(firstBlock, blockCount, async () => {
        const blocks = Buffer.allocUnsafe(blockCount * checksumBlockBytes);
        await this.child.read(this.blockOffsetBytes(firstBlock), blocks);
        this.recordChecksums(firstBlock, blocks);
      });
    });
  }

  /**
   * Gives the blocks whose checksum entries were lost (a damaged table page) fresh checksums from
   * their data as it is; returns how many. After an unclean shutdown with no redundancy to rebuild
   * them from, where a page torn by the power cut is the likely cause (md's resync trusts the data
   * the same way).
   */
  async recomputeLost(): Promise<number> {
    await this.table.loadDamaged();
    const lost = this.table.lostBlocks();
    for (const block of lost)
      await this.recompute(this.blockOffsetBytes(block), checksumBlockBytes);
    return lost.length;
  }

  /**
   * For scrub: the drive offsets of the blocks of the range that fail their checksum; never throws
   * for them.
   */
  async verify(offsetBytes: number, lengthBytes: number): Promise<number[]> {
    this.checkDataRange(offsetBytes, lengthBytes, 'verify');
    const bad: number[] = [];
    await this.eachPiece(offsetBytes, lengthBytes, async (pieceOffsetBytes, pieceBytes) => {
      const { firstBlock, blockCount } = this.blocksOf(pieceOffsetBytes, pieceBytes);
      await this.locked(firstBlock, blockCount, async () => {
        const blocks = Buffer.allocUnsafe(blockCount * checksumBlockBytes);
        await this.child.read(this.blockOffsetBytes(firstBlock), blocks);
        bad.push(...this.badBlocksIn(firstBlock, blocks));
      });
    });
    return bad;
  }

  /** Sets the entries of the range's blocks to unknown: they read unverified until written. */
  async forget(offsetBytes: number, lengthBytes: number): Promise<void> {
    this.checkDataRange(offsetBytes, lengthBytes, 'forget');
    await this.eachPiece(offsetBytes, lengthBytes, async (pieceOffsetBytes, pieceBytes) => {
      const { firstBlock, blockCount } = this.blocksOf(pieceOffsetBytes, pieceBytes);
      await this.locked(firstBlock, blockCount, async () => {
        this.table.fill(firstBlock, blockCount, unknownChecksum);
      });
    });
  }

  /** Closes the child. Nothing is written: flush() first to keep the table. */
  close(): Promise<void> {
    return this.child.close();
  }

  /**
   * The common read done at once, with sync calls and no promise: whole blocks inside the data
   * area, none of them locked (so no request is part way through them), their table pages in
   * memory, and a child that serves the size inline (FileDrive on tmpfs). Nothing can run
   * between its steps, so it takes no lock. False, having done nothing, otherwise.
   */
  private readDataInline(offsetBytes: number, target: Buffer): boolean {
    const blocks = this.inlineBlocks(offsetBytes, target.length);
    if (!blocks || !this.child.readInline?.(offsetBytes, target)) return false;
    const bad = this.badBlocksIn(blocks.firstBlock, target);
    if (bad.length > 0) throw new ChecksumError(this.path, bad);
    return true;
  }

  /** The same for a write: the blocks' checksums are recorded once the child has the data. */
  private writeDataInline(offsetBytes: number, data: Buffer): boolean {
    const blocks = this.inlineBlocks(offsetBytes, data.length);
    if (!blocks) return false;
    const { firstBlock, blockCount } = blocks;
    try {
      if (!this.child.writeInline?.(offsetBytes, data)) return false;
    } catch (error) {
      this.table.fill(firstBlock, blockCount, unknownChecksum);
      throw error;
    }
    this.recordChecksums(firstBlock, data);
    return true;
  }

  /** The blocks of a request the inline paths may serve, or undefined. */
  private inlineBlocks(
    offsetBytes: number,
    lengthBytes: number,
  ): { firstBlock: number; blockCount: number } | undefined {
    const relativeBytes = offsetBytes - this.geometry.dataOffsetBytes;
    if (
      lengthBytes === 0 ||
      relativeBytes < 0 ||
      offsetBytes + lengthBytes > this.dataEndBytes ||
      relativeBytes % checksumBlockBytes !== 0 ||
      lengthBytes % checksumBlockBytes !== 0 ||
      lengthBytes > maxBlocksPerPiece * checksumBlockBytes
    )
      return undefined;
    const firstBlock = relativeBytes / checksumBlockBytes;
    const blockCount = lengthBytes / checksumBlockBytes;
    const lastBlock = firstBlock + blockCount - 1;
    if (!this.locks.isFree(firstBlock, lastBlock) || !this.table.isLoaded(firstBlock, lastBlock))
      return undefined;
    return { firstBlock, blockCount };
  }

  private async readData(offsetBytes: number, target: Buffer): Promise<void> {
    const { firstBlock, blockCount, aligned } = this.blocksOf(offsetBytes, target.length);
    await this.locked(firstBlock, blockCount, async () => {
      // The aligned path reads straight into the caller's buffer; an unaligned one reads the
      // enclosing blocks, since a checksum covers a whole block.
      const blocks = aligned ? target : Buffer.allocUnsafe(blockCount * checksumBlockBytes);
      await this.child.read(this.blockOffsetBytes(firstBlock), blocks);
      const bad = this.badBlocksIn(firstBlock, blocks);
      if (bad.length > 0) throw new ChecksumError(this.path, bad);
      if (!aligned) {
        const start = offsetBytes - this.blockOffsetBytes(firstBlock);
        blocks.copy(target, 0, start, start + target.length);
      }
    });
  }

  private async writeData(offsetBytes: number, data: Buffer): Promise<void> {
    const { firstBlock, blockCount, aligned } = this.blocksOf(offsetBytes, data.length);
    await this.locked(firstBlock, blockCount, async () => {
      const blocks = aligned
        ? data
        : await this.mergedBlocks(offsetBytes, data, firstBlock, blockCount);
      this.recordChecksums(firstBlock, blocks);
      await this.writeChild(firstBlock, blockCount, () => this.child.write(offsetBytes, data));
    });
  }

  private async discardData(offsetBytes: number, lengthBytes: number): Promise<void> {
    const { firstBlock, blockCount, aligned } = this.blocksOf(offsetBytes, lengthBytes);
    await this.locked(firstBlock, blockCount, async () => {
      if (aligned) {
        this.table.fill(firstBlock, blockCount, zeroBlockChecksum);
      } else {
        this.recordChecksums(
          firstBlock,
          await this.mergedBlocks(offsetBytes, Buffer.alloc(lengthBytes), firstBlock, blockCount),
        );
      }
      await this.writeChild(firstBlock, blockCount, () =>
        this.child.discard(offsetBytes, lengthBytes),
      );
    });
  }

  /**
   * The whole blocks around an unaligned write, as they will be after it: the partly covered
   * edge blocks are read and checked first (a bad one throws ChecksumError and nothing is
   * written), then data is laid over them.
   */
  private async mergedBlocks(
    offsetBytes: number,
    data: Buffer,
    firstBlock: number,
    blockCount: number,
  ): Promise<Buffer> {
    const blocks = Buffer.allocUnsafe(blockCount * checksumBlockBytes);
    const endBytes = offsetBytes + data.length;
    const lastBlock = firstBlock + blockCount - 1;
    const edges = new Set<number>();
    if (offsetBytes % checksumBlockBytes !== 0) edges.add(firstBlock);
    if (endBytes % checksumBlockBytes !== 0) edges.add(lastBlock);
    const bad: number[] = [];
    await Promise.all(
      [...edges].map(async (block) => {
        const edge = blocks.subarray(
          (block - firstBlock) * checksumBlockBytes,
          (block - firstBlock + 1) * checksumBlockBytes,
        );
        await this.child.read(this.blockOffsetBytes(block), edge);
        bad.push(...this.badBlocksIn(block, edge));
      }),
    );
    if (bad.length > 0)
      throw new ChecksumError(
        this.path,
        bad.sort((a, b) => a - b),
      );
    data.copy(blocks, offsetBytes - this.blockOffsetBytes(firstBlock));
    return blocks;
  }

  /**
   * Runs the child's write; if it fails, what reached the blocks is unknown, and so are their
   * entries.
   */
  private async writeChild(
    firstBlock: number,
    blockCount: number,
    write: () => Promise<void>,
  ): Promise<void> {
    try {
      await write();
    } catch (error) {
      this.table.fill(firstBlock, blockCount, unknownChecksum);
      throw error;
    }
  }

  /** Stores the checksum of each 4 KiB block of blocks (which starts at firstBlock). */
  private recordChecksums(firstBlock: number, blocks: Buffer): void {
    const blockCount = blocks.length / checksumBlockBytes;
    const crcs = blockCount <= this.scratch.length ? this.scratch : new Uint32Array(blockCount);
    crc32cBlocks(blocks, checksumBlockBytes, crcs);
    this.table.record(firstBlock, crcs, blockCount);
  }

  /**
   * Drive offsets of the blocks of blocks (starting at firstBlock) whose known checksum differs.
   */
  private badBlocksIn(firstBlock: number, blocks: Buffer): number[] {
    const blockCount = blocks.length / checksumBlockBytes;
    const known = this.table.countKnown(firstBlock, blockCount);
    if (known === 0) return [];
    const crcs = blockCount <= this.scratch.length ? this.scratch : new Uint32Array(blockCount);
    crc32cBlocks(blocks, checksumBlockBytes, crcs);
    this.counters.verifiedBlocks += known;
    const bad = this.table.mismatchedBlocks(firstBlock, crcs, blockCount);
    this.counters.mismatches += bad.length;
    return bad.map((block) => this.blockOffsetBytes(block));
  }

  /** Holds the blocks' locks and their table pages loaded while task runs. */
  private async locked(
    firstBlock: number,
    blockCount: number,
    task: () => Promise<void>,
  ): Promise<void> {
    const held = this.locks.acquire(firstBlock, firstBlock + blockCount - 1);
    const release = typeof held === 'function' ? held : await held;
    try {
      const loading = this.table.load(firstBlock, firstBlock + blockCount - 1);
      if (loading) await loading;
      await task();
    } finally {
      release();
    }
  }

  /** The data blocks a non-empty range of the data area touches, and whether it is whole blocks. */
  private blocksOf(
    offsetBytes: number,
    lengthBytes: number,
  ): { firstBlock: number; blockCount: number; aligned: boolean } {
    assert(
      lengthBytes > 0 &&
        offsetBytes >= this.geometry.dataOffsetBytes &&
        offsetBytes + lengthBytes <= this.dataEndBytes,
      `range ${offsetBytes}+${lengthBytes} is not inside the data area`,
    );
    const relativeBytes = offsetBytes - this.geometry.dataOffsetBytes;
    const firstBlock = Math.floor(relativeBytes / checksumBlockBytes);
    const endBlock = Math.ceil((relativeBytes + lengthBytes) / checksumBlockBytes);
    const aligned =
      relativeBytes % checksumBlockBytes === 0 && lengthBytes % checksumBlockBytes === 0;
    return { firstBlock, blockCount: endBlock - firstBlock, aligned };
  }

  private blockOffsetBytes(block: number): number {
    return this.geometry.dataOffsetBytes + block * checksumBlockBytes;
  }

  /**
   * Cuts a request at the edges of the data area and runs visit on each non-empty part, all at
   * once: from and to are the part's bounds inside the request.
   */
  private async eachPart(
    offsetBytes: number,
    lengthBytes: number,
    visit: (partOffsetBytes: number, from: number, to: number, inData: boolean) => Promise<void>,
  ): Promise<void> {
    const endBytes = offsetBytes + lengthBytes;
    const cuts = [
      offsetBytes,
      clamp(this.geometry.dataOffsetBytes, offsetBytes, endBytes),
      clamp(this.dataEndBytes, offsetBytes, endBytes),
      endBytes,
    ];
    const parts: Array<Promise<void>> = [];
    for (let index = 0; index < 3; index += 1) {
      const from = cuts[index]!;
      const to = cuts[index + 1]!;
      if (to > from) parts.push(visit(from, from - offsetBytes, to - offsetBytes, index === 1));
    }
    if (parts.length === 1) return parts[0];
    await Promise.all(parts);
  }

  /**
   * Runs visit, one after the other, on pieces of at most maxBlocksPerPiece blocks of the range.
   */
  private async eachPiece(
    offsetBytes: number,
    lengthBytes: number,
    visit: (pieceOffsetBytes: number, pieceBytes: number) => Promise<void>,
  ): Promise<void> {
    const pieceBytesMax = maxBlocksPerPiece * checksumBlockBytes;
    let position = offsetBytes;
    const endBytes = offsetBytes + lengthBytes;
    while (position < endBytes) {
      // Pieces end on piece boundaries of the data area, so each stays within maxBlocksPerPiece
      // blocks.
      const relative = position - this.geometry.dataOffsetBytes;
      const pieceEnd = Math.min(
        endBytes,
        this.geometry.dataOffsetBytes + (Math.floor(relative / pieceBytesMax) + 1) * pieceBytesMax,
      );
      await visit(position, pieceEnd - position);
      position = pieceEnd;
    }
  }

  private checkDataRange(offsetBytes: number, lengthBytes: number, what: string): void {
    checkRange(this, offsetBytes, lengthBytes, `${what} of ${this.path}`);
    if (
      offsetBytes < this.geometry.dataOffsetBytes ||
      offsetBytes + lengthBytes > this.dataEndBytes
    ) {
      throw new LunfsError(
        'EINVAL',
        `${what} of ${this.path}: range ${offsetBytes}+${lengthBytes} is not inside the data area ${this.geometry.dataOffsetBytes}+${this.geometry.dataBytes}`,
      );
    }
  }

  private refuseTableArea(offsetBytes: number, lengthBytes: number, what: string): void {
    const { tableOffsetBytes, tableBytes } = this.geometry;
    if (
      lengthBytes > 0 &&
      offsetBytes < tableOffsetBytes + tableBytes &&
      tableOffsetBytes < offsetBytes + lengthBytes
    ) {
      throw new LunfsError(
        'EINVAL',
        `${what} of ${this.path}: range ${offsetBytes}+${lengthBytes} overlaps the checksum table, which only the checksum layer writes`,
      );
    }
  }
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}

/**
 * Per-block locks, first come first served: acquire takes blocks first..last at once (so two
 * requests never wait for each other in a cycle) and gives the release function, at once when no
 * earlier request holds any of them. Only blocks held or waited for have an entry, and a holder
 * makes a promise only when someone waits for it (most requests meet no one).
 */
const lockGroupBlocks = 32;

class BlockLocks {
  private readonly holders = new Map<number, Holder>();

  /** Whether no request holds or waits for any of the blocks. */
  isFree(firstBlockIndex: number, lastBlockIndex: number): boolean {
    const lastBlock = Math.floor(lastBlockIndex / lockGroupBlocks);
    for (let block = Math.floor(firstBlockIndex / lockGroupBlocks); block <= lastBlock; block += 1)
      if (this.holders.has(block)) return false;
    return true;
  }

  acquire(firstBlockIndex: number, lastBlockIndex: number): (() => void) | Promise<() => void> {
    // Locks cover groups of lockGroupBlocks blocks (128 KiB): a 128 KiB request takes one map
    // entry, not 32. Requests in one group but on different blocks wait for each other; that is
    // rare.
    const firstBlock = Math.floor(firstBlockIndex / lockGroupBlocks);
    const lastBlock = Math.floor(lastBlockIndex / lockGroupBlocks);
    const holder: Holder = { released: undefined, wake: undefined };
    let earlier: Holder[] | undefined;
    for (let block = firstBlock; block <= lastBlock; block += 1) {
      const previous = this.holders.get(block);
      if (previous && !earlier?.includes(previous)) (earlier ??= []).push(previous);
      this.holders.set(block, holder);
    }
    const release = (): void => {
      for (let block = firstBlock; block <= lastBlock; block += 1)
        if (this.holders.get(block) === holder) this.holders.delete(block);
      holder.wake?.();
    };
    if (!earlier) return release;
    return Promise.all(earlier.map(releasedOf)).then(() => release);
  }
}

interface Holder {
  released: Promise<void> | undefined;
  wake: (() => void) | undefined;
}

/** A promise that settles when holder releases; only called while holder still holds its blocks. */
function releasedOf(holder: Holder): Promise<void> {
  holder.released ??= new Promise<void>((resolve) => {
    holder.wake = resolve;
  });
  return holder.released;
}
