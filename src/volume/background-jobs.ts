// Long jobs of a mounted pool (a rebuild onto a replacement drive, a scrub): each runs in the
// background while I/O goes on, and reports its progress in control/status and `lunfs status`,
// where the CLI's progress bar reads it. At most one job per kind runs at a time.

import { bgcopyBusyShare } from '../util/constants.js';
import { LunfsError } from '../util/errors.js';
import type { Clock } from '../util/clock.js';
import type { JobPacer } from './job-pacer.js';

export type JobKind = 'rebuild' | 'scrub' | 'bgcopy';

export interface JobStatus {
  id: number;
  kind: JobKind;
  /** For a rebuild: the drive index being rebuilt. */
  drive?: number;
  /** For a BGCOPY: the snapclone it fills. */
  lun?: string;
  state: 'running' | 'done' | 'failed';
  doneBytes: number;
  totalBytes: number;
  /** doneBytes / totalBytes, 0..1. */
  progress: number;
  startedAt: string;
  finishedAt?: string;
  error?: string;
  /** What the job found (scrub: its report). */
  result?: unknown;
  /** Milliseconds the job paused so far to leave the time to foreground I/O (job-pacer.ts). */
  pausedMs: number;
}

export class BackgroundJobs {
  private readonly jobs: JobStatus[] = [];
  private readonly running = new Map<number, Promise<void>>();
  private nextId = 1;

  constructor(
    private readonly clock: Clock,
    /** Paces the jobs while the pool serves I/O (job-pacer.ts); none: full speed always. */
    private readonly pacer?: JobPacer,
  ) {}

  /**
   * Starts task in the background; progress(bytes) adds to doneBytes, and the task awaits what it
   * returns (the pacer's step: a turn of the event loop, a pause while the foreground is busy).
   */
  start(
    kind: JobKind,
    totalBytes: number,
    extra: { drive?: number; lun?: string },
    task: (progress: (bytes: number) => void | Promise<void>) => Promise<unknown>,
  ): JobStatus {
    // one per kind (one BGCOPY per clone)
    if (
      this.jobs.some((job) => job.kind === kind && job.state === 'running' && job.lun === extra.lun)
    )
      throw new LunfsError('EBUSY', `a ${kind} is running already`);
    const job: JobStatus = {
      id: this.nextId++,
      kind,
      ...extra,
      state: 'running',
      doneBytes: 0,
      totalBytes,
      progress: totalBytes === 0 ? 1 : 0,
      pausedMs: 0,
      startedAt: new Date(this.clock.nowMs()).toISOString(),
    };
    this.jobs.push(job);
    this.pacer?.jobStarted();
    const progress = (bytes: number): void | Promise<void> => {
      job.doneBytes = Math.min(job.totalBytes, job.doneBytes + bytes);
      job.progress = job.totalBytes === 0 ? 1 : Number((job.doneBytes / job.totalBytes).toFixed(4));
      if (!this.pacer) return;
      const sleptBefore = this.pacer.sleptMs;
      return this.pacer.step(kind === 'bgcopy' ? bgcopyBusyShare : undefined).then(() => {
        job.pausedMs += this.pacer!.sleptMs - sleptBefore;
      });
    };
    const run = (async () => {
      try {
        job.result = await task(progress);
        job.state = 'done';
        job.doneBytes = job.totalBytes;
        job.progress = 1;
      } catch (error) {
        job.state = 'failed';
        job.error = (error as Error).message;
      } finally {
        job.finishedAt = new Date(this.clock.nowMs()).toISOString();
        this.running.delete(job.id);
      }
    })();
    this.running.set(job.id, run);
    return job;
  }

  /** Resolves when the job has ended; its status says how. */
  async wait(jobId: number): Promise<JobStatus> {
    await this.running.get(jobId);
    const job = this.jobs.find((candidate) => candidate.id === jobId);
    if (!job) throw new LunfsError('ENOENT', `no job ${jobId}`);
    return job;
  }

  /** Waits for every running job (at close). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }

  list(): JobStatus[] {
    return this.jobs.map((job) => ({ ...job }));
  }

  get busy(): boolean {
    return this.running.size > 0;
  }
}
