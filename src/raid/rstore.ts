// RStore I/O (seed 004 [0044], [0069]): an RStore is an ordered set of PSEGs on distinct drives of
// one redundancy set, with a RAID level. Its RSD (RStoreRecord) lists the members; this class
// turns an offset in the RStore's data space into member drive offsets. RAID-0 stripes the data
// space over all members in stripe units; RAID-1 keeps every member a full copy; RAID-5 keeps one
// rotating parity unit per row of stripe units (raid5-layout.ts).

import type { BlockDevice } from '../block/block-device.js';
import { checkRange, forEachPiece } from '../block/block-device.js';
import type { Drive } from '../drive/drive.js';
import type { RStoreRecord } from '../meta/pool-metadata.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';
import { Raid5Layout } from './raid5-layout.js';

/** Where a drive's PSEG area starts and how big a PSEG is: from its header. */
export interface DriveGeometry {
  drive: Drive;
  psegAreaOffsetBytes: number;
  psegSizeBytes: number;
}

export function rstoreDataBytes(record: RStoreRecord, psegSizeBytes: number): number {
  if (record.raidLevel === 0) return psegSizeBytes * record.members.length;
  if (record.raidLevel === 5) return psegSizeBytes * (record.members.length - 1);
  return psegSizeBytes;
}

export class RStore implements BlockDevice {
  readonly sizeBytes: number;
  private readonly psegSizeBytes: number;
  private nextMirror = 0;
  private readonly raid5: Raid5Layout | undefined;

  constructor(
    readonly record: RStoreRecord,
    private readonly drives: ReadonlyArray<DriveGeometry>,
    private readonly stripeUnitBytes: number,
  ) {
    assert(record.members.length >= 1, `RStore ${record.id} has no members`);
    this.psegSizeBytes = drives[record.members[0]!.driveIndex]!.psegSizeBytes;
    assert(this.psegSizeBytes % stripeUnitBytes === 0, 'stripe unit must divide the PSEG size');
    this.sizeBytes = rstoreDataBytes(record, this.psegSizeBytes);
    if (record.raidLevel === 5) {
      assert(record.members.length >= 3, `RAID-5 RStore ${record.id} needs at least 3 members`);
      this.raid5 = new Raid5Layout(record.members.length, stripeUnitBytes, {
        read: (memberIndex, memberOffsetBytes, target) => this.memberDrive(memberIndex).read(this.physicalOffset(memberIndex, memberOffsetBytes), target),
        write: (memberIndex, memberOffsetBytes, data) => this.memberDrive(memberIndex).write(this.physicalOffset(memberIndex, memberOffsetBytes), data),
      });
    }
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    checkRange(this, offsetBytes, target.length, `read of RStore ${this.record.id}`);
    if (this.record.raidLevel === 1) {
      await this.readMirror(offsetBytes, target);
      return;
    }
    if (this.raid5) return this.raid5.read(offsetBytes, target);
    const inUnit = offsetBytes % this.stripeUnitBytes;
    if (inUnit + target.length <= this.stripeUnitBytes) {
      const [memberIndex, memberOffset] = this.stripeLocation(offsetBytes);
      return this.memberDrive(memberIndex).read(this.physicalOffset(memberIndex, memberOffset), target); // the common case
    }
    const pending: Promise<void>[] = [];
    this.forEachStripePiece(offsetBytes, target.length, (memberIndex, memberOffset, length, requestOffset) => {
      pending.push(this.memberDrive(memberIndex).read(this.physicalOffset(memberIndex, memberOffset), target.subarray(requestOffset, requestOffset + length)));
    });
    await Promise.all(pending);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    checkRange(this, offsetBytes, data.length, `write of RStore ${this.record.id}`);
    if (this.raid5) return this.raid5.write(offsetBytes, data);
    const inUnit = offsetBytes % this.stripeUnitBytes;
    if (this.record.raidLevel === 0 && inUnit + data.length <= this.stripeUnitBytes) {
      const [memberIndex, memberOffset] = this.stripeLocation(offsetBytes);
      return this.memberDrive(memberIndex).write(this.physicalOffset(memberIndex, memberOffset), data); // the common case
    }
    const pending: Promise<void>[] = [];
    if (this.record.raidLevel === 1) {
      for (let memberIndex = 0; memberIndex < this.record.members.length; memberIndex += 1) {
        pending.push(this.memberDrive(memberIndex).write(this.physicalOffset(memberIndex, offsetBytes), data));
      }
    } else {
      this.forEachStripePiece(offsetBytes, data.length, (memberIndex, memberOffset, length, requestOffset) => {
        pending.push(this.memberDrive(memberIndex).write(this.physicalOffset(memberIndex, memberOffset), data.subarray(requestOffset, requestOffset + length)));
      });
    }
    await Promise.all(pending);
  }

  async flush(): Promise<void> {
    await Promise.all(this.record.members.map((_, memberIndex) => this.memberDrive(memberIndex).flush()));
  }

  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, `discard of RStore ${this.record.id}`);
    await this.write(offsetBytes, Buffer.alloc(lengthBytes));
  }

  /** RAID-5: recomputes the parity of every row (after an unclean shutdown). */
  async resyncParity(): Promise<void> {
    if (!this.raid5) return;
    await this.raid5.resyncRows(0, this.psegSizeBytes / this.raid5.stripeUnitBytes);
  }

  /** RAID-5: the first row whose parity is not the XOR of its data, if any. */
  async firstInconsistentRow(): Promise<number | undefined> {
    if (!this.raid5) return undefined;
    return this.raid5.firstInconsistentRow(0, this.psegSizeBytes / this.raid5.stripeUnitBytes);
  }

  /** Member drive indexes (for flushing only the drives an RStore touches). */
  get driveIndexes(): number[] {
    return this.record.members.map((member) => member.driveIndex);
  }

  private async readMirror(offsetBytes: number, target: Buffer): Promise<void> {
    const memberCount = this.record.members.length;
    const first = this.nextMirror;
    this.nextMirror = (this.nextMirror + 1) % memberCount;
    let lastError: unknown;
    for (let attempt = 0; attempt < memberCount; attempt += 1) {
      const memberIndex = (first + attempt) % memberCount;
      try {
        await this.memberDrive(memberIndex).read(this.physicalOffset(memberIndex, offsetBytes), target);
        return;
      } catch (error) {
        lastError = error; // try the other mirror
      }
    }
    throw lastError instanceof LunfsError ? lastError : new LunfsError('EIO', `every mirror of RStore ${this.record.id} failed`, { cause: lastError });
  }

  private forEachStripePiece(offsetBytes: number, lengthBytes: number, visit: (memberIndex: number, memberOffsetBytes: number, lengthBytes: number, requestOffsetBytes: number) => void): void {
    const memberCount = this.record.members.length;
    forEachPiece(offsetBytes, lengthBytes, this.stripeUnitBytes, (stripeIndex, offsetInUnit, length, requestOffset) => {
      const memberIndex = stripeIndex % memberCount;
      const memberOffset = Math.floor(stripeIndex / memberCount) * this.stripeUnitBytes + offsetInUnit;
      visit(memberIndex, memberOffset, length, requestOffset);
    });
  }

  /** [member, offset in the member] of a data offset under RAID-0 striping. */
  private stripeLocation(offsetBytes: number): [number, number] {
    const memberCount = this.record.members.length;
    const stripeIndex = Math.floor(offsetBytes / this.stripeUnitBytes);
    return [stripeIndex % memberCount, Math.floor(stripeIndex / memberCount) * this.stripeUnitBytes + (offsetBytes - stripeIndex * this.stripeUnitBytes)];
  }

  private memberDrive(memberIndex: number): Drive {
    return this.drives[this.record.members[memberIndex]!.driveIndex]!.drive;
  }

  private physicalOffset(memberIndex: number, memberOffsetBytes: number): number {
    const member = this.record.members[memberIndex]!;
    const geometry = this.drives[member.driveIndex]!;
    return geometry.psegAreaOffsetBytes + member.psegIndex * geometry.psegSizeBytes + memberOffsetBytes;
  }
}
