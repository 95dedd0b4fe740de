// One page of the write-back cache and the sector masks that describe it. A page holds pageBytes
// of a LUN (at most 32 sectors of blockBytes) with one bit per sector in each mask: valid (the
// page holds the sector's current data), dirty (not yet sent below) and inflight (being sent
// below by a destage). Pure data and pure functions: the page table, the write path and the
// destager change the fields.

import { blockBytes } from '../util/constants.js';

export class CachePage {
  valid = 0;
  dirty = 0;
  inflight = 0;
  /** Sequence number of the oldest write whose data is dirty (not yet sent below). */
  dirtySinceSeq = Infinity;
  /** Same, for the data a destage in flight is sending. */
  inflightSinceSeq = Infinity;
  dirtySinceMs = 0;
  /** Snapshot epoch of the dirty data, and of the data a destage in flight is sending. */
  dirtyEpoch = 0;
  inflightEpoch = 0;
  /** The buffer a destage in flight is sending from; a write to the page copies it first. */
  destageBuffer: Buffer | undefined;

  constructor(
    readonly index: number,
    public buffer: Buffer,
  ) {}
}

/** Counters of a LUN's cache, shown by status. */
export interface CacheStats {
  readHits: number;
  readMisses: number;
  writes: number;
  destagedBytes: number;
  destageErrors: number;
  writtenThroughBytes: number;
}

/** Whether the page holds data of an epoch below epoch: dirty, or being destaged. */
export function holdsOlderEpoch(page: CachePage, epoch: number): boolean {
  return (
    (page.dirty !== 0 && page.dirtyEpoch < epoch) ||
    (page.inflight !== 0 && page.inflightEpoch < epoch)
  );
}

/** Bits of the sectors that [inPage, inPage + length) touches. */
export function sectorMask(inPage: number, length: number): number {
  const first = Math.floor(inPage / blockBytes);
  const end = Math.ceil((inPage + length) / blockBytes);
  const count = end - first;
  return (count >= 32 ? 0xffffffff : ((1 << count) - 1) << first) >>> 0;
}

/** Bits of the sectors that lie wholly inside [inPage, inPage + length). */
export function wholeSectorMask(inPage: number, length: number): number {
  const first = Math.ceil(inPage / blockBytes);
  const end = Math.floor((inPage + length) / blockBytes);
  if (end <= first) return 0;
  return sectorMask(first * blockBytes, (end - first) * blockBytes);
}

/** [firstSector, sectorCount] for each run of set bits. */
export function sectorRuns(mask: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let sector = 0;
  while (sector < 32) {
    if (((mask >>> sector) & 1) === 0) {
      sector += 1;
      continue;
    }
    const start = sector;
    while (sector < 32 && ((mask >>> sector) & 1) === 1) sector += 1;
    runs.push([start, sector - start]);
  }
  return runs;
}
