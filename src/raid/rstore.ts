// RStore I/O (seed 004 [0044], [0069]): an RStore is an ordered set of PSEGs on distinct drives of
// one redundancy set, with a RAID level. Its RSD (RStoreRecord) lists the members; this class and
// the level's module turn an offset in the RStore's data space into member offsets, which
// RStoreMemberIo turns into drive offsets. RAID-0 stripes the data space over all members in
// stripe units; RAID-1 keeps every member a full copy; RAID-5 keeps one rotating parity unit per
// row of stripe units. This class is the façade: the levels' own paths
// are raid0-stripes.ts, raid1-mirrors.ts and raid5-engine.ts, over the members as MemberIo gives
// them (member-io.ts); it keeps what all levels share (range checks, whole-block merges of partial
// writes, the write intent, flush) and the rebuild and scrub loops.
//
// Members out of service (DriveHealth: failed, or a replacement not yet rebuilt at that offset)
// are never read: RAID-1 reads another mirror, RAID-5 reconstructs from parity, RAID-0 has no
// redundancy and fails with EIO. Writes skip them. A member that returns an I/O error leaves
// service; one that returns data failing its checksum (ChecksumDrive) stays in service and the
// range is rewritten from redundancy (repair).

import type { BlockDevice } from '../block/block-device.js';
import { checkRange } from '../block/block-device.js';
import type { RStoreRecord } from '../meta/pool-metadata.js';
import { assert } from '../util/assert.js';
import type { DriveRecord } from '../meta/pool-metadata.js';
import { ChunkLockManager } from '../util/chunk-locks.js';
import { Mutex } from '../util/mutex.js';
import { DriveHealth } from './drive-health.js';
import { RStoreMemberIo, type DriveGeometry } from './member-io.js';
import { Raid0Stripes } from './raid0-stripes.js';
import { Raid1Mirrors } from './raid1-mirrors.js';
import { Raid5Engine } from './raid5-engine.js';
import type { Raid5Memory } from './raid5-memory.js';
import type { DegradedRowLog, RowLogEntry } from './row-log.js';
import type { WriteIntent } from './write-intent.js';
import { addScrubReport, emptyScrubReport, type RowScrubReport } from './scrub-report.js';
import { blockBytes } from '../util/constants.js';

export function rstoreDataBytes(record: RStoreRecord, psegSizeBytes: number): number {
  if (record.raidLevel === 0) return psegSizeBytes * record.members.length;
  if (record.raidLevel === 5) return psegSizeBytes * (record.members.length - 1);
  return psegSizeBytes;
}

export class RStore implements BlockDevice {
  readonly sizeBytes: number;
  private readonly psegSizeBytes: number;
  private readonly memberIo: RStoreMemberIo;
  /** The level's own paths: exactly one of the three is set. */
  private readonly stripes: Raid0Stripes | undefined;
  private readonly mirrors: Raid1Mirrors | undefined;
  private readonly raid5: Raid5Engine | undefined;
  /**
   * RAID-0/1: stripe-unit locks, taken by writes only while a rebuild or scrub of this RStore runs.
   */
  private readonly unitLocks = new ChunkLockManager();
  private exclusiveCopy = false;
  private readonly exclusiveCopyMutex = new Mutex();
  private settingParity: Promise<void> | undefined;
  /**
   * Partial-block writes (read, merge, write) under way, and the whole-block writes they wait for.
   */
  private mergesUnderWay = 0;
  private readonly blockLocks = new ChunkLockManager();
  private readonly wholeBlockWrites = new Set<Promise<void>>();
  /** Told when a parityUnset RStore has computed its parity (the pool queues rstore-parity-set). */
  onParitySet: ((rstoreId: number) => void) | undefined;
  private readonly writesInFlight = new Set<Promise<void>>();

  constructor(
    readonly record: RStoreRecord,
    drives: ReadonlyArray<DriveGeometry>,
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
    this.memberIo = new RStoreMemberIo(record, drives, health, rowLog);
    if (record.raidLevel === 5) {
      assert(record.members.length >= 3, `RAID-5 RStore ${record.id} needs at least 3 members`);
      this.raid5 = new Raid5Engine(
        record.members.length,
        stripeUnitBytes,
        this.memberIo,
        raid5Memory,
      );
    } else if (record.raidLevel === 1) {
      this.mirrors = new Raid1Mirrors(
        record,
        stripeUnitBytes,
        this.psegSizeBytes,
        this.memberIo,
        health.integrity,
      );
    } else {
      this.stripes = new Raid0Stripes(record, stripeUnitBytes, this.memberIo, health);
    }
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    checkRange(this, offsetBytes, target.length, `read of RStore ${this.record.id}`);
    if (this.mirrors) {
      await this.mirrors.read(offsetBytes, target);
      return;
    }
    if (this.raid5) return this.raid5.read(offsetBytes, target);
    await this.stripes!.read(offsetBytes, target);
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
    // the first write since the RStore was clean: its intent record first
    if (admitted) await admitted;
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
    if (this.mirrors) return this.mirrors.write(offsetBytes, data);
    await this.stripes!.write(offsetBytes, data);
  }

  /**
   * RAID-5: writes back the parities held in memory (Raid5RowCache: held units, pending parity);
   * before a drive flush.
   */
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
        this.memberIo.writable(memberIndex) ? this.memberIo.drive(memberIndex).flush() : undefined,
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
  async rebuildMember(
    memberIndex: number,
    progress: (bytes: number) => void | Promise<void>,
  ): Promise<void> {
    const unitBytes = this.stripeUnitBytes;
    const rows = this.psegSizeBytes / unitBytes;
    if (this.raid5) {
      for (let row = 0; row < rows; row += 1) {
        await this.raid5.rebuildRows(memberIndex, row, row + 1, (done) =>
          this.health.setRebuilt(this.record.id, (done + 1) * unitBytes),
        );
        await progress(unitBytes);
      }
      return;
    }
    assert(this.mirrors !== undefined, 'only RAID-1 and RAID-5 RStores are rebuilt');
    const mirrors = this.mirrors;
    await this.withExclusiveCopy(async () => {
      const unit = Buffer.alloc(unitBytes);
      for (let index = 0; index < rows; index += 1) {
        await this.unitLocks.withChunks([index], async () => {
          await mirrors.read(index * unitBytes, unit, memberIndex);
          await this.memberIo.write(memberIndex, index * unitBytes, unit);
          this.health.setRebuilt(this.record.id, (index + 1) * unitBytes); // under the unit's lock
        });
        await progress(unitBytes);
      }
    });
  }

  /**
   * Scrub: reads every member unit, verifies checksums, repairs what fails from redundancy;
   * RAID-5 parity and RAID-1 mirrors are compared and made consistent again.
   */
  async scrub(
    progress: (bytes: number) => void | Promise<void> = () => {},
    options: { trustData?: boolean } = {},
  ): Promise<RowScrubReport> {
    const unitBytes = this.stripeUnitBytes;
    const rows = this.psegSizeBytes / unitBytes;
    const total = emptyScrubReport();
    const add = (report: RowScrubReport): void => addScrubReport(total, report);
    if (this.raid5) {
      for (let row = 0; row < rows; row += 1) {
        add(await this.raid5.scrubRows(row, row + 1, options));
        await progress(unitBytes * this.record.members.length);
      }
      return total;
    }
    await this.withExclusiveCopy(async () => {
      for (let index = 0; index < rows; index += 1) {
        add(
          await this.unitLocks.withChunks([index], () =>
            this.stripes
              ? this.stripes.scrubUnit(index, options.trustData === true)
              : this.mirrors!.scrubUnit(index, options.trustData === true),
          ),
        );
        await progress(unitBytes * this.record.members.length);
      }
    });
    return total;
  }

  /**
   * RAID-5: replays a degraded-row log record after an unclean shutdown (see
   * Raid5Engine.replayRowLog).
   */
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

  /**
   * Runs task with every RAID-0/1 write taking unit locks; writes already under way finish first.
   */
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
