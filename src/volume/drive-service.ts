// The drives of an open pool as the controller serves them (seed 004 [0044]-[0046]): it watches
// the drive files (a drive file that was deleted or replaced under the mount leaves service at
// once), makes a failure durable and moves the metadata copy away from the failed drive, replaces
// a failed drive and rebuilds it in the background, runs scrubs, and reports all of it for
// `lunfs status`. The I/O side of failures (degraded reads and writes, repair) is in raid/.

import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Drive } from '../drive/drive.js';
import { FileDrive } from '../drive/file-drive.js';
import type { Clock } from '../util/clock.js';
import { makeUuid } from '../util/clock.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { BackgroundJobs, type JobStatus } from './background-jobs.js';
import type { Pool, ScrubReport } from './pool.js';

export interface DriveServiceSettings {
  clock: Clock;
  log: Logger;
  random: () => number;
  /** Opens (or creates, sized like the drive it replaces) the file or device of a new drive. */
  openDrive?: (path: string, sizeBytes: number) => Promise<Drive>;
  /** The pool's drive paths changed (a replacement): record them (pool.json). */
  onDrivePathsChanged?: (paths: string[]) => Promise<void>;
}

/** Opens a drive file or device, or creates a sparse file of sizeBytes when the path does not exist. */
export async function openOrCreateDrive(path: string, sizeBytes: number): Promise<Drive> {
  if (existsSync(path)) return FileDrive.open(path);
  return FileDrive.createSparse(path, sizeBytes);
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
    this.jobs = new BackgroundJobs(settings.clock);
    pool.onDriveFailure = (driveIndex) => this.afterFailure(driveIndex);
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

  /** A drive file that no longer names the open file (deleted, or replaced by another) has left: it fails now. */
  async checkDriveFiles(): Promise<void> {
    for (const [index, drive] of this.pool.drives.entries()) {
      if (this.pool.health.state(index) === 'failed' || !(drive instanceof FileDrive)) continue;
      const problem = await drive.presenceProblem();
      if (problem) this.pool.health.fail(index, new Error(problem));
    }
  }

  /** After a failure: make it durable and put a metadata copy on another drive, in the background. */
  private afterFailure(driveIndex: number): void {
    if (this.closing) return;
    this.followUp = this.followUp.then(async () => {
      try {
        await this.pool.commit();
        await this.pool.ensureMetadataCopies();
      } catch (error) {
        this.settings.log.error({ err: error, driveIndex }, 'recording the drive failure failed');
      }
    });
  }

  /**
   * Replaces failed drive OLD (its index or path) by the drive at newPath (created as a sparse
   * file of the same size when it does not exist) and starts its rebuild.
   */
  async replace(old: string, newPath: string): Promise<JobStatus> {
    const driveIndex = this.driveIndexOf(old);
    if (this.pool.drives.some((drive, index) => index !== driveIndex && drive.path === newPath)) throw new LunfsError('EINVAL', `${newPath} is drive ${this.pool.drives.findIndex((drive) => drive.path === newPath)} of this pool already`);
    this.pool.replaceDriveCheck(driveIndex); // refuse before any file is made
    const open = this.settings.openDrive ?? openOrCreateDrive;
    const created = !existsSync(newPath);
    const drive = await open(newPath, this.pool.metadata.drives[driveIndex]!.sizeBytes);
    try {
      await this.pool.replaceDrive(driveIndex, drive, makeUuid(this.settings.random));
    } catch (error) {
      await drive.close();
      if (created) await rm(newPath, { force: true }); // a refused replacement leaves nothing behind
      throw error;
    }
    await this.settings.onDrivePathsChanged?.(this.pool.drives.map((candidate) => candidate.path));
    return this.startRebuild(driveIndex);
  }

  private startRebuild(driveIndex: number): JobStatus {
    return this.jobs.start('rebuild', this.pool.rebuildBytes(driveIndex), { drive: driveIndex }, (progress) => this.pool.rebuildDrive(driveIndex, progress));
  }

  /** Starts a scrub of every RStore. */
  scrub(): JobStatus {
    return this.jobs.start('scrub', this.pool.scrubBytes(), {}, (progress): Promise<ScrubReport> => this.pool.scrub(progress));
  }

  /** A drive named by its index or its path. */
  driveIndexOf(name: string): number {
    if (/^\d+$/.test(name)) {
      const index = Number(name);
      if (index >= this.pool.drives.length) throw new LunfsError('ENOENT', `the pool has no drive ${index} (drives 0-${this.pool.drives.length - 1})`);
      return index;
    }
    const index = this.pool.drives.findIndex((drive) => drive.path === name);
    if (index < 0) throw new LunfsError('ENOENT', `no drive of this pool is at ${name} (drives: ${this.pool.drives.map((drive) => drive.path).join(', ')})`);
    return index;
  }

  /** Pool state for status: failed (data lost), rebuilding, degraded (a drive out), or online. */
  poolState(): 'online' | 'degraded' | 'rebuilding' | 'failed' {
    if (this.pool.lostRstores().length > 0) return 'failed';
    const states = this.pool.metadata.drives.map((_, index) => this.pool.health.state(index));
    if (states.includes('failed')) return 'degraded';
    if (states.includes('rebuilding')) return 'rebuilding';
    return 'online';
  }

  /** LUNs with data on an RStore that runs without a member: one more failure there loses data. */
  lunsAtRisk(): string[] {
    return this.pool.lunsOn(this.pool.degradedRstores().map((rstore) => rstore.record.id));
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.monitor) clearInterval(this.monitor);
    this.pool.stopBackgroundWork();
    await this.jobs.settle();
    await this.followUp;
  }
}
