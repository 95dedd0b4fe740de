// Where RAID-5 keeps a byte (seed 004 [0044]): n members, the data space cut into stripe units;
// each row holds n - 1 data units and one parity unit (the XOR of the row's data), and the parity
// rotates over the members, left-symmetric as in md: row r keeps its parity on member
// n - 1 - (r mod n) and its data units on the members after it, wrapping. Arithmetic only: no
// I/O and no state beyond the two sizes.

import { forEachPiece } from '../block/block-device.js';
import { blockBytes } from '../util/constants.js';

/** What one data checksum covers (ChecksumDrive): repairs and row log records are whole blocks. */
export const checksumBlockBytes = blockBytes;

/** Where one piece of a data range lives. */
export interface DataPiece {
  row: number;
  memberIndex: number;
  offsetInUnit: number;
  lengthBytes: number;
  requestOffset: number;
}

export class Raid5Geometry {
  constructor(
    readonly memberCount: number,
    readonly stripeUnitBytes: number,
  ) {}

  parityMember(row: number): number {
    return this.memberCount - 1 - (row % this.memberCount);
  }

  /** The member holding data unit k (0 .. n-2) of a row. */
  dataMember(row: number, unitInRow: number): number {
    return (this.parityMember(row) + 1 + unitInRow) % this.memberCount;
  }

  /** Which data unit of the row (0 .. n-2) memberIndex holds. */
  unitInRow(row: number, memberIndex: number): number {
    return (memberIndex - this.parityMember(row) - 1 + this.memberCount) % this.memberCount;
  }

  /** The pieces of a data range, one per stripe unit it touches, in order. */
  pieces(offsetBytes: number, lengthBytes: number): DataPiece[] {
    const pieces: DataPiece[] = [];
    const dataUnitsPerRow = this.memberCount - 1;
    forEachPiece(
      offsetBytes,
      lengthBytes,
      this.stripeUnitBytes,
      (unitIndex, offsetInUnit, length, requestOffset) => {
        const row = Math.floor(unitIndex / dataUnitsPerRow);
        pieces.push({
          row,
          memberIndex: this.dataMember(row, unitIndex % dataUnitsPerRow),
          offsetInUnit,
          lengthBytes: length,
          requestOffset,
        });
      },
    );
    return pieces;
  }
}
