// A thin volume: a LUN's address space through its map (seed 004 [0064]): L2MAP -> LMAP -> RSD
// -> PSEGs. An allocation unit gets an RSEG on its first write; until then it reads as zeros.
//
// Order of a first write, so that no block ever shows data that was never written to it:
//   1. prepareWrite (at cache-write time) takes an RSEG for the unit, or throws ENOSPC;
//   2. the first destage writes the data (the whole unit, zero-filled, when the RSEG may hold
//      old data);
//   3. only then does the LMAP entry point at the RSEG and the map op join the pending commit;
//   4. flush() flushes the data drives, then commits the metadata.
// Reads and writes of a unit whose first write is in flight wait for it.

import { checkRange, forEachPiece, type BlockDevice } from '../block/block-device.js';
import type { LunRecord } from '../meta/pool-metadata.js';
import { assert } from '../util/assert.js';
import type { LmapEntry } from '../meta/lmap.js';
import type { MapSpace } from '../pool/map-space.js';
import type { RsegAllocation } from '../pool/rseg-allocator.js';

export type { MapSpace };

export class ThinVolume implements BlockDevice {
  private readonly unitBytes: number;
  /** Units that have an RSEG but no mapping yet (written to the cache, not destaged). */
  protected readonly allocatedUnwritten = new Map<number, RsegAllocation>();
  /** Units whose first write is in flight. */
  protected readonly initializing = new Map<number, Promise<void>>();
  /** Set around a prepareWrite that may draw on reserved space (a reserved snapshot's target). */
  useReservation = false;

  constructor(
    private readonly space: MapSpace,
    readonly lun: LunRecord,
  ) {
    this.unitBytes = space.allocationUnitBytes;
  }

  get sizeBytes(): number {
    return this.lun.sizeBytes;
  }

  unitBytesOf(): number {
    return this.unitBytes;
  }

  /**
   * Whether the allocation unit holding offsetBytes has data (mapped, or its first write is on its
   * way).
   */
  holdsData(offsetBytes: number): boolean {
    const unitIndex = Math.floor(offsetBytes / this.unitBytes);
    return (
      this.lun.map.has(unitIndex) ||
      this.allocatedUnwritten.has(unitIndex) ||
      this.initializing.has(unitIndex)
    );
  }

  /** Visits every mapped unit. */
  forEachMappedUnit(visit: (unitIndex: number) => void): void {
    this.lun.map.forEachMapped((unitIndex) => visit(unitIndex));
  }

  /** Bytes with an RSEG behind them (mapped, or allocated for data still in the cache). */
  get allocatedBytes(): number {
    return (this.lun.map.mappedCount + this.allocatedUnwritten.size) * this.unitBytes;
  }

  prepareWrite(offsetBytes: number, lengthBytes: number): void {
    checkRange(this, offsetBytes, lengthBytes, `write to LUN ${this.lun.name}`);
    if (lengthBytes === 0) return;
    const firstUnit = Math.floor(offsetBytes / this.unitBytes);
    const lastUnit = Math.floor((offsetBytes + lengthBytes - 1) / this.unitBytes);
    let taken: Array<[number, RsegAllocation]> | undefined;
    try {
      for (let unitIndex = firstUnit; unitIndex <= lastUnit; unitIndex += 1) {
        if (
          this.lun.map.has(unitIndex) ||
          this.allocatedUnwritten.has(unitIndex) ||
          this.initializing.has(unitIndex)
        )
          continue;
        const previous =
          unitIndex > 0
            ? (this.lun.map.get(unitIndex - 1) ?? this.allocatedUnwritten.get(unitIndex - 1))
            : undefined;
        const allocation = this.space.allocate(previous, this.useReservation);
        (taken ??= []).push([unitIndex, allocation]);
        this.allocatedUnwritten.set(unitIndex, allocation); // visible as the next unit's hint
      }
    } catch (error) {
      for (const [unitIndex, allocation] of taken ?? []) {
        this.allocatedUnwritten.delete(unitIndex);
        this.space.abandon(allocation); // all or nothing
      }
      throw error;
    }
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    checkRange(this, offsetBytes, target.length, `read of LUN ${this.lun.name}`);
    if (target.length === 0) return; // past the last unit when offsetBytes is the end
    const inUnit = offsetBytes % this.unitBytes;
    if (inUnit + target.length <= this.unitBytes)
      // the common case
      return this.readUnit(Math.floor(offsetBytes / this.unitBytes), inUnit, target);
    const pieces: Promise<void>[] = [];
    forEachPiece(
      offsetBytes,
      target.length,
      this.unitBytes,
      (unitIndex, inUnit, length, inRequest) => {
        pieces.push(
          this.readUnit(unitIndex, inUnit, target.subarray(inRequest, inRequest + length)),
        );
      },
    );
    await Promise.all(pieces);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    checkRange(this, offsetBytes, data.length, `write to LUN ${this.lun.name}`);
    // nothing to allocate, and past the last unit when offsetBytes is the end
    if (data.length === 0) return;
    const inUnit = offsetBytes % this.unitBytes;
    if (inUnit + data.length <= this.unitBytes)
      // the common case
      return this.writeUnit(Math.floor(offsetBytes / this.unitBytes), inUnit, data);
    const pieces: Promise<void>[] = [];
    forEachPiece(
      offsetBytes,
      data.length,
      this.unitBytes,
      (unitIndex, inUnit, length, inRequest) => {
        pieces.push(
          this.writeUnit(unitIndex, inUnit, data.subarray(inRequest, inRequest + length)),
        );
      },
    );
    await Promise.all(pieces);
  }

  flush(): Promise<void> {
    return this.space.commit();
  }

  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, `discard of LUN ${this.lun.name}`);
    const partial: Array<[number, number, number]> = [];
    const whole: number[] = [];
    forEachPiece(offsetBytes, lengthBytes, this.unitBytes, (unitIndex, inUnit, length) => {
      // A unit with no RSEG, none taken and no first write on its way reads as zeros already
      // (so a discard of a large, mostly empty range costs no await per unit).
      if (
        !this.lun.map.has(unitIndex) &&
        !this.allocatedUnwritten.has(unitIndex) &&
        !this.initializing.has(unitIndex)
      )
        return;
      if (length === this.unitBytes) whole.push(unitIndex);
      else partial.push([unitIndex, inUnit, length]);
    });
    for (const unitIndex of whole) await this.unmapUnit(unitIndex);
    for (const [unitIndex, inUnit, length] of partial) {
      await this.initializing.get(unitIndex);
      if (this.lun.map.get(unitIndex))
        await this.writeUnit(unitIndex, inUnit, Buffer.alloc(length));
    }
  }

  /** Gives back every RSEG of the volume (the LUN is being removed; its removal is queued). */
  releaseAll(): void {
    for (const allocation of this.allocatedUnwritten.values()) this.space.abandon(allocation);
    this.allocatedUnwritten.clear();
  }

  private async readUnit(unitIndex: number, inUnit: number, slice: Buffer): Promise<void> {
    const pending = this.initializing.get(unitIndex);
    if (pending) await pending;
    const entry = this.lun.map.get(unitIndex);
    if (!entry) {
      slice.fill(0);
      return;
    }
    await this.space.rstore(entry.rstoreId).read(entry.rsegIndex * this.unitBytes + inUnit, slice);
  }

  private async writeUnit(unitIndex: number, inUnit: number, piece: Buffer): Promise<void> {
    for (;;) {
      const pending = this.initializing.get(unitIndex);
      if (!pending) break;
      await pending;
    }
    const entry = this.lun.map.get(unitIndex);
    if (entry) {
      await this.space
        .rstore(entry.rstoreId)
        .write(entry.rsegIndex * this.unitBytes + inUnit, piece);
      return;
    }
    let allocation = this.allocatedUnwritten.get(unitIndex);
    if (!allocation && isAllZero(piece)) return; // an unallocated unit reads as zeros already
    if (!allocation) {
      // A write that no cache prepared (tests stacking the map alone): allocate now.
      this.prepareWrite(unitIndex * this.unitBytes + inUnit, piece.length);
      allocation = this.allocatedUnwritten.get(unitIndex)!;
    }
    this.allocatedUnwritten.delete(unitIndex);
    const first = this.firstWrite(unitIndex, allocation, inUnit, piece);
    this.initializing.set(
      unitIndex,
      first.catch(() => undefined),
    );
    try {
      await first;
    } finally {
      this.initializing.delete(unitIndex);
    }
  }

  private async firstWrite(
    unitIndex: number,
    allocation: RsegAllocation,
    inUnit: number,
    piece: Buffer,
  ): Promise<void> {
    const rstore = this.space.rstore(allocation.rstoreId);
    const unitStart = allocation.rsegIndex * this.unitBytes;
    try {
      if (allocation.fresh) {
        await rstore.write(unitStart + inUnit, piece);
      } else {
        const whole = Buffer.alloc(this.unitBytes);
        piece.copy(whole, inUnit);
        await rstore.write(unitStart, whole);
      }
    } catch (error) {
      this.space.abandon(allocation);
      throw error;
    }
    const entry: LmapEntry = {
      rstoreId: allocation.rstoreId,
      rsegIndex: allocation.rsegIndex,
      flags: 0,
    };
    this.lun.map.set(unitIndex, entry);
    this.space.queue({ kind: 'map', lunId: this.lun.id, unitIndex, ...entry });
  }

  private async unmapUnit(unitIndex: number): Promise<void> {
    await this.initializing.get(unitIndex);
    const unwritten = this.allocatedUnwritten.get(unitIndex);
    if (unwritten) {
      this.allocatedUnwritten.delete(unitIndex);
      this.space.abandon(unwritten);
    }
    const entry = this.lun.map.get(unitIndex);
    if (!entry) return;
    this.lun.map.clear(unitIndex);
    assert(this.lun.map.get(unitIndex) === undefined, 'unmap did not clear the entry');
    this.space.queue({ kind: 'unmap', lunId: this.lun.id, unitIndex }, () =>
      this.space.abandon({ ...entry, fresh: false }),
    );
  }
}

function isAllZero(data: Buffer): boolean {
  for (let index = 0; index < data.length; index += 1) if (data[index] !== 0) return false;
  return true;
}
