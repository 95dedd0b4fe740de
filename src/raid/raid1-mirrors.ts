// RAID-1 inside one RStore (seed 004 [0044]): every member is a full copy of the data. Writes go
// to every mirror in service (EIO only when none took the write); reads go to the mirrors in turn,
// spreading the load, and try the next on error. A mirror whose data fails its checksum stays in
// service and is rewritten from one that verifies (repair, in whole 4 KiB blocks); one that
// returns an I/O error leaves service.

import { isChecksumError } from '../drive/checksum-drive.js';
import type { RStoreRecord } from '../meta/pool-metadata.js';
import { blockBytes } from '../util/constants.js';
import { LunfsError } from '../util/errors.js';
import type { IntegrityCounters } from './drive-health.js';
import type { MemberIo } from './member-io.js';
import { emptyScrubReport, type RowScrubReport } from './scrub-report.js';

/** What one data checksum covers (ChecksumDrive): repairs are made in whole blocks of this size. */
const repairBlockBytes = blockBytes;

export class Raid1Mirrors {
  private readonly memberCount: number;
  /** The mirror the next read tries first. */
  private nextMirror = 0;

  constructor(
    private readonly record: RStoreRecord,
    private readonly stripeUnitBytes: number,
    private readonly psegSizeBytes: number,
    private readonly io: MemberIo,
    private readonly integrity: IntegrityCounters,
  ) {
    this.memberCount = record.members.length;
  }

  /** Writes every mirror in service; EIO when none took the write. */
  async write(offsetBytes: number, data: Buffer): Promise<void> {
    const targets = this.record.members
      .map((_, memberIndex) => memberIndex)
      .filter((memberIndex) => this.io.writable(memberIndex));
    const results = await Promise.allSettled(
      targets.map((memberIndex) => this.io.write(memberIndex, offsetBytes, data)),
    );
    let written = 0;
    results.forEach((result, index) => {
      if (result.status === 'fulfilled') written += 1;
      else this.io.failed(targets[index]!, result.reason);
    });
    if (written === 0) {
      const reason = results.find((result) => result.status === 'rejected') as
        PromiseRejectedResult | undefined;
      throw new LunfsError(
        'EIO',
        `every mirror of RStore ${this.record.id} failed to write${reason ? `: ${(reason.reason as Error).message}` : ' (none in service)'}`,
        { cause: reason?.reason },
      );
    }
  }

  /**
   * Reads from the mirrors in turn (spreading reads), skipping those out of service. A mirror
   * whose data fails its checksum is rewritten from the one that verifies.
   */
  async read(offsetBytes: number, target: Buffer, excludeMember?: number): Promise<void> {
    const memberCount = this.memberCount;
    const first = this.nextMirror;
    this.nextMirror = (this.nextMirror + 1) % memberCount;
    let lastError: unknown;
    const corrupt: number[] = [];
    for (let attempt = 0; attempt < memberCount; attempt += 1) {
      const memberIndex = (first + attempt) % memberCount;
      if (
        memberIndex === excludeMember ||
        !this.io.readable(memberIndex, offsetBytes, target.length)
      )
        continue;
      try {
        await this.io.read(memberIndex, offsetBytes, target);
      } catch (error) {
        lastError = error; // try the other mirror
        if (isChecksumError(error)) {
          this.integrity.checksumMismatches += 1;
          corrupt.push(memberIndex);
        } else {
          this.io.failed(memberIndex, error);
        }
        continue;
      }
      if (corrupt.length > 0) await this.repairMirrors(corrupt, memberIndex, offsetBytes, target);
      return;
    }
    this.integrity.unrepairable += 1;
    if (lastError === undefined)
      throw new LunfsError('EIO', `RStore ${this.record.id}: no mirror in service`);
    throw new LunfsError(
      'EIO',
      `every mirror of RStore ${this.record.id} failed: ${(lastError as Error).message}`,
      { cause: lastError },
    );
  }

  /**
   * Rewrites the mirrors whose data failed its checksum from the good one. A checksum covers a
   * whole 4 KiB block, so a read that covered part of one repairs the whole block (read again
   * from the good mirror): a partial write over a bad block could not be checked.
   */
  private async repairMirrors(
    corrupt: number[],
    good: number,
    offsetBytes: number,
    data: Buffer,
  ): Promise<void> {
    const start = Math.floor(offsetBytes / repairBlockBytes) * repairBlockBytes;
    const end = Math.min(
      this.psegSizeBytes,
      Math.ceil((offsetBytes + data.length) / repairBlockBytes) * repairBlockBytes,
    );
    let whole = data;
    if (start !== offsetBytes || end !== offsetBytes + data.length) {
      whole = Buffer.allocUnsafe(end - start);
      try {
        await this.io.read(good, start, whole);
      } catch {
        return; // the good mirror fails on the rest of the block: leave the repair to scrub
      }
    }
    for (const bad of corrupt) await this.repairMember(bad, start, whole);
  }

  private async repairMember(
    memberIndex: number,
    memberOffset: number,
    data: Buffer,
  ): Promise<void> {
    try {
      await this.io.write(memberIndex, memberOffset, data);
      this.integrity.repairs += 1;
    } catch (error) {
      this.io.failed(memberIndex, error);
    }
  }

  /**
   * Scrub of one stripe unit: every mirror is read and verified, one that fails its checksum is
   * rewritten from one that verifies, mirrors that differ are made equal. trustData (resync after
   * an unclean shutdown): with no mirror that verifies, the first is taken as it is; nothing is
   * counted.
   */
  async scrubUnit(index: number, trustData: boolean): Promise<RowScrubReport> {
    const report = emptyScrubReport(1);
    const offset = index * this.stripeUnitBytes;
    const copies: Array<Buffer | undefined> = [];
    const bad: number[] = [];
    for (let memberIndex = 0; memberIndex < this.memberCount; memberIndex += 1) {
      if (!this.io.readable(memberIndex, offset)) {
        copies.push(undefined);
        continue;
      }
      const unit = Buffer.alloc(this.stripeUnitBytes);
      try {
        await this.io.read(memberIndex, offset, unit);
        copies.push(unit);
      } catch (error) {
        copies.push(undefined);
        if (isChecksumError(error)) {
          this.integrity.checksumMismatches += 1;
          bad.push(memberIndex);
        } else {
          this.io.failed(memberIndex, error);
        }
      }
    }
    if (trustData && bad.length > 0 && !copies.some((copy) => copy !== undefined)) {
      // No mirror verifies (torn on both): take the first as it is.
      const first = bad.shift()!;
      await this.io.recompute(first, offset, this.stripeUnitBytes);
      const unit = Buffer.alloc(this.stripeUnitBytes);
      await this.io.read(first, offset, unit);
      copies[first] = unit;
    }
    const good = copies.find((copy) => copy !== undefined);
    if (!good) {
      if (bad.length > 0) {
        report.unrepairable += 1;
        this.integrity.unrepairable += 1;
      }
      return report;
    }
    for (const memberIndex of bad) {
      await this.repairMember(memberIndex, offset, good);
      if (!trustData) report.checksumRepairs += 1;
    }
    // Mirrors that differ although both verify (a crash between the two writes): one wins.
    for (let memberIndex = 0; memberIndex < copies.length; memberIndex += 1) {
      const copy = copies[memberIndex];
      if (copy && copy !== good && !copy.equals(good)) {
        await this.repairMember(memberIndex, offset, good);
        if (!trustData) {
          report.parityRepairs += 1;
          this.integrity.parityRepairs += 1;
        }
      }
    }
    return report;
  }
}
