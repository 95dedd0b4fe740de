// LMAP (seed 004, [0066]-[0067]): one entry per allocation unit (the seed's LDAAU, 1 MiB by
// default) over one L2MAP region. An entry names the RStore (through its RSD id) and the RSEG
// inside it that holds the unit, plus state bits: the share bits that snapshots use to mark an
// entry shared with a predecessor or successor in the sharing tree. Entries are packed two
// 32-bit words each: [rstoreId, rsegIndex << 16 | flags]; rstoreId 0 means unallocated.

import { assert } from '../util/assert.js';

export interface LmapEntry {
  rstoreId: number;
  rsegIndex: number;
  flags: number;
}

/** Share bits (seed 004 [0093]-[0096]); set by the snapshot layer, kept by the map. */
export const shareFlags = {
  sharedWithPredecessor: 1 << 0,
  sharedWithSuccessor: 1 << 1,
} as const;

export class Lmap {
  private readonly words: Uint32Array;
  mappedCount = 0;

  constructor(readonly entryCount: number) {
    this.words = new Uint32Array(entryCount * 2);
  }

  get(index: number): LmapEntry | undefined {
    const rstoreId = this.words[index * 2]!;
    if (rstoreId === 0) return undefined;
    const second = this.words[index * 2 + 1]!;
    return { rstoreId, rsegIndex: second >>> 16, flags: second & 0xffff };
  }

  has(index: number): boolean {
    return this.words[index * 2] !== 0;
  }

  set(index: number, entry: LmapEntry): void {
    assert(
      entry.rstoreId > 0 && entry.rstoreId <= 0xffffffff,
      `LMAP rstoreId ${entry.rstoreId} out of range`,
    );
    assert(
      entry.rsegIndex >= 0 && entry.rsegIndex <= 0xffff,
      `LMAP rsegIndex ${entry.rsegIndex} out of range`,
    );
    assert(entry.flags >= 0 && entry.flags <= 0xffff, `LMAP flags ${entry.flags} out of range`);
    if (this.words[index * 2] === 0) this.mappedCount += 1;
    this.words[index * 2] = entry.rstoreId;
    this.words[index * 2 + 1] = ((entry.rsegIndex << 16) | entry.flags) >>> 0;
  }

  clear(index: number): void {
    if (this.words[index * 2] === 0) return;
    this.words[index * 2] = 0;
    this.words[index * 2 + 1] = 0;
    this.mappedCount -= 1;
  }
}
