// The write path of the cache into its pages: a write is cut into pieces, one per page; pieces
// that cover part of a sector first read the rest of the sector from below, and pages holding
// dirty data of an older snapshot epoch have it destaged first. Then every piece is applied at
// once, under one epoch, so the write is wholly in or wholly out of a snapshot taken meanwhile
// (only a cache too small to hold all the pages of the write applies it piece by piece).
//
// Invariants:
// - A valid sector in a page is never older than the same sector below: a partial sector read
//   into a page that was evicted and created again meanwhile is read again.
// - A page's dirty sectors share one epoch (PageTable.markDirty asserts it).

import { forEachPiece, type BlockDevice } from '../block/block-device.js';
import { assert } from '../util/assert.js';
import { blockBytes } from '../util/constants.js';
import { holdsOlderEpoch, sectorMask } from './cache-page.js';
import type { Destager } from './destager.js';
import type { PageTable } from './page-table.js';

type Piece = [pageIndex: number, inPage: number, piece: Buffer, partial: boolean];

export class PageWriter {
  constructor(
    private readonly pages: PageTable,
    private readonly destager: Destager,
    private readonly below: BlockDevice,
    private readonly pageBytes: number,
    /** The LUN's current snapshot epoch (undefined: always 0). */
    private readonly epoch: (() => number) | undefined,
  ) {}

  /** Applies write seq to the pages, all pieces under one epoch where the cache can hold them. */
  async write(offsetBytes: number, data: Buffer, seq: number): Promise<void> {
    const pieces: Piece[] = [];
    forEachPiece(
      offsetBytes,
      data.length,
      this.pageBytes,
      (pageIndex, inPage, length, inRequest) => {
        const partial = inPage % blockBytes !== 0 || length % blockBytes !== 0;
        pieces.push([pageIndex, inPage, data.subarray(inRequest, inRequest + length), partial]);
      },
    );
    // Wait until every piece can be applied without waiting (partial sectors read from below,
    // older-epoch dirty data destaged), then apply them all in one go under one epoch, so the
    // write is wholly in or wholly out of a snapshot taken meanwhile.
    let rounds = 0;
    for (;;) {
      let waited = false;
      for (const [pageIndex, inPage, piece, partial] of pieces) {
        if (partial && !this.sectorsValid(pageIndex, inPage, piece.length)) {
          await this.fillPartialSectors(pageIndex, inPage, piece.length);
          waited = true;
        }
      }
      const epoch = this.currentEpoch();
      for (const [pageIndex] of pieces) {
        const page = this.pages.dirtyPage(pageIndex);
        if (page && holdsOlderEpoch(page, epoch)) {
          await this.destager.destageOlderEpoch(page, epoch);
          waited = true;
        }
      }
      if (waited && (rounds += 1) < 3) continue;
      if (
        waited ||
        pieces.some(
          ([pageIndex, inPage, piece, partial]) =>
            partial && !this.sectorsValid(pageIndex, inPage, piece.length),
        )
      ) {
        // A cache too small to hold every page of the write at once (filling one evicted
        // another): apply piece by piece. Only here can a snapshot taken during this very write
        // see part of it.
        await this.applyPieceByPiece(pieces, seq);
        break;
      }
      // Partial pieces first: their pages are valid now and become dirty (never evicted); no
      // trimming until all are applied, so no page of this write is evicted half-way.
      this.pages.applying = true;
      try {
        for (const [pageIndex, inPage, piece, partial] of pieces)
          if (partial) this.applyPiece(pageIndex, inPage, piece, seq, epoch);
        for (const [pageIndex, inPage, piece, partial] of pieces)
          if (!partial) this.applyPiece(pageIndex, inPage, piece, seq, epoch);
      } finally {
        this.pages.applying = false;
      }
      this.pages.trim();
      break;
    }
  }

  private async applyPieceByPiece(pieces: Piece[], seq: number): Promise<void> {
    for (const [pageIndex, inPage, piece, partial] of pieces) {
      for (;;) {
        if (partial && !this.sectorsValid(pageIndex, inPage, piece.length))
          await this.fillPartialSectors(pageIndex, inPage, piece.length);
        const epoch = this.currentEpoch();
        const page = this.pages.dirtyPage(pageIndex);
        if (page && holdsOlderEpoch(page, epoch)) {
          await this.destager.destageOlderEpoch(page, epoch);
          continue;
        }
        if (partial && !this.sectorsValid(pageIndex, inPage, piece.length)) continue;
        this.applyPiece(pageIndex, inPage, piece, seq, epoch);
        break;
      }
    }
  }

  private sectorsValid(pageIndex: number, inPage: number, length: number): boolean {
    const page = this.pages.lookup(pageIndex);
    const mask = sectorMask(inPage, length);
    return page !== undefined && (page.valid & mask) >>> 0 === mask;
  }

  private applyPiece(
    pageIndex: number,
    inPage: number,
    piece: Buffer,
    seq: number,
    epoch: number,
  ): void {
    const page = this.pages.lookupOrCreate(pageIndex, this.below.sizeBytes);
    const mask = sectorMask(inPage, piece.length);
    assert(
      (mask & ~page.valid) === 0 || (inPage % blockBytes === 0 && piece.length % blockBytes === 0),
      'partial sector applied to a page that lacks it',
    );
    this.pages.unshare(page);
    piece.copy(page.buffer, inPage);
    page.valid = (page.valid | mask) >>> 0;
    this.pages.markDirty(page, mask, seq, epoch);
  }

  /** A write that covers part of a sector: the rest of the sector must come from below first. */
  private async fillPartialSectors(
    pageIndex: number,
    inPage: number,
    length: number,
  ): Promise<void> {
    const mask = sectorMask(inPage, length);
    let page = this.pages.lookupOrCreate(pageIndex, this.below.sizeBytes);
    while ((mask & ~page.valid) !== 0) {
      const from = Math.floor(inPage / blockBytes) * blockBytes;
      const to = Math.ceil((inPage + length) / blockBytes) * blockBytes;
      const fromBelow = Buffer.alloc(to - from);
      // The last sector of a device whose size is not a multiple of the sector ends early.
      const pageStart = pageIndex * this.pageBytes;
      await this.below.read(
        pageStart + from,
        fromBelow.subarray(0, Math.min(to, this.below.sizeBytes - pageStart) - from),
      );
      const current = this.pages.lookupOrCreate(pageIndex, this.below.sizeBytes);
      if (current !== page) {
        // Evicted while reading: a write may have reached below since the read, so the data read
        // is possibly older than below. Read again into the new page.
        page = current;
        continue;
      }
      for (let sector = from / blockBytes; sector < to / blockBytes; sector += 1) {
        const bit = 1 << sector;
        if ((page.valid & bit) !== 0) continue;
        fromBelow.copy(
          page.buffer,
          sector * blockBytes,
          sector * blockBytes - from,
          sector * blockBytes - from + blockBytes,
        );
        page.valid = (page.valid | bit) >>> 0;
      }
    }
  }

  private currentEpoch(): number {
    return this.epoch?.() ?? 0;
  }
}
