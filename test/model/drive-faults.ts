// Drive faults for the seeded model test (issue 4): drive failure, replacement and rebuild, bit
// flips at rest, and scrub, on the RAID-1 and RAID-5 runs (RAID-0 has no redundancy and gets none
// of them). The model (model.test.ts) goes on checking every read against LunModel and the fsync
// contract across power cuts; this file injects the faults, keeps track of them, and checks what
// the pool says about its drives against what was done to them:
//
// - at most one drive is out at a time (failed, or a replacement not yet rebuilt): RAID-5 over
//   three drives and RAID-1 pairs survive one;
// - bit flips go to ONE drive at a time, only while every drive is online, and only into 4 KiB
//   blocks of RStore members whose checksum is known (a block never written has no checksum: a
//   flip there is undetectable by design, so it is not injected); while a drive has flips
//   outstanding, drive-fail fails that drive (never another: that would be a double fault); a
//   scrub with every drive online repairs them all (each flipped block verifies afterwards);
// - every drive the model did not fail stays online in pool.health; integrity.unrepairable stays
//   0; a scrub finds nothing unrepairable (and, RAID-5, no row with wrong parity); a rebuild ends
//   'done' with the drive online; status() shows the pool degraded / rebuilding and the drive
//   failed / rebuilding; after a restart or power cut a failed drive opens failed and a drive
//   being rebuilt opens 'rebuilding' with its rebuild resumed by controller.drives.start();
// - a failed drive is given to Pool.open as a MissingDrive (the operator pulled it).
//
// Engine bugs found by these faults are kept out of the default runs by the switches of
// faultOptions below (each names the bug); set one to 1 to replay it.

import type { Drive } from '../../src/drive/drive.js';
import { ChecksumDrive } from '../../src/drive/checksum-drive.js';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { MissingDrive } from '../../src/drive/missing-drive.js';
import type { RaidLevel, RStoreRecord } from '../../src/meta/pool-metadata.js';
import type { SeededRandom } from '../../src/util/clock.js';
import type { Controller } from '../../src/volume/controller.js';
import type { Pool } from '../../src/pool/pool.js';
import type { JobStatus } from '../../src/volume/background-jobs.js';
import { SessionDrive } from '../support/session-drive.js';

/**
 * Switches (environment variables) for faults the engine mishandled. Those whose bug is fixed are
 * on by default (=0 leaves the fault out); those still open are off by default (=1 replays them):
 * flipsAcrossCrash (a double fault the write intent cannot resolve).
 */
export const faultOptions = {
  /**
   * LUNFS_MODEL_DEGRADED_CRASH, RAID-5: power cuts with writes in flight or unflushed while a
   * drive is out. The write hole: a torn data/parity pair of a degraded row made the missing
   * member's data, reconstructed from them, wrong, though it was flushed long before (seeds
   * 1902046275, 1902046276). Fixed by the degraded-row log (src/raid/row-log.ts); on by default.
   * The pool must know the drive is out before the power cut (a commit finds it, see beforeCrash):
   * a drive found missing only after an unclean shutdown is refused (refuseIfDirtyDegraded, pool/,
   * tested in redundancy.test.ts). =0: with a drive out, everything is flushed first and the power
   * cut comes while idle.
   */
  degradedCrash: process.env['LUNFS_MODEL_DEGRADED_CRASH'] !== '0',
  /**
   * LUNFS_MODEL_IO_DURING_REBUILD: the rebuild is left running alongside the next steps (waited
   * for within 20 steps), sometimes with a scrub. It found: a RAID-1 read that starts below the
   * rebuild watermark and ends above it was served whole from the replacement, whose part above
   * the watermark was not rebuilt yet (zeros); a RAID-5 rebuild raised its watermark only after it
   * had released the row's lock, so a write queued on that row ran in between, took the row for
   * degraded and skipped the replacement's unit (both fixed in ee6addf); a RAID-5 sector holding a
   * value never written there after a power cut (seed 1821454841, fixed in 0ba360f: resync never
   * rebuilds data from parity). On by default. =0: everything is flushed before a replacement (no
   * destage in the background), the rebuild is waited for at once or a power cut comes during it,
   * and a rebuild resumed at open is waited for before anything reads.
   */
  ioDuringRebuild: process.env['LUNFS_MODEL_IO_DURING_REBUILD'] !== '0',
  /**
   * LUNFS_MODEL_SCRUB_DURING_REBUILD (with the one above), RAID-1: a scrub while a rebuild runs.
   * Both take the RStore's exclusive copy mode and the second trips the assertion 'two rebuilds or
   * scrubs at once' (the scrub job fails). Fixed (ee6addf: they take turns); on by default. =0: a
   * RAID-1 scrub waits for the rebuild.
   */
  scrubDuringRebuild: process.env['LUNFS_MODEL_SCRUB_DURING_REBUILD'] !== '0',
  /**
   * LUNFS_MODEL_STRICT_FLIPS=1: a drive the pool takes out of service over a checksum mismatch
   * fails the test. Repairing a bad block after a read that covered only part of it writes that
   * part back; the write's read-modify-write of the bad block fails its checksum, and the repair
   * then fails the whole drive. Fixed (ee6addf: repairs rewrite whole 4 KiB blocks); on by
   * default. =0: the model takes it as the failure of the drive with the bit flips and goes on.
   */
  strictFlips: process.env['LUNFS_MODEL_STRICT_FLIPS'] !== '0',
  /**
   * LUNFS_MODEL_FLIPS_ACROSS_CRASH=1: bit flips stay outstanding through power cuts. The resync of
   * the RStores whose write intent was set recomputes their checksums from the data as it is,
   * before redundancy is consulted: every flip there becomes good data (RAID-1 may copy the
   * flipped mirror over the good one, RAID-5 recomputes parity from it). RAID-1 now rewrites a
   * mirror that fails its checksum from one that verifies; RAID-5 still takes every member's data
   * as it is (rebuilding a block from parity after a crash can meet a parity older than another
   * member's data: bytes never written), so a flip in a dirty RAID-5 RStore is kept. Off by
   * default: a scrub runs first.
   */
  flipsAcrossCrash: process.env['LUNFS_MODEL_FLIPS_ACROSS_CRASH'] === '1',
  /**
   * LUNFS_MODEL_FAILED_DRIVE_PRESENT=1: the failed drive itself (every read EIO) is given to
   * Pool.open. Pool.open reads every drive's header and fails with that EIO, so a pool with a
   * dead but present drive cannot be opened. Fixed (ee6addf: it opens as missing); on by
   * default. =0: a MissingDrive stands in for it.
   */
  failedDrivePresent: process.env['LUNFS_MODEL_FAILED_DRIVE_PRESENT'] !== '0',
  /**
   * LUNFS_MODEL_STRICT_SPACE: free + mapped must equal the capacity in RAID-1 too. RStores made
   * while a drive was out took both PSEGs on the drives in service, which stranded the out drive's
   * free PSEGs without partners for good (after the rebuild as well): capacity that could never be
   * allocated (seeds 1446757487, 1446757488). Fixed: PsegAllocator.mirrorPair takes a PSEG on the
   * out drive when pairs in service would strand it; on by default. =0: the stranded PSEGs are
   * counted (strandedBytes).
   */
  strictSpace: process.env['LUNFS_MODEL_STRICT_SPACE'] !== '0',
};

/** What the fault injector needs from the model run. */
export interface FaultHost {
  readonly raidLevel: RaidLevel;
  readonly random: SeededRandom;
  pool(): Pool;
  controller(): Controller;
  /** The session views of the drives, in drive-index order (replaceView changes one). */
  views(): SessionDrive[];
  replaceView(driveIndex: number, view: SessionDrive): void;
  check(condition: boolean, message: string): void;
  trace(message: string): void;
  count(name: string, by?: number): void;
  /** A power cut now (as the model's 'crash' operation), then recovery and its checks. */
  crash(): Promise<void>;
  /** Flushes every LUN (the models too) and commits: no data write left unflushed on any drive. */
  flushEverything(): Promise<void>;
}

interface ScrubResult {
  rstores: number;
  rows: number;
  checksumRepairs: number;
  parityRepairs: number;
  unrepairable: number;
}

const checksumBlockBytes = 4096;

/**
 * For failure messages: where byte offsetBytes of a LUN lives (RStore, RAID-5 row, member, drive
 * and its state).
 */
export function describeLocation(pool: Pool, lunName: string, offsetBytes: number): string {
  const { allocationUnitBytes, stripeUnitBytes } = pool.metadata.config;
  const entry = pool.lunByName(lunName).map.get(Math.floor(offsetBytes / allocationUnitBytes));
  if (!entry) return 'unmapped';
  const record = pool.metadata.rstores.get(entry.rstoreId)!;
  const inRStore = entry.rsegIndex * allocationUnitBytes + (offsetBytes % allocationUnitBytes);
  const drives = record.members
    .map((member) => `${member.driveIndex}:${pool.health.state(member.driveIndex)}`)
    .join(' ');
  if (record.raidLevel !== 5)
    return `RStore ${record.id} (RAID-${record.raidLevel}) offset ${inRStore}, members on drives ${drives}`;
  const count = record.members.length;
  const unit = Math.floor(inRStore / stripeUnitBytes);
  const row = Math.floor(unit / (count - 1));
  const parity = count - 1 - (row % count);
  const member = (parity + 1 + (unit % (count - 1))) % count;
  return `RStore ${record.id} (RAID-5) row ${row}, data on member ${member} (drive ${record.members[member]!.driveIndex}), parity on member ${parity} (drive ${record.members[parity]!.driveIndex}); drives ${drives}`;
}

/** Free PSEGs of each drive, from the RStore records. */
export function freePsegCounts(pool: Pool): number[] {
  const free = pool.metadata.drives.map((drive) => drive.psegCount);
  for (const record of pool.metadata.rstores.values())
    for (const member of record.members) free[member.driveIndex]! -= 1;
  return free;
}

/**
 * RAID-1: capacity that free PSEGs can no longer form because they are left on too few drives.
 * A mirrored RStore takes PSEGs on two drives; while a drive is out, new RStores take both on the
 * drives in service (online first), so the out drive's free PSEGs can be left without partners:
 * an RSS forms at most min(T/2, T - max) more RStores from T free PSEGs, which is less than the
 * capacity counted when the pool was empty. 0 for RAID-0 and RAID-5 (an RStore takes a PSEG on
 * every drive of its set), and 0 with faultOptions.strictSpace.
 */
export function strandedBytes(pool: Pool): number {
  const { raidLevel, psegSizeBytes } = pool.metadata.config;
  if (raidLevel !== 1 || faultOptions.strictSpace) return 0;
  const free = freePsegCounts(pool);
  let stranded = 0;
  for (const rss of pool.metadata.rss) {
    const most = (counts: number[]): number =>
      Math.min(
        Math.floor(counts.reduce((a, b) => a + b, 0) / 2),
        counts.reduce((a, b) => a + b, 0) - Math.max(...counts),
      );
    const all = most(rss.driveIndexes.map((index) => pool.metadata.drives[index]!.psegCount));
    const made = [...pool.metadata.rstores.values()].filter(
      (record) => record.rssId === rss.id,
    ).length;
    stranded += all - made - most(rss.driveIndexes.map((index) => free[index]!));
  }
  return stranded * psegSizeBytes;
}

/**
 * Whether ChecksumDrive holds a checksum for the 4 KiB block at blockOffsetBytes (its table page
 * must be loaded: verify() the block first). Peeks at the private table: a test-only shortcut,
 * synchronous so that no write can land between the question and the flip.
 */
function checksumKnown(
  drive: ChecksumDrive,
  dataOffsetBytes: number,
  blockOffsetBytes: number,
): boolean {
  const table = (
    drive as unknown as {
      table?: { countKnown?: (firstBlock: number, blockCount: number) => number };
    }
  ).table;
  if (typeof table?.countKnown !== 'function')
    throw new Error(
      'ChecksumDrive has no table.countKnown any more: update checksumKnown in test/model/drive-faults.ts',
    );
  return table.countKnown((blockOffsetBytes - dataOffsetBytes) / checksumBlockBytes, 1) === 1;
}

export class DriveFaults {
  /** The MemoryDrives the model failed (fail() survives crash(): they stay failed). */
  private readonly failed = new Set<MemoryDrive>();
  /** The drive index whose replacement is being rebuilt, until the model saw the rebuild end. */
  private rebuilding: number | undefined;
  /** The running rebuild's job id in the current controller. */
  private rebuildJob: number | undefined;
  /**
   * The step (counted by afterStep) at which a rebuild left running is waited for, at the latest.
   */
  private rebuildDue = 0;
  private stepsSeen = 0;
  /** A scrub left running alongside a rebuild, in the current controller. */
  private scrubJob: number | undefined;
  /**
   * The drive with bit flips not yet repaired by a scrub, and the drive offsets of their blocks.
   */
  private flippedDrive: number | undefined;
  private readonly flippedBlocks = new Set<number>();
  private replacementCount = 0;
  private pendingReplacement: SessionDrive | undefined;
  /** Integrity counters of the pools this run has closed or abandoned. */
  private readonly integrity = {
    checksumMismatches: 0,
    repairs: 0,
    unrepairable: 0,
    parityRepairs: 0,
    labelRepairs: 0,
  };
  private readonly rowLog = { records: 0, replayed: 0 };
  /** A drive failed since the last beforeCrash: the pool's record of it may not be durable. */
  private failureUnrecorded = false;

  constructor(
    private readonly host: FaultHost,
    private readonly namePrefix: string,
  ) {}

  /** RAID-0 has no redundancy: no faults there. */
  get enabled(): boolean {
    return this.host.raidLevel !== 0;
  }

  /** Controller driveSettings.openDrive: the replacement prepared by replaceDrive. */
  readonly openDrive = async (path: string, sizeBytes: number): Promise<Drive> => {
    const view = this.pendingReplacement;
    this.host.check(
      view !== undefined && view.path === path && view.sizeBytes === sizeBytes,
      `openDrive(${path}, ${sizeBytes}) without a matching replacement prepared (${view?.path}, ${view?.sizeBytes})`,
    );
    this.pendingReplacement = undefined;
    return view!;
  };

  /**
   * The drives for Pool.open: a failed drive is absent (a MissingDrive), or itself with
   * faultOptions.failedDrivePresent.
   */
  drivesForOpen(views: SessionDrive[]): Drive[] {
    return views.map((view) =>
      this.failed.has(view.inner) && !faultOptions.failedDrivePresent
        ? new MissingDrive(view.path, 'simulated: removed after it failed')
        : view,
    );
  }

  /** The pool is being closed or abandoned: keep its integrity counters for the summary. */
  retirePool(pool: Pool): void {
    for (const key of Object.keys(this.integrity) as Array<keyof typeof this.integrity>)
      this.integrity[key] += pool.health.integrity[key];
    this.rowLog.records += pool.rowLogCounters?.records ?? 0;
    this.rowLog.replayed += pool.rowLogCounters?.replayed ?? 0;
  }

  /**
   * Whether a RAID-5 parity check of this RStore is meaningful now (every member online, no flips
   * in it).
   */
  parityCheckable(record: RStoreRecord): boolean {
    const pool = this.host.pool();
    return record.members.every(
      (member) =>
        pool.health.state(member.driveIndex) === 'online' &&
        member.driveIndex !== this.flippedDrive,
    );
  }

  /** A drive out of service or being rebuilt, as the model or the pool sees it. */
  private driveOut(): number | undefined {
    const pool = this.host.pool();
    const views = this.host.views();
    for (let index = 0; index < views.length; index += 1) {
      if (
        this.failed.has(views[index]!.inner) ||
        index === this.rebuilding ||
        pool.health.state(index) !== 'online'
      )
        return index;
    }
    return undefined;
  }

  /**
   * The pool took the drive with bit flips out of service over a checksum mismatch (see
   * faultOptions.strictFlips): unless strict, the model takes it as that drive's failure.
   */
  private acceptFailureAtFlip(index: number): boolean {
    const reason = this.host.pool().metadata.drives[index]!.failedReason ?? '';
    if (
      faultOptions.strictFlips ||
      index !== this.flippedDrive ||
      !/checksum mismatch/.test(reason) ||
      this.host.pool().health.state(index) !== 'failed'
    )
      return false;
    const inner = this.host.views()[index]!.inner;
    inner.fail(); // from now on the model handles it as a failed drive: replaced, absent at open
    this.failed.add(inner);
    this.flippedDrive = undefined;
    this.flippedBlocks.clear();
    this.host.count('drive with bit flips failed by the pool (LUNFS_MODEL_STRICT_FLIPS)');
    return true;
  }

  /**
   * After Pool.open and controller.drives.start(): each drive is in the state the model expects.
   */
  async afterReopen(when: string): Promise<void> {
    if (!this.enabled) return;
    const pool = this.host.pool();
    const views = this.host.views();
    this.scrubJob = undefined; // a scrub of the previous session was interrupted with it
    this.rebuildJob = undefined;
    for (let index = 0; index < views.length; index += 1) {
      const state = pool.health.state(index);
      if (this.failed.has(views[index]!.inner)) {
        this.host.check(
          state === 'failed',
          `${when}: drive ${index}, which the model failed, opens ${state}`,
        );
      } else if (index === this.rebuilding) {
        if (state === 'online') {
          this.rebuilding = undefined; // the rebuild had finished and been committed
          this.host.count('rebuild finished before a restart or power cut');
          continue;
        }
        this.host.check(
          state === 'rebuilding',
          `${when}: drive ${index}, being rebuilt, opens ${state}`,
        );
        const job = this.host
          .controller()
          .drives.jobs.list()
          .find(
            (candidate) =>
              candidate.kind === 'rebuild' &&
              candidate.drive === index &&
              candidate.state === 'running',
          );
        this.host.check(
          job !== undefined,
          `${when}: the rebuild of drive ${index} was not resumed by controller.drives.start()`,
        );
        this.rebuildJob = job!.id;
        this.host.count('rebuild resumed at open');
      } else if (!this.acceptFailureAtFlip(index)) {
        this.host.check(
          state === 'online',
          `${when}: drive ${index} opens ${state} (${pool.metadata.drives[index]!.failedReason ?? ''}), but the model never failed it`,
        );
      }
    }
    this.checkCounters(when);
    if (this.rebuildJob !== undefined && !faultOptions.ioDuringRebuild) {
      this.rebuildEnded(await this.host.controller().drives.jobs.wait(this.rebuildJob));
      this.host.count('rebuild resumed at open waited for (LUNFS_MODEL_IO_DURING_REBUILD)');
    }
  }

  /**
   * After every step: drive states as the model expects, nothing unrepairable, background jobs that
   * ended went well.
   */
  async afterStep(): Promise<void> {
    if (!this.enabled) return;
    const pool = this.host.pool();
    const views = this.host.views();
    for (let index = 0; index < views.length; index += 1) {
      const state = pool.health.state(index);
      if (this.failed.has(views[index]!.inner)) {
        this.host.check(
          state !== 'rebuilding',
          `drive ${index}, which the model failed, is ${state}`,
        );
      } else if (index !== this.rebuilding && !this.acceptFailureAtFlip(index)) {
        this.host.check(
          state === 'online',
          `drive ${index} left service (${state}: ${pool.metadata.drives[index]!.failedReason ?? ''}), but the model never failed it`,
        );
      }
    }
    this.checkCounters('after the step');
    if (this.driveOut() !== undefined) this.host.count('steps with a drive out');
    this.stepsSeen += 1;
    const jobs = this.host.controller().drives.jobs.list();
    if (this.rebuildJob !== undefined) {
      const job = jobs.find((candidate) => candidate.id === this.rebuildJob)!;
      if (job.state !== 'running') {
        this.rebuildEnded(job);
      } else if (this.stepsSeen >= this.rebuildDue) {
        this.rebuildEnded(await this.host.controller().drives.jobs.wait(job.id));
        this.host.count('rebuild waited for a few steps later');
      }
    }
    if (this.scrubJob !== undefined) {
      const job = jobs.find((candidate) => candidate.id === this.scrubJob)!;
      if (job.state !== 'running') this.scrubEnded(job, 'alongside a rebuild');
    }
  }

  private checkCounters(when: string): void {
    const pool = this.host.pool();
    this.host.check(
      pool.health.integrity.unrepairable === 0,
      `${when}: integrity.unrepairable is ${pool.health.integrity.unrepairable} with at most one fault at a time`,
    );
    this.host.check(
      pool.lostRStores().length === 0,
      `${when}: ${pool.lostRStores().length} RStores lost with at most one drive out`,
    );
  }

  private checkStatus(
    what: string,
    poolState: string,
    driveIndex: number,
    driveState: string,
  ): void {
    const status = this.host.controller().status();
    this.host.check(
      status.pool.state === poolState,
      `${what}: status pool.state is ${status.pool.state}, expected ${poolState}`,
    );
    this.host.check(
      status.drives[driveIndex]!.state === driveState,
      `${what}: status drives[${driveIndex}].state is ${status.drives[driveIndex]!.state}, expected ${driveState}`,
    );
  }

  /** 'drive-fail': with no drive out, one drive fails (the one with bit flips, if any). */
  failDrive(): void {
    const out = this.driveOut();
    if (out !== undefined) {
      this.host.count('drive-fail skipped (a drive is out)');
      return;
    }
    const views = this.host.views();
    const index = this.flippedDrive ?? this.host.random.integer(views.length);
    if (this.flippedDrive !== undefined) this.host.count('drive failed with its bit flips');
    this.host.trace(`drive ${index} (${views[index]!.path}) fails`);
    views[index]!.inner.fail();
    this.failed.add(views[index]!.inner);
    this.failureUnrecorded = true;
    this.flippedDrive = undefined; // its flips went with it
    this.flippedBlocks.clear();
    this.host.count('drive failed');
  }

  /**
   * 'drive-replace': a rebuild running is waited for; else a failed drive is replaced and its
   * rebuild starts, then is waited for at once, or a power cut comes during it, or (with
   * faultOptions.ioDuringRebuild) it runs on alongside the next steps, sometimes with a scrub.
   */
  async replaceDrive(): Promise<void> {
    if (this.rebuildJob !== undefined) {
      const job = await this.host.controller().drives.jobs.wait(this.rebuildJob);
      this.rebuildEnded(job);
      this.host.count('rebuild waited for later');
      return;
    }
    const views = this.host.views();
    const index = views.findIndex((view) => this.failed.has(view.inner));
    if (index < 0) return;
    const pool = this.host.pool();
    if (pool.health.state(index) === 'online') {
      await pool.commit(); // nothing touched the drive yet: a commit flushes every drive
      this.host.count('failure found by a commit');
    }
    this.host.check(
      pool.health.state(index) === 'failed',
      `drive ${index} failed (every op EIO) but is ${pool.health.state(index)} after a commit`,
    );
    this.checkStatus(`drive ${index} failed`, 'degraded', index, 'failed');
    if (!faultOptions.ioDuringRebuild) {
      await this.host.flushEverything(); // no destage in the background while the rebuild runs
      this.host.count('flushed before a rebuild (LUNFS_MODEL_IO_DURING_REBUILD)');
    }
    const path = `${this.namePrefix}new${++this.replacementCount}`;
    const view = new SessionDrive(new MemoryDrive(path, views[index]!.sizeBytes));
    this.pendingReplacement = view;
    this.host.trace(`drive ${index} replaced by ${path}`);
    const job = await this.host.controller().drives.replace(String(index), path);
    this.host.check(
      this.pendingReplacement === undefined,
      'replace() did not open the replacement drive',
    );
    this.host.replaceView(index, view);
    this.rebuilding = index;
    this.rebuildJob = job.id;
    this.host.count('drive replaced');
    this.host.check(
      pool.health.state(index) === 'rebuilding',
      `drive ${index} just replaced is ${pool.health.state(index)}`,
    );
    this.checkStatus(`drive ${index} replaced`, 'rebuilding', index, 'rebuilding');
    // runs alongside the next steps until then
    this.rebuildDue = this.stepsSeen + 1 + this.host.random.integer(20);
    const choice = this.host.random.integer(10);
    if (choice < 3) {
      this.rebuildEnded(await this.host.controller().drives.jobs.wait(job.id));
      this.host.count('rebuild waited for at once');
    } else if (choice < 5) {
      // The rebuild runs a little (with whatever background destage does), then the power goes.
      const turnCount = this.host.random.integer(this.host.random.chance(0.5) ? 100 : 2000);
      for (let turn = 0; turn < turnCount; turn += 1) await Promise.resolve();
      this.host.count('power cut during a rebuild');
      await this.host.crash();
    } else if (!faultOptions.ioDuringRebuild) {
      this.rebuildEnded(await this.host.controller().drives.jobs.wait(job.id));
      this.host.count('rebuild waited for at once (LUNFS_MODEL_IO_DURING_REBUILD)');
    } else if (choice < 6) {
      if (!this.scrubMayRunWithRebuild()) {
        this.host.count('scrub alongside a rebuild not started (LUNFS_MODEL_SCRUB_DURING_REBUILD)');
        return;
      }
      this.scrubJob = this.host.controller().drives.scrub().id;
      this.host.count('scrub started alongside a rebuild');
    }
  }

  private scrubMayRunWithRebuild(): boolean {
    return this.host.raidLevel === 5 || faultOptions.scrubDuringRebuild;
  }

  private rebuildEnded(job: JobStatus): void {
    const index = this.rebuilding!;
    this.host.check(
      job.state === 'done',
      `rebuild of drive ${index} ended ${job.state}: ${job.error ?? ''}`,
    );
    this.host.check(
      this.host.pool().health.state(index) === 'online',
      `drive ${index} is ${this.host.pool().health.state(index)} after its rebuild`,
    );
    this.rebuilding = undefined;
    this.rebuildJob = undefined;
    this.host.count('rebuild done');
  }

  /**
   * 'bit-flip': with every drive online, a few bits flip in checksummed blocks of RStore members on
   * one drive.
   */
  async flipBits(): Promise<void> {
    if (this.driveOut() !== undefined) {
      this.host.count('bit-flip skipped (a drive is out)');
      return;
    }
    const pool = this.host.pool();
    const views = this.host.views();
    const index = this.flippedDrive ?? this.host.random.integer(views.length);
    const psegs = [...pool.metadata.rstores.values()].flatMap((record) =>
      record.members
        .filter((member) => member.driveIndex === index)
        .map((member) => member.psegIndex),
    );
    if (psegs.length === 0) return;
    const data = pool.dataDrive(index);
    this.host.check(
      data instanceof ChecksumDrive,
      `drive ${index} online but not behind a ChecksumDrive`,
    );
    const checksummed = data as ChecksumDrive;
    const area = pool.layoutHeader.psegAreaOffsetBytes;
    const psegBytes = pool.metadata.config.psegSizeBytes;
    const wanted = 1 + this.host.random.integer(6);
    let landed = 0;
    for (let attempt = 0; attempt < wanted; attempt += 1) {
      const offset =
        area +
        psegs[this.host.random.integer(psegs.length)]! * psegBytes +
        this.host.random.integer(psegBytes);
      const bit = this.host.random.integer(8);
      const block = offset - ((offset - area) % checksumBlockBytes);
      await checksummed.verify(block, checksumBlockBytes); // loads the block's table page
      if (!checksumKnown(checksummed, area, block)) {
        this.host.count('bit flip not injected (block has no checksum yet)');
        continue;
      }
      views[index]!.inner.flipBit(offset, bit);
      this.flippedBlocks.add(block);
      landed += 1;
    }
    this.host.trace(`${landed} bit flips on drive ${index}`);
    if (landed === 0) return;
    this.flippedDrive = index;
    this.host.count('bit flips', landed);
  }

  /** 'scrub': a scrub to completion (after one left running alongside a rebuild, if any). */
  async scrub(why = 'scrub'): Promise<void> {
    const jobs = this.host.controller().drives.jobs;
    if (this.scrubJob !== undefined)
      this.scrubEnded(await jobs.wait(this.scrubJob), 'alongside a rebuild');
    if (this.rebuildJob !== undefined && !this.scrubMayRunWithRebuild()) {
      this.rebuildEnded(await jobs.wait(this.rebuildJob));
      this.host.count('rebuild waited for before a scrub');
    }
    this.host.trace(why);
    this.scrubEnded(await jobs.wait(this.host.controller().drives.scrub().id), why);
    if (this.flippedDrive === undefined || this.acceptFailureAtFlip(this.flippedDrive)) return;
    this.host.check(this.driveOut() === undefined, 'bit flips outstanding while a drive is out');
    // Every flip was in a block of an RStore member, and every drive is online: all repaired.
    const data = this.host.pool().dataDrive(this.flippedDrive) as ChecksumDrive;
    for (const block of this.flippedBlocks) {
      const bad = await data.verify(block, checksumBlockBytes);
      this.host.check(
        bad.length === 0,
        `after a scrub, the flipped block at ${block} of drive ${this.flippedDrive} still fails its checksum`,
      );
    }
    this.flippedDrive = undefined;
    this.flippedBlocks.clear();
  }

  private scrubEnded(job: JobStatus, why: string): void {
    if (job.id === this.scrubJob) this.scrubJob = undefined;
    this.host.check(job.state === 'done', `${why}: scrub ended ${job.state}: ${job.error ?? ''}`);
    const result = job.result as ScrubResult;
    this.host.trace(`${why}: ${JSON.stringify(result)}`);
    this.host.check(
      result.unrepairable === 0,
      `${why}: scrub found ${result.unrepairable} unrepairable with at most one fault at a time: ${JSON.stringify(result)}`,
    );
    // RAID-5 rows are consistent after every open (checkParity), kept so by every write, made so by
    // a rebuild.
    this.host.check(
      this.host.raidLevel !== 5 || result.parityRepairs === 0,
      `${why}: scrub found ${result.parityRepairs} RAID-5 rows with parity not the XOR of their data: ${JSON.stringify(result)}`,
    );
    this.host.count(why === 'scrub' ? 'scrub done' : `scrub done (${why})`);
    this.host.count('scrub checksum repairs', result.checksumRepairs);
    this.host.count('scrub parity repairs', result.parityRepairs);
  }

  /**
   * Before a power cut: bit flips outstanding are scrubbed away first (unless
   * faultOptions.flipsAcrossCrash); RAID-5 with a drive out is flushed, and true is returned: the
   * power cut must come while idle (unless faultOptions.degradedCrash).
   */
  async beforeCrash(): Promise<boolean> {
    if (!this.enabled) return false;
    if (this.flippedDrive !== undefined && !faultOptions.flipsAcrossCrash)
      await this.scrub('scrub before a power cut');
    const out = this.driveOut();
    if (this.host.raidLevel === 5 && out !== undefined && this.failureUnrecorded) {
      // The pool may not know of the failure yet (nothing touched the drive), or know it without
      // its record being durable: a commit's flush finds it, the next commit records it. (Found
      // only after the power cut, the pool would refuse to open: refuseIfDirtyDegraded.)
      await this.host.pool().commit();
      await this.host.pool().commit();
      this.failureUnrecorded = false;
      this.host.count('RAID-5: failure recorded by a commit before a power cut');
    }
    if (this.host.raidLevel !== 5 || faultOptions.degradedCrash || out === undefined) return false;
    await this.host.flushEverything();
    this.host.count('RAID-5 degraded: flushed before a power cut (LUNFS_MODEL_DEGRADED_CRASH)');
    return true;
  }

  /** Counts for the run's summary (after the last pool was retired). */
  summary(): Record<string, number> {
    if (!this.enabled) return {};
    return {
      ...Object.fromEntries(
        Object.entries(this.integrity).map(([key, value]) => [`integrity ${key}`, value]),
      ),
      'degraded-row log records': this.rowLog.records,
      'degraded-row log records replayed': this.rowLog.replayed,
    };
  }
}
