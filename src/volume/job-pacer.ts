// The pace of background jobs (rebuild, scrub) while the pool serves I/O (issue 14: the
// foreground keeps at least 0.7x of its idle speed). A job calls step() after each unit of work
// (a stripe unit of an RStore), outside any lock. Each step yields one turn of the event loop, so
// a request that arrived meanwhile is served before the next unit (on drives served inline a
// unit's reads and writes run on the JavaScript thread). While foreground requests are coming
// (some in the last quietMs), the job also sleeps, so that it takes about busyShare of the time:
// after each stretch of workWindowMs of its own work, it sleeps (1 - busyShare) / busyShare times
// as long. An idle pool rebuilds and scrubs at full speed.

import type { Clock } from '../util/clock.js';

/** The longest single pause (a 5 ms stretch at a 10 % share pauses 45 ms). */
const maxPauseMs = 100;

export interface JobPacerSettings {
  clock: Clock;
  /** A count that grows with every foreground read and write (LUNs and snapshots). */
  foregroundOps: () => number;
  /** The share of the time a job may take while the foreground is busy (0 < share <= 1). */
  busyShare?: number;
  /** The foreground counts as busy this long after its last request. */
  quietMs?: number;
  /** A job's own work is measured in stretches of about this long. */
  workWindowMs?: number;
  /** How a job waits (a simulation passes its own). */
  sleep?: (ms: number) => Promise<void>;
}

export class JobPacer {
  private readonly busyShare: number;
  private readonly quietMs: number;
  private readonly workWindowMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private lastOps: number;
  private lastBusyAtMs = Number.NEGATIVE_INFINITY;
  private windowStartMs: number | undefined;
  /** Milliseconds slept so far (for status and tests). */
  sleptMs = 0;

  constructor(private readonly settings: JobPacerSettings) {
    this.busyShare = settings.busyShare ?? 0.1;
    this.quietMs = settings.quietMs ?? 200;
    this.workWindowMs = settings.workWindowMs ?? 5;
    this.sleep =
      settings.sleep ?? ((ms) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
    this.lastOps = settings.foregroundOps();
  }

  /**
   * A job starts: I/O counted before now is old (the count says how much, not when), so it must
   * not make the job's first steps sleep as if the foreground were busy.
   */
  jobStarted(): void {
    this.lastOps = this.settings.foregroundOps();
  }

  /**
   * After a unit of a job's work: yields, and sleeps while the foreground is busy, so that the job
   * takes about busyShare of the time (the pacer's own share unless given).
   */
  async step(busyShare = this.busyShare): Promise<void> {
    const nowMs = this.settings.clock.nowMs();
    this.windowStartMs ??= nowMs;
    const ops = this.settings.foregroundOps();
    if (ops !== this.lastOps) {
      this.lastOps = ops;
      this.lastBusyAtMs = nowMs;
    }
    const workedMs = nowMs - this.windowStartMs;
    if (nowMs - this.lastBusyAtMs < this.quietMs && workedMs >= this.workWindowMs) {
      // At most maxPauseMs: a long stretch (the process was stopped, or a simulated clock
      // jumped) is not paid back all at once.
      const pauseMs = Math.min(maxPauseMs, Math.ceil((workedMs * (1 - busyShare)) / busyShare));
      this.sleptMs += pauseMs;
      await this.sleep(pauseMs);
      this.windowStartMs = this.settings.clock.nowMs();
      return;
    }
    if (workedMs >= this.workWindowMs) this.windowStartMs = nowMs;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
