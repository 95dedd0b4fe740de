// The drives of an open pool as the controller serves them (seed 004 [0044]-[0046]): it watches
// the drive files (a drive file that was deleted or replaced under the mount leaves service at
// once), makes a failure durable and moves the metadata copy away from the failed drive, replaces
// a failed drive and rebuilds it in the background, runs scrubs, and reports all of it for
// `lunfs status`. A replacement never overwrites a drive of a pool unless forced (its label is
// read first), never takes a drive another pool holds (the drive lock), and never touches a path
// inside the mountpoint this process serves. The I/O side of failures (degraded reads and
// writes, repair) is in raid/.

import { existsSync } from 'node:fs';
import { open as openFile, rm, type FileHandle } from 'node:fs/promises';
import type { Drive } from '../drive/drive.js';
import { FileDrive, sizeOf } from '../drive/file-drive.js';
import {
  describeDriveLabel,
  driveHeaderBytes,
  tailLabelOffsetBytes,
} from '../meta/drive-header.js';
import { realPathOutside } from '../util/path-outside.js';
import type { Clock } from '../util/clock.js';
import { makeUuid } from '../util/clock.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { BackgroundJobs, type JobStatus } from './background-jobs.js';
import { JobPacer } from './job-pacer.js';
import type { Pool } from '../pool/pool.js';
import type { ScrubReport } from '../pool/pool-drives.js';

export interface DriveServiceSettings {
  clock: Clock;
  log: Logger;
  random: () => number;
  /** Opens (or creates, sized like the drive it replaces) the file or device of a new drive. */
  openDrive?: (path: string, sizeBytes: number) => Promise<Drive>;
  /** The pool's drive paths changed (a replacement): record them (pool.json). */
  onDrivePathsChanged?: (paths: string[]) => Promise<void>;
  /**
   * The real path of the mountpoint this process serves, if it serves one: no drive may lie in it.
   */
  mountpoint?: string;
  /**
   * A count that grows with every foreground read and write: given, rebuilds and scrubs are paced
   * while it moves (job-pacer.ts); not given, they run at full speed.
   */
  foregroundOps?: () => number;
}

export interface ReplaceOptions {
  /** Overwrite a target that carries a lunfs drive label (of another pool, or of this one). */
  force?: boolean;
}

/**
 * Opens a drive file or device, or creates a sparse file of sizeBytes when the path does not exist.
 */
export async function openOrCreateDrive(path: string, sizeBytes: number): Promise<Drive> {
  if (existsSync(path)) return FileDrive.open(path);
  return FileDrive.createSparse(path, sizeBytes);
}

/**
 * Refuses a replacement target that carries a lunfs drive label, of another pool or of this one:
 * overwriting it would destroy that pool's drive (EEXIST unless --force).
 */
async function refuseLabelledDrive(path: string): Promise<void> {
  // Both label places (format 5 keeps one at each end): a drive whose head label is damaged is
  // still another pool's drive when its tail label says so.
  const labels: Buffer[] = [];
  let handle: FileHandle | undefined;
  try {
    handle = await openFile(path, 'r');
    const sizeBytes = await sizeOf(path, handle);
    for (const offset of sizeBytes >= 2 * driveHeaderBytes
      ? [0, tailLabelOffsetBytes(sizeBytes)]
      : [0]) {
      const label = Buffer.alloc(driveHeaderBytes);
      await handle.read(label, 0, label.length, offset);
      labels.push(label);
    }
  } catch {
    // unreadable here: opening it as a drive reports why
  } finally {
    await handle?.close();
  }
  const label = labels
    .map((buffer) => describeDriveLabel(buffer))
    .find((described) => described !== undefined);
  if (label === undefined) return;
  throw new LunfsError(
    'EEXIST',
    `${path} carries a lunfs drive label (${label}): it is a drive of a pool, and replacing onto it would overwrite that drive. Give --force to overwrite it anyway`,
  );
}

export class DriveService {
  readonly jobs: BackgroundJobs;
  private monitor: NodeJS.Timeout | undefined;
  /** Durable follow-up of failures (commit, metadata copies), one at a time. */
  private followUp: Promise<void> = Promise.resolve();
  private closing = false;

  constructor(
    private readonly pool: Pool,
    private readonly settings: DriveServiceSettings,
  ) {
    this.jobs = new BackgroundJobs(
      settings.clock,
      settings.foregroundOps
        ? new JobPacer({ clock: settings.clock, foregroundOps: settings.foregroundOps })
        : undefined,
    );
    pool.onDriveFailure = (driveIndex) => this.afterFailure(driveIndex);
    pool.onMissedWrite = (driveIndex) => this.afterMissedWrite(driveIndex);
  }

  /**
   * At mount: restores metadata copies lost with drives that failed before, and resumes the
   * rebuild of a replacement drive that a stop interrupted.
   */
  async start(options: { watchIntervalMs?: number } = {}): Promise<void> {
    await this.pool.ensureMetadataCopies();
    for (const [index] of this.pool.metadata.drives.entries()) {
      if (this.pool.health.state(index) === 'rebuilding') this.startRebuild(index);
    }
    if (options.watchIntervalMs) {
      this.monitor = setInterval(() => void this.checkDriveFiles(), options.watchIntervalMs);
      this.monitor.unref();
    }
  }

  /**
   * A drive file that no longer names the open file (deleted, or replaced by another) has left: it
   * fails now.
   */
  async checkDriveFiles(): Promise<void> {
    for (const [index, drive] of this.pool.drives.entries()) {
      if (this.pool.health.state(index) === 'failed' || !(drive instanceof FileDrive)) continue;
      const problem = await drive.presenceProblem();
      if (problem) this.pool.health.fail(index, new Error(problem), { absent: true });
    }
  }

  /**
   * After a failure: a last flush of the drive (what reached it is durable there, should it come
   * back), then make the failure durable and put a metadata copy on another drive, in the
   * background.
   */
  private afterFailure(driveIndex: number): void {
    if (this.closing) return;
    this.followUp = this.followUp.then(async () => {
      try {
        await this.pool.flushLeavingDrive(driveIndex);
        await this.pool.commit();
        await this.pool.ensureMetadataCopies();
      } catch (error) {
        this.settings.log.error({ err: error, driveIndex }, 'recording the drive failure failed');
      }
    });
  }

  /**
   * A write missed a drive out of service: make that durable soon, so a later mount knows the drive
   * is behind.
   */
  private afterMissedWrite(driveIndex: number): void {
    if (this.closing) return;
    this.followUp = this.followUp.then(async () => {
      try {
        await this.pool.commit();
      } catch (error) {
        this.settings.log.error({ err: error, driveIndex }, 'recording a missed write failed');
      }
    });
  }

  /**
   * Replaces failed drive OLD (its index or path) by the drive at newPath (created as a sparse
   * file of the same size when it does not exist) and starts its rebuild.
   */
  async replace(old: string, newPath: string, options: ReplaceOptions = {}): Promise<JobStatus> {
    const driveIndex = this.driveIndexOf(old);
    if (this.pool.drives.some((drive, index) => index !== driveIndex && drive.path === newPath))
      throw new LunfsError(
        'EINVAL',
        `${newPath} is drive ${this.pool.drives.findIndex((drive) => drive.path === newPath)} of this pool already`,
      );
    this.pool.replaceDriveCheck(driveIndex); // refuse before any file is made
    // Never stat a path inside our own mountpoint: that request would wait for this very process.
    if (this.settings.mountpoint !== undefined)
      await realPathOutside(newPath, this.settings.mountpoint, 'the new drive');
    const open = this.settings.openDrive ?? openOrCreateDrive;
    const created = !existsSync(newPath);
    // The failed drive's own file again, under its path or another (--force to rebuild onto it):
    // this pool still holds its lock, so it is let go first. A failed drive is never used again.
    const failed = this.pool.drives[driveIndex]!;
    if (options.force && failed instanceof FileDrive && (await failed.isFile(newPath)))
      await failed.close();
    // before the lock: the label says whose it is
    if (!created && !options.force) await refuseLabelledDrive(newPath);
    // Opening takes the drive's lock: a target another pool has open is refused (EBUSY) here.
    const drive = await open(newPath, this.pool.metadata.drives[driveIndex]!.sizeBytes);
    try {
      await this.pool.replaceDrive(driveIndex, drive, makeUuid(this.settings.random));
    } catch (error) {
      await drive.close();
      // a refused replacement leaves nothing behind
      if (created) await rm(newPath, { force: true });
      throw error;
    }
    await this.settings.onDrivePathsChanged?.(this.pool.drives.map((candidate) => candidate.path));
    return this.startRebuild(driveIndex);
  }

  private startRebuild(driveIndex: number): JobStatus {
    return this.jobs.start(
      'rebuild',
      this.pool.rebuildBytes(driveIndex),
      { drive: driveIndex },
      (progress) => this.pool.rebuildDrive(driveIndex, progress),
    );
  }

  /** Starts a scrub of every RStore. */
  scrub(): JobStatus {
    return this.jobs.start('scrub', this.pool.scrubBytes(), {}, (progress): Promise<ScrubReport> =>
      this.pool.scrub(progress),
    );
  }

  /** A drive named by its index or its path. */
  driveIndexOf(name: string): number {
    if (/^\d+$/.test(name)) {
      const index = Number(name);
      if (index >= this.pool.drives.length)
        throw new LunfsError(
          'ENOENT',
          `the pool has no drive ${index} (drives 0-${this.pool.drives.length - 1})`,
        );
      return index;
    }
    const index = this.pool.drives.findIndex((drive) => drive.path === name);
    if (index < 0)
      throw new LunfsError(
        'ENOENT',
        `no drive of this pool is at ${name} (drives: ${this.pool.drives.map((drive) => drive.path).join(', ')})`,
      );
    return index;
  }

  /** Pool state for status: failed (data lost), rebuilding, degraded (a drive out), or online. */
  poolState(): 'online' | 'degraded' | 'rebuilding' | 'failed' {
    if (this.pool.lostRStores().length > 0 || this.pool.setBeyondRedundancy()) return 'failed';
    const states = this.pool.metadata.drives.map((_, index) => this.pool.health.state(index));
    if (states.includes('failed')) return 'degraded';
    if (states.includes('rebuilding')) return 'rebuilding';
    return 'online';
  }

  /** LUNs with data on an RStore that runs without a member: one more failure there loses data. */
  lunsAtRisk(): string[] {
    const lost = new Set(this.lunsLost());
    return this.pool
      .lunsOn(this.pool.degradedRStores().map((rstore) => rstore.record.id))
      .filter((name) => !lost.has(name));
  }

  /**
   * LUNs with data on an RStore that lost more members than its redundancy covers: that data is
   * gone (reads fail with EIO).
   */
  lunsLost(): string[] {
    return this.pool.lunsOn(this.pool.lostRStores().map((rstore) => rstore.record.id));
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.monitor) clearInterval(this.monitor);
    this.pool.stopBackgroundWork();
    await this.jobs.settle();
    await this.followUp;
  }
}
