// RStore I/O (seed 004 [0044], [0069]): an RStore is an ordered set of PSEGs on distinct drives of
// one redundancy set, with a RAID level. Its RSD (RStoreRecord) lists the members; this class
// turns an offset in the RStore's data space into member drive offsets. RAID-0 stripes the data
// space over all members in stripe units; RAID-1 keeps every member a full copy; RAID-5 keeps one
// rotating parity unit per row of stripe units (raid5-engine.ts).
//
// Members out of service (DriveHealth: failed, or a replacement not yet rebuilt at that offset)
// are never read: RAID-1 reads another mirror, RAID-5 reconstructs from parity, RAID-0 has no
// redundancy and fails with EIO. Writes skip them. A member that returns an I/O error leaves
// service; one that returns data failing its checksum (ChecksumDrive) stays in service and the
// range is rewritten from redundancy (repair).

import type { BlockDevice } from '../block/block-device.js';
import { checkRange, forEachPiece } from '../block/block-device.js';
import type { Drive } from '../drive/drive.js';
import type { RStoreRecord } from '../meta/pool-metadata.js';
import { assert } from '../util/assert.js';
import { ChecksumDrive, isChecksumError } from '../drive/checksum-drive.js';
import type { DriveRecord } from '../meta/pool-metadata.js';
import { ChunkLockManager } from '../util/chunk-locks.js';
import { LunfsError } from '../util/errors.js';
import { Mutex } from '../util/mutex.js';
import { DriveHealth } from './drive-health.js';
import { Raid5Engine } from './raid5-engine.js';
import type { MemberIo } from './raid5-members.js';
import type { Raid5Memory } from './raid5-memory.js';
import type { DegradedRowLog, RowLogEntry } from './row-log.js';
import type { WriteIntent } from './write-intent.js';
import type { RowScrubReport } from './scrub-report.js';
import { blockBytes } from '../util/constants.js';

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
  private readonly raid5: Raid5Engine | undefined;
  private readonly memberIo: MemberIo;
  /** RAID-0/1: stripe-unit locks, taken by writes only while a rebuild or scrub of this RStore runs. */
  private readonly unitLocks = new ChunkLockManager();
  private exclusiveCopy = false;
  private readonly exclusiveCopyMutex = new Mutex();
  private settingParity: Promise<void> | undefined;
  /** Partial-block writes (read, merge, write) under way, and the whole-block writes they wait for. */
  private mergesUnderWay = 0;
  private readonly blockLocks = new ChunkLockManager();
  private readonly wholeBlockWrites = new Set<Promise<void>>();
  /** Told when a parityUnset RStore has computed its parity (the pool queues rstore-parity-set). */
  onParitySet: ((rstoreId: number) => void) | undefined;
  private readonly writesInFlight = new Set<Promise<void>>();

  constructor(
    readonly record: RStoreRecord,
    private readonly drives: ReadonlyArray<DriveGeometry>,
    private readonly stripeUnitBytes: number,
    private readonly health: DriveHealth = standaloneHealth(drives.length),
    /** The pool's write-intent record (absent outside a pool). */
    private readonly intent?: WriteIntent,
    /** The pool's degraded-row log (absent outside a pool). */
    rowLog?: DegradedRowLog,
    /** The pool's RAID-5 buffers and row cache (absent outside a pool: the layout has its own). */
    raid5Memory?: Raid5Memory,
  ) {
    assert(record.members.length >= 1, `RStore ${record.id} has no members`);
    this.psegSizeBytes = drives[record.members[0]!.driveIndex]!.psegSizeBytes;
    assert(this.psegSizeBytes % stripeUnitBytes === 0, 'stripe unit must divide the PSEG size');
    this.sizeBytes = rstoreDataBytes(record, this.psegSizeBytes);
    const driveIndexOf = (memberIndex: number): number => record.members[memberIndex]!.driveIndex;
    this.memberIo = {
      read: (memberIndex, memberOffsetBytes, target) =>
        this.memberDrive(memberIndex).read(
          this.physicalOffset(memberIndex, memberOffsetBytes),
          target,
        ),
      write: (memberIndex, memberOffsetBytes, data) =>
        this.memberDrive(memberIndex).write(
          this.physicalOffset(memberIndex, memberOffsetBytes),
          data,
        ),
      readable: (memberIndex, memberOffsetBytes, lengthBytes) =>
        health.readable(driveIndexOf(memberIndex), record.id, memberOffsetBytes, lengthBytes),
      writable: (memberIndex) => health.writable(driveIndexOf(memberIndex)),
      rebuilding: (memberIndex) => health.state(driveIndexOf(memberIndex)) === 'rebuilding',
      failed: (memberIndex, error) => health.fail(driveIndexOf(memberIndex), error),
      badBlocks: async (memberIndex, memberOffsetBytes, lengthBytes) => {
        const drive = this.memberDrive(memberIndex);
        if (!(drive instanceof ChecksumDrive)) return [];
        const start = this.physicalOffset(memberIndex, 0);
        return (
          await drive.verify(this.physicalOffset(memberIndex, memberOffsetBytes), lengthBytes)
        ).map((offset) => offset - start);
      },
      recompute: async (memberIndex, memberOffsetBytes, lengthBytes) => {
        const drive = this.memberDrive(memberIndex);
        if (drive instanceof ChecksumDrive)
          await drive.recompute(this.physicalOffset(memberIndex, memberOffsetBytes), lengthBytes);
      },
      integrity: health.integrity,
      name: `RStore ${record.id}`,
      rowLog: rowLog && {
        reserve: (dataBytes) => rowLog.reserve(dataBytes),
        tryReserve: (dataBytes) => rowLog.tryReserve(dataBytes),
        append: (row, memberIndex, offsetInUnit, data) =>
          rowLog.append({ rstoreId: record.id, row, memberIndex, offsetInUnit, data }),
        done: (seq) => rowLog.done(seq),
      },
    };
    if (record.raidLevel === 5) {
      assert(record.members.length >= 3, `RAID-5 RStore ${record.id} needs at least 3 members`);
      this.raid5 = new Raid5Engine(
        record.members.length,
        stripeUnitBytes,
        this.memberIo,
        raid5Memory,
      );
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
      return this.readStriped(memberIndex, memberOffset, target); // the common case
    }
    const pending: Promise<void>[] = [];
    this.forEachStripePiece(
      offsetBytes,
      target.length,
      (memberIndex, memberOffset, length, requestOffset) => {
        pending.push(
          this.readStriped(
            memberIndex,
            memberOffset,
            target.subarray(requestOffset, requestOffset + length),
          ),
        );
      },
    );
    await Promise.all(pending);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    checkRange(this, offsetBytes, data.length, `write of RStore ${this.record.id}`);
    if (data.length === 0) return;
    const start = Math.floor(offsetBytes / repairBlockBytes) * repairBlockBytes;
    const end = Math.ceil((offsetBytes + data.length) / repairBlockBytes) * repairBlockBytes;
    const blocks = (): number[] =>
      [...Array((end - start) / repairBlockBytes).keys()].map(
        (index) => start / repairBlockBytes + index,
      );
    if (start !== offsetBytes || end !== offsetBytes + data.length) {
      // A write of part of a 4 KiB block (a snapshot write at a sector offset): the block is read
      // here, verified and, if it fails its checksum, repaired from redundancy, then written whole.
      // Merged below, a bad block would fail the member's write and take the drive out of service.
      // The blocks stay locked from the read to the write; whole-block writes take the same locks
      // while any merge is under way, and those that started before it finish first.
      this.mergesUnderWay += 1;
      try {
        await Promise.allSettled([...this.wholeBlockWrites]);
        await this.blockLocks.withChunks(blocks(), async () => {
          const whole = Buffer.allocUnsafe(end - start);
          await this.read(start, whole);
          data.copy(whole, offsetBytes - start);
          await this.writeBlocks(start, whole);
        });
      } finally {
        this.mergesUnderWay -= 1;
      }
      return;
    }
    if (this.mergesUnderWay > 0)
      return this.blockLocks.withChunks(blocks(), () => this.writeBlocks(offsetBytes, data));
    await awaitTracked(this.wholeBlockWrites, this.writeBlocks(offsetBytes, data));
  }

  /** A write of whole 4 KiB blocks. */
  private async writeBlocks(offsetBytes: number, data: Buffer): Promise<void> {
    if (this.record.parityUnset) await this.setParity();
    const admitted = this.intent?.beforeWrite(this.record.id);
    if (admitted) await admitted; // the first write since the RStore was clean: its intent record first
    try {
      await this.writeAdmitted(offsetBytes, data);
    } finally {
      this.intent?.afterWrite(this.record.id);
    }
  }

  /**
   * RAID-5 on PSEGs that held old bytes: before the first write, every row's parity is made the
   * XOR of its data (otherwise a read-modify-write would carry the old bytes' disagreement into
   * the parity, and a degraded read would return wrong data); then the record says so.
   */
  private setParity(): Promise<void> {
    this.settingParity ??= (async () => {
      await this.resyncParity();
      await this.flush();
      this.onParitySet?.(this.record.id);
      delete this.record.parityUnset;
    })().finally(() => {
      this.settingParity = undefined;
    });
    return this.settingParity;
  }

  private async writeAdmitted(offsetBytes: number, data: Buffer): Promise<void> {
    if (this.raid5) return this.raid5.write(offsetBytes, data);
    if (this.exclusiveCopy) {
      // A rebuild or scrub copies units of this RStore: writes take the units' locks meanwhile.
      const first = Math.floor(offsetBytes / this.stripeUnitBytes);
      const last = Math.floor((offsetBytes + Math.max(data.length, 1) - 1) / this.stripeUnitBytes);
      const units = [...Array(last - first + 1).keys()].map((index) => first + index);
      return this.unitLocks.withChunks(units, () => this.writeUnlocked(offsetBytes, data));
    }
    await awaitTracked(this.writesInFlight, this.writeUnlocked(offsetBytes, data));
  }

  private async writeUnlocked(offsetBytes: number, data: Buffer): Promise<void> {
    if (this.record.raidLevel === 1) return this.writeMirrors(offsetBytes, data);
    const inUnit = offsetBytes % this.stripeUnitBytes;
    if (inUnit + data.length <= this.stripeUnitBytes) {
      const [memberIndex, memberOffset] = this.stripeLocation(offsetBytes);
      return this.writeStriped(memberIndex, memberOffset, data); // the common case
    }
    const pending: Promise<void>[] = [];
    this.forEachStripePiece(
      offsetBytes,
      data.length,
      (memberIndex, memberOffset, length, requestOffset) => {
        pending.push(
          this.writeStriped(
            memberIndex,
            memberOffset,
            data.subarray(requestOffset, requestOffset + length),
          ),
        );
      },
    );
    await Promise.all(pending);
  }

  /** RAID-5: writes back the parities held in memory (see Raid5Engine's known rows); before a drive flush. */
  async writeBackParity(): Promise<void> {
    if (this.raid5?.hasPendingParity) await this.raid5.writeBackKnownRows();
  }

  /** Forgets what the RStore holds in memory without writing it (the session was abandoned). */
  discardMemory(): void {
    this.raid5?.discardKnownRows();
  }

  async flush(): Promise<void> {
    await this.writeBackParity();
    await Promise.all(
      this.record.members.map((_, memberIndex) =>
        this.memberIo.writable(memberIndex) ? this.memberDrive(memberIndex).flush() : undefined,
      ),
    );
  }

  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, `discard of RStore ${this.record.id}`);
    await this.write(offsetBytes, Buffer.alloc(lengthBytes));
  }

  /** Member bytes of each member (one PSEG). */
  get memberBytes(): number {
    return this.psegSizeBytes;
  }

  /** The index among the members of the member on driveIndex, if any. */
  memberIndexOn(driveIndex: number): number | undefined {
    const index = this.record.members.findIndex((member) => member.driveIndex === driveIndex);
    return index < 0 ? undefined : index;
  }

  /** Whether a member is out of service for good (failed), so the RStore runs without it. */
  get degraded(): boolean {
    return this.record.members.some((_, memberIndex) => !this.memberIo.writable(memberIndex));
  }

  /** Whether the RStore has lost data: more members out of service than its redundancy covers. */
  get lost(): boolean {
    const out = this.record.members.filter(
      (_, memberIndex) => !this.memberIo.writable(memberIndex),
    ).length;
    if (this.record.raidLevel === 0) return out > 0;
    if (this.record.raidLevel === 1) return out === this.record.members.length;
    return out > 1;
  }

  /**
   * Rebuilds the member on a replacement drive, unit by unit (RAID-1: copied from a readable
   * mirror; RAID-5: reconstructed from the row), raising the health watermark as it goes so that
   * reads of the rebuilt part use the new member. progress(bytes) is told each unit's size.
   */
  async rebuildMember(memberIndex: number, progress: (bytes: number) => void): Promise<void> {
    const unitBytes = this.stripeUnitBytes;
    const rows = this.psegSizeBytes / unitBytes;
    if (this.raid5) {
      for (let row = 0; row < rows; row += 1) {
        await this.raid5.rebuildRows(memberIndex, row, row + 1, (done) =>
          this.health.setRebuilt(this.record.id, (done + 1) * unitBytes),
        );
        progress(unitBytes);
      }
      return;
    }
    assert(this.record.raidLevel === 1, 'only RAID-1 and RAID-5 RStores are rebuilt');
    await this.withExclusiveCopy(async () => {
      const unit = Buffer.alloc(unitBytes);
      for (let index = 0; index < rows; index += 1) {
        await this.unitLocks.withChunks([index], async () => {
          await this.readMirror(index * unitBytes, unit, memberIndex);
          await this.memberIo.write(memberIndex, index * unitBytes, unit);
          this.health.setRebuilt(this.record.id, (index + 1) * unitBytes); // under the unit's lock
        });
        progress(unitBytes);
      }
    });
  }

  /**
   * Scrub: reads every member unit, verifies checksums, repairs what fails from redundancy;
   * RAID-5 parity and RAID-1 mirrors are compared and made consistent again.
   */
  async scrub(
    progress: (bytes: number) => void = () => {},
    options: { trustData?: boolean } = {},
  ): Promise<RowScrubReport> {
    const unitBytes = this.stripeUnitBytes;
    const rows = this.psegSizeBytes / unitBytes;
    const total: RowScrubReport = {
      rows: 0,
      degradedRows: 0,
      checksumRepairs: 0,
      parityRepairs: 0,
      unrepairable: 0,
    };
    const add = (report: RowScrubReport): void => {
      total.rows += report.rows;
      total.degradedRows += report.degradedRows;
      total.checksumRepairs += report.checksumRepairs;
      total.parityRepairs += report.parityRepairs;
      total.unrepairable += report.unrepairable;
    };
    if (this.raid5) {
      for (let row = 0; row < rows; row += 1) {
        add(await this.raid5.scrubRows(row, row + 1, options));
        progress(unitBytes * this.record.members.length);
      }
      return total;
    }
    await this.withExclusiveCopy(async () => {
      for (let index = 0; index < rows; index += 1) {
        add(
          await this.unitLocks.withChunks([index], () =>
            this.scrubUnit(index, options.trustData === true),
          ),
        );
        progress(unitBytes * this.record.members.length);
      }
    });
    return total;
  }

  /** RAID-5: replays a degraded-row log record after an unclean shutdown (see Raid5Engine.replayRowLog). */
  replayRowLog(entry: RowLogEntry): Promise<boolean> {
    assert(
      this.raid5 !== undefined,
      `a row log record for RStore ${this.record.id}, which is not RAID-5`,
    );
    return this.raid5.replayRowLog(entry.row, entry.memberIndex, entry.offsetInUnit, entry.data);
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

  /** Runs task with every RAID-0/1 write taking unit locks; writes already under way finish first. */
  private withExclusiveCopy(task: () => Promise<void>): Promise<void> {
    // A scrub and a rebuild of the same RStore take turns.
    return this.exclusiveCopyMutex.run(async () => {
      this.exclusiveCopy = true;
      try {
        await Promise.allSettled([...this.writesInFlight]);
        await task();
      } finally {
        this.exclusiveCopy = false;
      }
    });
  }

  /**
   * Scrub of one stripe unit (RAID-0/1). trustData (resync after an unclean shutdown): a mirror
   * that fails its checksum is rewritten from one that verifies; with none that verifies (or on
   * RAID-0), the data is taken as it is; mirrors that differ are made equal; nothing is counted.
   */
  private async scrubUnit(index: number, trustData = false): Promise<RowScrubReport> {
    const report: RowScrubReport = {
      rows: 1,
      degradedRows: 0,
      checksumRepairs: 0,
      parityRepairs: 0,
      unrepairable: 0,
    };
    const offset = index * this.stripeUnitBytes;
    if (this.record.raidLevel === 0) {
      const unit = Buffer.alloc(this.stripeUnitBytes);
      for (let memberIndex = 0; memberIndex < this.record.members.length; memberIndex += 1) {
        if (!this.memberIo.readable(memberIndex, offset)) continue;
        try {
          await this.memberIo.read(memberIndex, offset, unit);
        } catch (error) {
          if (trustData && isChecksumError(error)) {
            await this.memberIo.recompute(memberIndex, offset, this.stripeUnitBytes);
            continue;
          }
          if (isChecksumError(error)) this.health.integrity.checksumMismatches += 1;
          else this.memberIo.failed(memberIndex, error);
          report.unrepairable += 1;
          this.health.integrity.unrepairable += 1;
        }
      }
      return report;
    }
    const copies: Array<Buffer | undefined> = [];
    const bad: number[] = [];
    for (let memberIndex = 0; memberIndex < this.record.members.length; memberIndex += 1) {
      if (!this.memberIo.readable(memberIndex, offset)) {
        copies.push(undefined);
        continue;
      }
      const unit = Buffer.alloc(this.stripeUnitBytes);
      try {
        await this.memberIo.read(memberIndex, offset, unit);
        copies.push(unit);
      } catch (error) {
        copies.push(undefined);
        if (isChecksumError(error)) {
          this.health.integrity.checksumMismatches += 1;
          bad.push(memberIndex);
        } else {
          this.memberIo.failed(memberIndex, error);
        }
      }
    }
    if (trustData && bad.length > 0 && !copies.some((copy) => copy !== undefined)) {
      // No mirror verifies (torn on both): take the first as it is.
      const first = bad.shift()!;
      await this.memberIo.recompute(first, offset, this.stripeUnitBytes);
      const unit = Buffer.alloc(this.stripeUnitBytes);
      await this.memberIo.read(first, offset, unit);
      copies[first] = unit;
    }
    const good = copies.find((copy) => copy !== undefined);
    if (!good) {
      if (bad.length > 0) {
        report.unrepairable += 1;
        this.health.integrity.unrepairable += 1;
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
          this.health.integrity.parityRepairs += 1;
        }
      }
    }
    return report;
  }

  private async readStriped(
    memberIndex: number,
    memberOffset: number,
    target: Buffer,
  ): Promise<void> {
    if (!this.memberIo.readable(memberIndex, memberOffset)) {
      this.health.integrity.unrepairable += 1;
      throw new LunfsError(
        'EIO',
        `RStore ${this.record.id} (RAID-0): drive ${this.record.members[memberIndex]!.driveIndex} is out of service and RAID-0 has no redundancy`,
      );
    }
    try {
      await this.memberIo.read(memberIndex, memberOffset, target);
    } catch (error) {
      if (isChecksumError(error)) this.health.integrity.checksumMismatches += 1;
      else this.memberIo.failed(memberIndex, error);
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
  private async writeStriped(
    memberIndex: number,
    memberOffset: number,
    data: Buffer,
  ): Promise<void> {
    const driveIndex = this.record.members[memberIndex]!.driveIndex;
    if (!this.memberIo.writable(memberIndex)) {
      this.health.missedWrite(driveIndex, this.record.id);
      throw new LunfsError(
        'EIO',
        `RStore ${this.record.id} (RAID-0): drive ${driveIndex} is out of service and RAID-0 has no redundancy`,
      );
    }
    try {
      await this.memberIo.write(memberIndex, memberOffset, data);
    } catch (error) {
      this.memberIo.failed(memberIndex, error);
      this.health.missedWrite(driveIndex, this.record.id);
      throw error;
    }
    if (!this.memberIo.writable(memberIndex)) this.health.missedWrite(driveIndex, this.record.id);
  }

  private async writeMirrors(offsetBytes: number, data: Buffer): Promise<void> {
    const targets = this.record.members
      .map((_, memberIndex) => memberIndex)
      .filter((memberIndex) => this.memberIo.writable(memberIndex));
    const results = await Promise.allSettled(
      targets.map((memberIndex) => this.memberIo.write(memberIndex, offsetBytes, data)),
    );
    let written = 0;
    results.forEach((result, index) => {
      if (result.status === 'fulfilled') written += 1;
      else this.memberIo.failed(targets[index]!, result.reason);
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
  private async readMirror(
    offsetBytes: number,
    target: Buffer,
    excludeMember?: number,
  ): Promise<void> {
    const memberCount = this.record.members.length;
    const first = this.nextMirror;
    this.nextMirror = (this.nextMirror + 1) % memberCount;
    let lastError: unknown;
    const corrupt: number[] = [];
    for (let attempt = 0; attempt < memberCount; attempt += 1) {
      const memberIndex = (first + attempt) % memberCount;
      if (
        memberIndex === excludeMember ||
        !this.memberIo.readable(memberIndex, offsetBytes, target.length)
      )
        continue;
      try {
        await this.memberIo.read(memberIndex, offsetBytes, target);
      } catch (error) {
        lastError = error; // try the other mirror
        if (isChecksumError(error)) {
          this.health.integrity.checksumMismatches += 1;
          corrupt.push(memberIndex);
        } else {
          this.memberIo.failed(memberIndex, error);
        }
        continue;
      }
      if (corrupt.length > 0) await this.repairMirrors(corrupt, memberIndex, offsetBytes, target);
      return;
    }
    this.health.integrity.unrepairable += 1;
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
        await this.memberIo.read(good, start, whole);
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
      await this.memberIo.write(memberIndex, memberOffset, data);
      this.health.integrity.repairs += 1;
    } catch (error) {
      this.memberIo.failed(memberIndex, error);
    }
  }

  private forEachStripePiece(
    offsetBytes: number,
    lengthBytes: number,
    visit: (
      memberIndex: number,
      memberOffsetBytes: number,
      lengthBytes: number,
      requestOffsetBytes: number,
    ) => void,
  ): void {
    const memberCount = this.record.members.length;
    forEachPiece(
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
  private stripeLocation(offsetBytes: number): [number, number] {
    const memberCount = this.record.members.length;
    const stripeIndex = Math.floor(offsetBytes / this.stripeUnitBytes);
    return [
      stripeIndex % memberCount,
      Math.floor(stripeIndex / memberCount) * this.stripeUnitBytes +
        (offsetBytes - stripeIndex * this.stripeUnitBytes),
    ];
  }

  private memberDrive(memberIndex: number): Drive {
    return this.drives[this.record.members[memberIndex]!.driveIndex]!.drive;
  }

  private physicalOffset(memberIndex: number, memberOffsetBytes: number): number {
    const member = this.record.members[memberIndex]!;
    const geometry = this.drives[member.driveIndex]!;
    return (
      geometry.psegAreaOffsetBytes + member.psegIndex * geometry.psegSizeBytes + memberOffsetBytes
    );
  }
}

/** What one data checksum covers (ChecksumDrive): repairs are made in whole blocks of this size. */
const repairBlockBytes = blockBytes;

/** Health for an RStore outside a pool (tests): every drive online until it fails. */
function standaloneHealth(driveCount: number): DriveHealth {
  const records = [...Array(driveCount).keys()].map((index) => ({ index }) as DriveRecord);
  return new DriveHealth(records, (driveIndex, reason) => {
    records[driveIndex]!.state = 'failed';
    records[driveIndex]!.failedReason = reason;
  });
}

/** Awaits pending while it sits in inFlight, for those who wait for the writes under way. */
async function awaitTracked(inFlight: Set<Promise<void>>, pending: Promise<void>): Promise<void> {
  inFlight.add(pending);
  try {
    await pending;
  } finally {
    inFlight.delete(pending);
  }
}
