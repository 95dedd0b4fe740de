// The checksum table of a drive's PSEG area: one u32 per 4 KiB data block, in 4 KiB table pages
// of 1023 entries and a trailing crc32c seal of the page's first 4092 bytes (layout in
// docs/on-disk-format.md, "Checksum table"). Entry 0 means "no checksum recorded", so a fresh
// sparse drive, whose table reads as zeros, needs no format step; entry 0xFFFFFFFF means "checksum
// lost": the page holding it was found damaged, and the block, whatever it holds, is not trusted
// until it is written again (from redundancy, or by the user). A stored checksum is neither (a
// block whose crc32c is 0 is stored as 1, one whose crc32c is 0xFFFFFFFF as 0xFFFFFFFE).
//
// Pages are read on first use and then kept in memory: 4 KiB per 4 MiB of data touched. A page
// that fails its seal is not an error: its entries become lost (so a block under it fails its
// check like a corrupt one: the RStore rebuilds it from redundancy, and without redundancy the
// read fails with EIO instead of returning bytes nobody can vouch for), it is counted, and it is
// rewritten, sealed, with the lost entries, by the next writeDirtyPages. Only ChecksumDrive uses
// this.

import { endianness } from 'node:os';
import type { Drive } from './drive.js';
import { crc32c } from '../native/native-kernels.js';
import { assert } from '../util/assert.js';
import { blockBytes } from '../util/constants.js';

/** Bytes of data one table entry covers. */
export const checksumBlockBytes = blockBytes; // part of the drive format: one crc32c per block
export const tablePageBytes = 4096;
/** Entries per table page: the page's last 4 bytes hold its seal. */
export const entriesPerTablePage = 1023;
const sealOffsetBytes = entriesPerTablePage * 4;

/** Table entry for "never written since the drive was made, or forgotten": nothing to verify. */
export const unknownChecksum = 0;
/** Table entry for "the page holding it was damaged": the block fails every check until written. */
export const lostChecksum = 0xffffffff;

/** Bytes of table needed for dataBytes of protected data (whole pages, not aligned further). */
export function checksumTableBytesFor(dataBytes: number): number {
  const entryCount = Math.ceil(dataBytes / checksumBlockBytes);
  return Math.ceil(entryCount / entriesPerTablePage) * tablePageBytes;
}

/**
 * The table value for a block whose crc32c is crc: 0 and 0xFFFFFFFF are taken, so they are stored
 * as 1 and 0xFFFFFFFE.
 */
export function storedChecksum(crc: number): number {
  return crc === unknownChecksum ? 1 : crc === lostChecksum ? lostChecksum - 1 : crc;
}

/** On a little-endian host a page's entries are its bytes as they are: encoding is one copy. */
const littleEndianHost = endianness() === 'LE';

/** A 4 KiB table page: the entries, little-endian, then crc32c of the first 4092 bytes. */
export function encodeTablePage(entries: Uint32Array): Buffer {
  assert(
    entries.length === entriesPerTablePage,
    `a table page has ${entriesPerTablePage} entries, got ${entries.length}`,
  );
  return encodeTablePageInto(entries, Buffer.allocUnsafe(tablePageBytes));
}

/** encodeTablePage into page (tablePageBytes long); returns page. */
function encodeTablePageInto(entries: Uint32Array, page: Buffer): Buffer {
  if (littleEndianHost)
    page.set(new Uint8Array(entries.buffer, entries.byteOffset, sealOffsetBytes));
  else
    for (let index = 0; index < entriesPerTablePage; index += 1)
      page.writeUInt32LE(entries[index]!, index * 4);
  page.writeUInt32LE(crc32c(page.subarray(0, sealOffsetBytes)), sealOffsetBytes);
  return page;
}

/**
 * The entries of a page read from the drive, or null when it fails its seal. All zeros is valid.
 */
export function decodeTablePage(page: Buffer): Uint32Array | null {
  assert(
    page.length === tablePageBytes,
    `a table page is ${tablePageBytes} bytes, got ${page.length}`,
  );
  const entries = new Uint32Array(entriesPerTablePage);
  if (isAllZero(page)) return entries;
  if (page.readUInt32LE(sealOffsetBytes) !== crc32c(page.subarray(0, sealOffsetBytes))) return null;
  if (littleEndianHost) new Uint8Array(entries.buffer).set(page.subarray(0, sealOffsetBytes));
  else
    for (let index = 0; index < entriesPerTablePage; index += 1)
      entries[index] = page.readUInt32LE(index * 4);
  return entries;
}

const zeroPage = Buffer.alloc(tablePageBytes);

function isAllZero(page: Buffer): boolean {
  return page.equals(zeroPage);
}

export class ChecksumTable {
  private readonly pages = new Map<number, Uint32Array>();
  private readonly loading = new Map<number, Promise<Uint32Array>>();
  private readonly dirtyPages = new Set<number>();
  private readonly pageCount: number;

  /**
   * child holds the table at tableOffsetBytes (tableBytes long, whole pages) for blockCount data
   * blocks; counters.tablePagesDamaged counts the pages that failed their seal when loaded.
   */
  constructor(
    private readonly child: Drive,
    private readonly tableOffsetBytes: number,
    tableBytes: number,
    readonly blockCount: number,
    private readonly counters: { tablePagesDamaged: number },
  ) {
    this.pageCount = Math.ceil(blockCount / entriesPerTablePage);
    assert(
      this.pageCount * tablePageBytes <= tableBytes,
      `a checksum table of ${tableBytes} bytes cannot hold ${blockCount} entries`,
    );
    assert(
      tableOffsetBytes % tablePageBytes === 0,
      `checksum table offset ${tableOffsetBytes} is not 4 KiB aligned`,
    );
  }

  /**
   * Loads the pages holding the entries of blocks firstBlock..lastBlock (inclusive); undefined
   * when they are all in memory already (the common case, which then costs no await).
   */
  load(firstBlock: number, lastBlock: number): Promise<void> | undefined {
    assert(
      firstBlock >= 0 && firstBlock <= lastBlock && lastBlock < this.blockCount,
      `blocks ${firstBlock}..${lastBlock} outside 0..${this.blockCount - 1}`,
    );
    const lastPage = Math.floor(lastBlock / entriesPerTablePage);
    let loads: Array<Promise<Uint32Array>> | undefined;
    for (let page = Math.floor(firstBlock / entriesPerTablePage); page <= lastPage; page += 1) {
      if (!this.pages.has(page)) (loads ??= []).push(this.loadPage(page));
    }
    return loads && Promise.all(loads).then(() => undefined);
  }

  /** Whether the pages holding the entries of blocks firstBlock..lastBlock are all in memory. */
  isLoaded(firstBlock: number, lastBlock: number): boolean {
    const lastPage = Math.floor(lastBlock / entriesPerTablePage);
    for (let page = Math.floor(firstBlock / entriesPerTablePage); page <= lastPage; page += 1)
      if (!this.pages.has(page)) return false;
    return true;
  }

  /** How many of the blocks have a checksum recorded. */
  countKnown(firstBlock: number, blockCount: number): number {
    let known = 0;
    this.eachRun(firstBlock, blockCount, false, (entries, from, to) => {
      for (let index = from; index < to; index += 1)
        if (entries[index] !== unknownChecksum) known += 1;
    });
    return known;
  }

  /** Records crcs[i], the crc32c of block firstBlock + i, for blockCount blocks. */
  record(firstBlock: number, crcs: Uint32Array, blockCount: number): void {
    assert(crcs.length >= blockCount, 'fewer checksums than blocks');
    this.eachRun(firstBlock, blockCount, true, (entries, from, to, done) => {
      for (let index = from; index < to; index += 1)
        entries[index] = storedChecksum(crcs[done + index - from]!);
    });
  }

  /** Sets the entries of the blocks to one value (unknownChecksum, or a discarded block's). */
  fill(firstBlock: number, blockCount: number, value: number): void {
    assert(
      Number.isInteger(value) && value >= 0 && value <= 0xffffffff,
      `checksum table entry ${value} is not a u32`,
    );
    this.eachRun(firstBlock, blockCount, true, (entries, from, to) => {
      entries.fill(value, from, to);
    });
  }

  /** The blocks (indexes) whose recorded checksum differs from crcs[block - firstBlock]. */
  mismatchedBlocks(firstBlock: number, crcs: Uint32Array, blockCount: number): number[] {
    const bad: number[] = [];
    this.eachRun(firstBlock, blockCount, false, (entries, from, to, done) => {
      for (let index = from; index < to; index += 1) {
        const expected = entries[index]!;
        if (expected !== unknownChecksum && expected !== storedChecksum(crcs[done + index - from]!))
          bad.push(firstBlock + done + index - from);
      }
    });
    return bad;
  }

  /**
   * Reads every page not in memory, a batch at a time, and keeps only those that fail their
   * seal (their entries become lost, as at any load): a whole table is never held in memory.
   */
  async loadDamaged(): Promise<void> {
    const batchPages = 64;
    for (let first = 0; first < this.pageCount; first += batchPages) {
      const count = Math.min(batchPages, this.pageCount - first);
      const raw = Buffer.alloc(count * tablePageBytes);
      await this.child.read(this.pageOffsetBytes(first), raw);
      for (let index = 0; index < count; index += 1) {
        const pageIndex = first + index;
        if (
          this.pages.has(pageIndex) ||
          decodeTablePage(raw.subarray(index * tablePageBytes, (index + 1) * tablePageBytes)) !==
            null
        )
          continue;
        await this.loadPage(pageIndex);
      }
    }
  }

  /** The blocks whose entries are lost (of the pages loaded). */
  lostBlocks(): number[] {
    const lost: number[] = [];
    for (const [pageIndex, entries] of this.pages) {
      for (let index = 0; index < entriesPerTablePage; index += 1)
        if (entries[index] === lostChecksum) lost.push(pageIndex * entriesPerTablePage + index);
    }
    return lost.sort((a, b) => a - b);
  }

  /** Pages changed in memory and not yet written. */
  get dirtyPageCount(): number {
    return this.dirtyPages.size;
  }

  /**
   * Writes every dirty page, sealed, to the child (not flushed). The pages are encoded at the
   * call, so entries changed while the writes are under way make their page dirty again; a page
   * whose write fails stays dirty.
   */
  async writeDirtyPages(): Promise<void> {
    if (this.dirtyPages.size === 0) return;
    const pageIndexes = [...this.dirtyPages];
    // One buffer for every page of the call: a fresh 4 KiB Buffer each cost more than its write
    // (a flush under a snapshot's preservations writes tens of pages).
    const pages = Buffer.allocUnsafeSlow(pageIndexes.length * tablePageBytes);
    const writes: Array<Promise<void>> = [];
    let failure: { error: unknown } | undefined;
    pageIndexes.forEach((pageIndex, position) => {
      const encoded = encodeTablePageInto(
        this.pages.get(pageIndex)!,
        pages.subarray(position * tablePageBytes, (position + 1) * tablePageBytes),
      );
      this.dirtyPages.delete(pageIndex);
      const offsetBytes = this.pageOffsetBytes(pageIndex);
      try {
        // a drive file on tmpfs takes it at once (no promise)
        if (this.child.writeInline?.(offsetBytes, encoded)) return;
        writes.push(
          this.child.write(offsetBytes, encoded).catch((error: unknown) => {
            this.dirtyPages.add(pageIndex);
            throw error;
          }),
        );
      } catch (error) {
        this.dirtyPages.add(pageIndex);
        failure ??= { error };
      }
    });
    const outcomes = await Promise.allSettled(writes);
    if (failure) throw failure.error;
    const rejected = outcomes.find(
      (outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected',
    );
    if (rejected) throw rejected.reason;
  }

  private loadedPage(pageIndex: number): Uint32Array {
    const page = this.pages.get(pageIndex);
    assert(page !== undefined, `checksum table page ${pageIndex} used before it was loaded`);
    return page;
  }

  /**
   * Calls visit once per page the blocks span, with the page's entries, the run [from, to) of
   * entry indexes in it and the blocks done before the run; marks the pages dirty if asked.
   */
  private eachRun(
    firstBlock: number,
    blockCount: number,
    dirty: boolean,
    visit: (entries: Uint32Array, from: number, to: number, done: number) => void,
  ): void {
    assert(
      firstBlock >= 0 && blockCount >= 0 && firstBlock + blockCount <= this.blockCount,
      `blocks ${firstBlock}+${blockCount} outside the table`,
    );
    let done = 0;
    while (done < blockCount) {
      const block = firstBlock + done;
      const pageIndex = Math.floor(block / entriesPerTablePage);
      const from = block - pageIndex * entriesPerTablePage;
      const to = Math.min(entriesPerTablePage, from + blockCount - done);
      visit(this.loadedPage(pageIndex), from, to, done);
      if (dirty) this.dirtyPages.add(pageIndex);
      done += to - from;
    }
  }

  private pageOffsetBytes(pageIndex: number): number {
    return this.tableOffsetBytes + pageIndex * tablePageBytes;
  }

  /** One read per page however many requests need it at once; a failed read is not kept. */
  private loadPage(pageIndex: number): Promise<Uint32Array> {
    const inFlight = this.loading.get(pageIndex);
    if (inFlight) return inFlight;
    const load = (async () => {
      const raw = Buffer.alloc(tablePageBytes);
      await this.child.read(this.pageOffsetBytes(pageIndex), raw);
      let entries = decodeTablePage(raw);
      if (entries === null) {
        // A torn or rotten table page: what it said is lost, and so is the proof that its blocks
        // are intact. They fail their check until written again; the page is rewritten sealed,
        // lost entries and all, at the next flush.
        entries = new Uint32Array(entriesPerTablePage).fill(lostChecksum);
        const blocksInPage = Math.min(
          entriesPerTablePage,
          this.blockCount - pageIndex * entriesPerTablePage,
        );
        entries.fill(unknownChecksum, blocksInPage); // past the last block: no block, nothing lost
        this.counters.tablePagesDamaged += 1;
        this.dirtyPages.add(pageIndex);
      }
      assert(!this.pages.has(pageIndex), `checksum table page ${pageIndex} loaded twice`);
      this.pages.set(pageIndex, entries);
      return entries;
    })();
    this.loading.set(pageIndex, load);
    const forget = (): void => {
      this.loading.delete(pageIndex);
    };
    load.then(forget, forget);
    return load;
  }
}
