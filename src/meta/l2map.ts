// L2MAP (seed 004, [0065]): the top level of a LUN's map, one slot per region of
// lmapEntryCount allocation units (2048 x 1 MiB = the seed's 2 GiB). A slot holds an LMAP only
// once some unit of its region is allocated, so a sparse LUN costs almost nothing.

import { assert } from '../util/assert.js';
import { Lmap, type LmapEntry } from './lmap.js';

export class L2map {
  private slots: Array<Lmap | undefined>;
  private mapped = 0;

  constructor(
    private unitCount: number,
    readonly lmapEntryCount: number,
  ) {
    this.slots = new Array(Math.ceil(unitCount / lmapEntryCount)).fill(undefined);
  }

  /** Number of allocation units the map covers. */
  get allocationUnitCount(): number {
    return this.unitCount;
  }

  /** Number of allocation units that are allocated. */
  get mappedCount(): number {
    return this.mapped;
  }

  get(unitIndex: number): LmapEntry | undefined {
    assert(
      unitIndex >= 0 && unitIndex < this.unitCount,
      `L2MAP unit ${unitIndex} outside 0..${this.unitCount}`,
    );
    return this.slots[Math.floor(unitIndex / this.lmapEntryCount)]?.get(
      unitIndex % this.lmapEntryCount,
    );
  }

  /** Whether the unit is allocated (no entry object is made). */
  has(unitIndex: number): boolean {
    return (
      this.slots[Math.floor(unitIndex / this.lmapEntryCount)]?.has(
        unitIndex % this.lmapEntryCount,
      ) ?? false
    );
  }

  set(unitIndex: number, entry: LmapEntry): void {
    assert(
      unitIndex >= 0 && unitIndex < this.unitCount,
      `L2MAP unit ${unitIndex} outside 0..${this.unitCount}`,
    );
    const slotIndex = Math.floor(unitIndex / this.lmapEntryCount);
    let lmap = this.slots[slotIndex];
    if (!lmap) {
      lmap = new Lmap(this.lmapEntryCount);
      this.slots[slotIndex] = lmap;
    }
    const before = lmap.mappedCount;
    lmap.set(unitIndex % this.lmapEntryCount, entry);
    this.mapped += lmap.mappedCount - before;
  }

  clear(unitIndex: number): void {
    const slotIndex = Math.floor(unitIndex / this.lmapEntryCount);
    const lmap = this.slots[slotIndex];
    if (!lmap) return;
    const before = lmap.mappedCount;
    lmap.clear(unitIndex % this.lmapEntryCount);
    this.mapped += lmap.mappedCount - before;
    if (lmap.mappedCount === 0) this.slots[slotIndex] = undefined;
  }

  /** Grows the covered range (units past the old end are unallocated). Shrinking is not allowed. */
  grow(unitCount: number): void {
    assert(unitCount >= this.unitCount, 'L2MAP cannot shrink');
    this.unitCount = unitCount;
    const slotCount = Math.ceil(unitCount / this.lmapEntryCount);
    while (this.slots.length < slotCount) this.slots.push(undefined);
  }

  /** Visits every allocated unit in ascending order. */
  forEachMapped(visit: (unitIndex: number, entry: LmapEntry) => void): void {
    this.slots.forEach((lmap, slotIndex) => {
      if (!lmap) return;
      for (let index = 0; index < this.lmapEntryCount; index += 1) {
        const entry = lmap.get(index);
        if (entry) visit(slotIndex * this.lmapEntryCount + index, entry);
      }
    });
  }

  /** Number of LMAPs that exist (for status and metadata sizing). */
  get lmapCount(): number {
    return this.slots.filter((slot) => slot !== undefined).length;
  }
}
