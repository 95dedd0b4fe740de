// RAID-0 inside one RStore (seed 004 [0044]): the data space striped over every member in stripe
// units, unit k on member k mod n. No redundancy: a member out of service, a read error or a block
// that fails its checksum is EIO, never other bytes; a read error or a failed write takes the
// member out of service. A write that misses a member's drive is recorded
// (DriveHealth.missedWrite),
// since a RAID-0 drive may come back and then hold older data there.

import { forEachPiece as forEachUnitPiece } from '../block/block-device.js';
import { isChecksumError } from '../drive/checksum-drive.js';
import type { RStoreRecord } from '../meta/pool-metadata.js';
import { LunfsError } from '../util/errors.js';
import type { DriveHealth } from './drive-health.js';
import type { MemberIo } from './member-io.js';
import { emptyScrubReport, type RowScrubReport } from './scrub-report.js';

export class Raid0Stripes {
  private readonly memberCount: number;

  constructor(
    private readonly record: RStoreRecord,
    private readonly stripeUnitBytes: number,
    private readonly io: MemberIo,
    private readonly health: Pick<DriveHealth, 'integrity' | 'missedWrite'>,
  ) {
    this.memberCount = record.members.length;
  }

  /** Reads a data range: one member read when it lies in one stripe unit (the common case). */
  read(offsetBytes: number, target: Buffer): Promise<unknown> {
    const inUnit = offsetBytes % this.stripeUnitBytes;
    if (inUnit + target.length <= this.stripeUnitBytes) {
      const [memberIndex, memberOffset] = this.location(offsetBytes);
      return this.readUnit(memberIndex, memberOffset, target); // the common case
    }
    const pending: Promise<void>[] = [];
    this.forEachPiece(
      offsetBytes,
      target.length,
      (memberIndex, memberOffset, length, requestOffset) => {
        pending.push(
          this.readUnit(
            memberIndex,
            memberOffset,
            target.subarray(requestOffset, requestOffset + length),
          ),
        );
      },
    );
    return Promise.all(pending);
  }

  /** Writes a data range: one member write when it lies in one stripe unit (the common case). */
  write(offsetBytes: number, data: Buffer): Promise<unknown> {
    const inUnit = offsetBytes % this.stripeUnitBytes;
    if (inUnit + data.length <= this.stripeUnitBytes) {
      const [memberIndex, memberOffset] = this.location(offsetBytes);
      return this.writeUnit(memberIndex, memberOffset, data); // the common case
    }
    const pending: Promise<void>[] = [];
    this.forEachPiece(
      offsetBytes,
      data.length,
      (memberIndex, memberOffset, length, requestOffset) => {
        pending.push(
          this.writeUnit(
            memberIndex,
            memberOffset,
            data.subarray(requestOffset, requestOffset + length),
          ),
        );
      },
    );
    return Promise.all(pending);
  }

  async readUnit(memberIndex: number, memberOffset: number, target: Buffer): Promise<void> {
    if (!this.io.readable(memberIndex, memberOffset)) {
      this.health.integrity.unrepairable += 1;
      throw new LunfsError(
        'EIO',
        `RStore ${this.record.id} (RAID-0): drive ${this.record.members[memberIndex]!.driveIndex} is out of service and RAID-0 has no redundancy`,
      );
    }
    try {
      await this.io.read(memberIndex, memberOffset, target);
    } catch (error) {
      if (isChecksumError(error)) this.health.integrity.checksumMismatches += 1;
      else this.io.failed(memberIndex, error);
      this.health.integrity.unrepairable += 1;
      throw new LunfsError(
        'EIO',
        `RStore ${this.record.id} (RAID-0): ${(error as Error).message}; no redundancy to repair from`,
        { cause: error },
      );
    }
  }

  /**
   * RAID-0: a write that does not reach its member, or that completes after the drive left
   * service (its final flush may have come first), is a missed write on that drive: the drive may
   * come back, and then these blocks may hold older data (DriveHealth.missedWrite records it).
   */
  async writeUnit(memberIndex: number, memberOffset: number, data: Buffer): Promise<void> {
    const driveIndex = this.record.members[memberIndex]!.driveIndex;
    if (!this.io.writable(memberIndex)) {
      this.health.missedWrite(driveIndex, this.record.id);
      throw new LunfsError(
        'EIO',
        `RStore ${this.record.id} (RAID-0): drive ${driveIndex} is out of service and RAID-0 has no redundancy`,
      );
    }
    try {
      await this.io.write(memberIndex, memberOffset, data);
    } catch (error) {
      this.io.failed(memberIndex, error);
      this.health.missedWrite(driveIndex, this.record.id);
      throw error;
    }
    if (!this.io.writable(memberIndex)) this.health.missedWrite(driveIndex, this.record.id);
  }

  private forEachPiece(
    offsetBytes: number,
    lengthBytes: number,
    visit: (
      memberIndex: number,
      memberOffsetBytes: number,
      lengthBytes: number,
      requestOffsetBytes: number,
    ) => void,
  ): void {
    const memberCount = this.memberCount;
    forEachUnitPiece(
      offsetBytes,
      lengthBytes,
      this.stripeUnitBytes,
      (stripeIndex, offsetInUnit, length, requestOffset) => {
        const memberIndex = stripeIndex % memberCount;
        const memberOffset =
          Math.floor(stripeIndex / memberCount) * this.stripeUnitBytes + offsetInUnit;
        visit(memberIndex, memberOffset, length, requestOffset);
      },
    );
  }

  /** [member, offset in the member] of a data offset under RAID-0 striping. */
  location(offsetBytes: number): [number, number] {
    const memberCount = this.memberCount;
    const stripeIndex = Math.floor(offsetBytes / this.stripeUnitBytes);
    return [
      stripeIndex % memberCount,
      Math.floor(stripeIndex / memberCount) * this.stripeUnitBytes +
        (offsetBytes - stripeIndex * this.stripeUnitBytes),
    ];
  }

  /**
   * Scrub of one stripe unit: every member's part is read and verified. No redundancy: a block
   * that fails its checksum is unrepairable, unless trustData (resync after an unclean shutdown),
   * which takes the data as it is.
   */
  async scrubUnit(index: number, trustData: boolean): Promise<RowScrubReport> {
    const report = emptyScrubReport(1);
    const offset = index * this.stripeUnitBytes;
    const unit = Buffer.alloc(this.stripeUnitBytes);
    for (let memberIndex = 0; memberIndex < this.memberCount; memberIndex += 1) {
      if (!this.io.readable(memberIndex, offset)) continue;
      try {
        await this.io.read(memberIndex, offset, unit);
      } catch (error) {
        if (trustData && isChecksumError(error)) {
          await this.io.recompute(memberIndex, offset, this.stripeUnitBytes);
          continue;
        }
        if (isChecksumError(error)) this.health.integrity.checksumMismatches += 1;
        else this.io.failed(memberIndex, error);
        report.unrepairable += 1;
        this.health.integrity.unrepairable += 1;
      }
    }
    return report;
  }
}
