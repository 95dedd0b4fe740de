// Which drives of a pool may be read and written (seed 004 [0044]: an RStore keeps its data while
// a drive of its redundancy set is lost). The pool owns one DriveHealth; every RStore asks it
// before touching a member and tells it when a member fails or returns corrupt data.
//
// A drive is 'online', 'failed' (never read or written again: after it failed its contents are
// stale) or 'rebuilding' (a replacement: written like an online drive, but read only below the
// rebuild's watermark in each RStore, where its contents have been reconstructed). The durable
// state lives in the pool metadata (DriveRecord.state); this class is its run-time view, and the
// pool's onFailure hook makes a new failure durable with the next commit.

import type { DriveRecord, DriveState } from '../meta/pool-metadata.js';
import { driveStateOf } from '../meta/pool-metadata.js';

/** Counts of what the data checksums found, since the pool was opened. */
export interface IntegrityCounters {
  /** Member reads (a stripe unit or less) that met data not matching its checksum. */
  checksumMismatches: number;
  /** Member ranges rewritten from redundancy after a mismatch (on read or by scrub). */
  repairs: number;
  /** Reads that failed with EIO because no redundancy was left to repair from. */
  unrepairable: number;
  /** RAID-5 rows whose parity scrub or resync found wrong and rewrote. */
  parityRepairs: number;
  /**
   * Drive labels found damaged at open and rewritten from a good one (src/meta/drive-labels.ts).
   */
  labelRepairs: number;
}

export class DriveHealth {
  readonly integrity: IntegrityCounters = {
    checksumMismatches: 0,
    repairs: 0,
    unrepairable: 0,
    parityRepairs: 0,
    labelRepairs: 0,
  };
  /**
   * Per RStore id: member bytes already rebuilt on the rebuilding drive (reads below it are
   * served).
   */
  private readonly rebuiltBytes = new Map<number, number>();

  constructor(
    private readonly drives: ReadonlyArray<DriveRecord>,
    /**
     * Called once when a drive first fails (the pool records it durably and logs it); absent: it
     * left, no I/O failed.
     */
    private readonly onFailure: (driveIndex: number, reason: string, absent: boolean) => void,
    /**
     * Called when a write meant for a drive's member of an RStore did not reach it (the pool
     * records it).
     */
    private readonly onMissedWrite: (driveIndex: number, rstoreId: number) => void = () => {},
  ) {}

  state(driveIndex: number): DriveState {
    return driveStateOf(this.drives[driveIndex]!);
  }

  /**
   * Whether the member on driveIndex may be read over [memberOffsetBytes, + lengthBytes) inside
   * RStore rstoreId.
   */
  readable(
    driveIndex: number,
    rstoreId: number,
    memberOffsetBytes: number,
    lengthBytes = 1,
  ): boolean {
    const state = this.state(driveIndex);
    if (state === 'online') return true;
    if (state === 'failed') return false;
    // all of it rebuilt
    return memberOffsetBytes + Math.max(1, lengthBytes) <= (this.rebuiltBytes.get(rstoreId) ?? 0);
  }

  writable(driveIndex: number): boolean {
    return this.state(driveIndex) !== 'failed';
  }

  /**
   * A drive returned an I/O error (not a checksum mismatch), or is absent (its file is gone, or it
   * was missing at open): it leaves service now.
   */
  fail(driveIndex: number, error: unknown, options: { absent?: boolean } = {}): void {
    if (this.state(driveIndex) === 'failed') return;
    const reason = error instanceof Error ? error.message : String(error);
    this.onFailure(driveIndex, reason, options.absent === true);
  }

  /**
   * A write meant for the member of RStore rstoreId on driveIndex did not reach it (or may not
   * have).
   */
  missedWrite(driveIndex: number, rstoreId: number): void {
    this.onMissedWrite(driveIndex, rstoreId);
  }

  /** The rebuild reached memberOffsetBytes in an RStore (monotonic while it runs). */
  setRebuilt(rstoreId: number, memberOffsetBytes: number): void {
    this.rebuiltBytes.set(rstoreId, memberOffsetBytes);
  }

  /** The rebuild finished or was abandoned: forget the watermarks. */
  clearRebuilt(): void {
    this.rebuiltBytes.clear();
  }

  failedDrives(): number[] {
    return this.drives.flatMap((_, index) => (this.state(index) === 'failed' ? [index] : []));
  }
}
