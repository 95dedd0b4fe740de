// A snapclone's thin volume while BGCOPY runs (issue 15, seed 004 [0100]-[0104]). The clone is a
// LUN of its own from its first instant; until BGCOPY has made it independent, an allocation unit
// it has not written yet reads its base: a hidden snapshot of the clone's source, taken at the
// clone's instant, which nothing ever writes (so its content is fixed).
//
// A unit is the clone's own once it is mapped in the clone's map: from then on it reads and
// writes like any thin volume's. A unit whose base holds data becomes its own by a copy of the
// whole unit (copy on first write, seed 004 [0097]: "data is copied in fixed sized blocks
// independent of the actual size of a given write"): the first write to it (BGCOPY's copy, or a
// destage of the clone's cache) writes the base's unit with the new data laid over it, and maps
// the unit in the same step (thin-volume.ts: the mapping is committed only after its data is on
// the drives, so a mapped unit never reads less than the base). Units whose base is all zeros need
// no copy: unmapped, they read zeros either way.
//
// A discard must not unmap a unit whose base holds data (it would read the base again): there it
// writes zeros instead, until the clone is independent.
//
// Invariants:
// - baseData (units whose base holds data) is fixed at the clone's instant; pending is the part of
//   it not yet the clone's own, and BGCOPY ends when it is empty.
// - One unit's copy, BGCOPY's or a write's, holds the unit's lock; so does a discard of it.

import { forEachPiece } from '../block/block-device.js';
import type { LunRecord } from '../meta/pool-metadata.js';
import { ChunkLockManager } from '../util/chunk-locks.js';
import { ThinVolume, type MapSpace } from './thin-volume.js';

/** What the clone reads where it has no data of its own: its base snapshot. */
export interface CloneBase {
  readonly sizeBytes: number;
  read(offsetBytes: number, target: Buffer): Promise<void>;
}

export class CloneVolume extends ThinVolume {
  private readonly unitLocks = new ChunkLockManager();
  /** Units whose base holds data, and those of them not yet the clone's own. */
  private readonly baseData: Set<number>;
  readonly pending: Set<number>;
  /** Units made the clone's own by a copy whose mapping no flush of this volume covered yet. */
  private readonly undurable = new Set<number>();
  /** Reads of the base under way, by unit: they may still read the source's chunks there. */
  private readonly baseReads = new Map<number, number>();

  constructor(
    space: MapSpace,
    lun: LunRecord,
    private readonly base: CloneBase,
    baseDataUnits: Iterable<number>,
  ) {
    super(space, lun);
    this.baseData = new Set(baseDataUnits);
    this.pending = new Set([...this.baseData].filter((unitIndex) => !lun.map.has(unitIndex)));
  }

  /** Whether BGCOPY is over (the pool metadata then no longer names a base). */
  private get independent(): boolean {
    return this.lun.cloneOf === undefined;
  }

  private ownUnit(unitIndex: number): boolean {
    return this.lun.map.has(unitIndex) || this.initializing.has(unitIndex);
  }

  /**
   * Whether the base need not keep the unit's data any more: the clone holds the unit whatever
   * happens, its own by a copy of the base whose mapping a flush has made durable (after a crash
   * the unit is still mapped, so the clone never reads the base there again), and no read of the
   * base there is under way (one that chose the base before the copy waits for the chunks' locks,
   * maybe behind the destage that asks this: it must find the originals preserved).
   */
  durablyOwns(unitIndex: number): boolean {
    return (
      this.baseData.has(unitIndex) &&
      !this.pending.has(unitIndex) &&
      !this.undurable.has(unitIndex) &&
      !this.baseReads.has(unitIndex) &&
      this.lun.map.has(unitIndex)
    );
  }

  override async flush(): Promise<void> {
    const covered = [...this.undurable];
    await super.flush();
    for (const unitIndex of covered) this.undurable.delete(unitIndex);
  }

  override holdsData(offsetBytes: number): boolean {
    if (this.independent) return super.holdsData(offsetBytes);
    const unitIndex = Math.floor(offsetBytes / this.unitBytesOf());
    return this.baseData.has(unitIndex) || super.holdsData(offsetBytes);
  }

  override prepareWrite(offsetBytes: number, lengthBytes: number): void {
    // The space of the units the base holds is reserved for the clone (Controller.createClone).
    const firstUnit = Math.floor(offsetBytes / this.unitBytesOf());
    const lastUnit = Math.floor((offsetBytes + Math.max(1, lengthBytes) - 1) / this.unitBytesOf());
    let reserved = false;
    for (let unitIndex = firstUnit; unitIndex <= lastUnit && !reserved; unitIndex += 1)
      reserved = this.pending.has(unitIndex);
    const before = this.useReservation;
    this.useReservation = before || reserved;
    try {
      super.prepareWrite(offsetBytes, lengthBytes);
    } finally {
      this.useReservation = before;
    }
  }

  override async read(offsetBytes: number, target: Buffer): Promise<void> {
    if (this.independent) return super.read(offsetBytes, target);
    const pieces: Promise<void>[] = [];
    forEachPiece(
      offsetBytes,
      target.length,
      this.unitBytesOf(),
      (unitIndex, _inUnit, length, inRequest) => {
        const slice = target.subarray(inRequest, inRequest + length);
        const at = offsetBytes + inRequest;
        pieces.push(
          this.baseData.has(unitIndex) && !this.ownUnit(unitIndex)
            ? this.readBase(at, slice)
            : super.read(at, slice),
        );
      },
    );
    await Promise.all(pieces);
  }

  override async write(offsetBytes: number, data: Buffer): Promise<void> {
    if (this.independent) return super.write(offsetBytes, data);
    const pieces: Promise<void>[] = [];
    forEachPiece(
      offsetBytes,
      data.length,
      this.unitBytesOf(),
      (unitIndex, inUnit, length, inRequest) => {
        const piece = data.subarray(inRequest, inRequest + length);
        pieces.push(
          this.pending.has(unitIndex)
            ? this.copyOnWrite(unitIndex, inUnit, piece)
            : super.write(offsetBytes + inRequest, piece),
        );
      },
    );
    await Promise.all(pieces);
  }

  override async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (this.independent) return super.discard(offsetBytes, lengthBytes);
    const pieces: Array<[number, number, number]> = [];
    forEachPiece(offsetBytes, lengthBytes, this.unitBytesOf(), (unitIndex, inUnit, length) =>
      pieces.push([unitIndex, inUnit, length]),
    );
    for (const [unitIndex, inUnit, length] of pieces) {
      const at = unitIndex * this.unitBytesOf() + inUnit;
      if (!this.baseData.has(unitIndex)) await super.discard(at, length);
      else {
        // zeros written, so the unit stays the clone's own
        this.prepareWrite(at, length);
        await this.write(at, Buffer.alloc(length));
      }
    }
  }

  /**
   * BGCOPY's step: makes one unit the clone's own if it is not yet (a copy of the base's unit).
   * Returns the bytes copied.
   */
  async copyUnit(unitIndex: number): Promise<number> {
    if (!this.pending.has(unitIndex)) return 0;
    const startBytes = unitIndex * this.unitBytesOf();
    const lengthBytes = Math.min(this.unitBytesOf(), this.sizeBytes - startBytes);
    this.prepareWrite(startBytes, lengthBytes);
    await this.copyOnWrite(unitIndex, 0, Buffer.alloc(0));
    return lengthBytes;
  }

  /**
   * Reads the base within one unit; past its end (a clone grown since) zeros. Counted in baseReads
   * from the call on (the caller chose the base in the same turn).
   */
  private async readBase(offsetBytes: number, target: Buffer): Promise<void> {
    const unitIndex = Math.floor(offsetBytes / this.unitBytesOf());
    this.baseReads.set(unitIndex, (this.baseReads.get(unitIndex) ?? 0) + 1);
    try {
      const inBase = Math.max(0, Math.min(target.length, this.base.sizeBytes - offsetBytes));
      target.fill(0, inBase);
      if (inBase > 0) await this.base.read(offsetBytes, target.subarray(0, inBase));
    } finally {
      const left = this.baseReads.get(unitIndex)! - 1;
      if (left === 0) this.baseReads.delete(unitIndex);
      else this.baseReads.set(unitIndex, left);
    }
  }

  /** The unit's first write: the base's unit with piece laid over it at inUnit. */
  private async copyOnWrite(unitIndex: number, inUnit: number, piece: Buffer): Promise<void> {
    await this.unitLocks.withChunks([unitIndex], async () => {
      const startBytes = unitIndex * this.unitBytesOf();
      if (!this.pending.has(unitIndex)) {
        if (piece.length > 0) await super.write(startBytes + inUnit, piece);
        return;
      }
      const lengthBytes = Math.min(this.unitBytesOf(), this.sizeBytes - startBytes);
      // The unit must be mapped by this write even when it writes zeros (a thin volume skips an
      // all-zero first write to a unit it has no RSEG for): it takes its RSEG now if it has none.
      this.prepareWrite(startBytes, lengthBytes);
      if (inUnit === 0 && piece.length === lengthBytes) {
        await super.write(startBytes, piece); // the whole unit: nothing of the base is kept
      } else {
        const whole = Buffer.alloc(lengthBytes);
        await this.readBase(startBytes, whole);
        piece.copy(whole, inUnit);
        await super.write(startBytes, whole);
      }
      this.pending.delete(unitIndex);
      this.undurable.add(unitIndex);
    });
  }
}
