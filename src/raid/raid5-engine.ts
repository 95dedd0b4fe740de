// RAID-5 inside one RStore (seed 004 [0044], [0059]-[0062]): the engine RStore hands a RAID-5
// RStore's I/O to. It assembles the parts, one file each, and is their one entry point:
// - raid5-geometry.ts: where a row's data and rotating parity live (left-symmetric, as md);
// - raid5-members.ts: the members as MemberIo gives them, failure accounting, row unit writes;
// - raid5-read.ts: reads, reconstruction from the other members, repair of a bad checksum;
// - raid5-write.ts: the write strategies (full-stripe, reconstruct-write, data alone), with
//   raid5-read-modify-write.ts and the degraded-row log;
// - raid5-row-cache.ts: held rows and known rows (md's stripe cache), per RStore, within the
//   pool's Raid5Memory (raid5-memory.ts);
// - raid5-repair.ts: rebuild, row log replay, scrub and resync.
// Every access to a row that reads or changes parity holds the row's lock (one lock manager per
// RStore, shared by the parts).

import { ChunkLockManager } from '../util/chunk-locks.js';
import { Raid5Geometry } from './raid5-geometry.js';
import type { MemberIo } from './member-io.js';
import { Raid5Members } from './raid5-members.js';
import { Raid5Memory } from './raid5-memory.js';
import { Raid5Reader } from './raid5-read.js';
import { Raid5ReadModifyWrite } from './raid5-read-modify-write.js';
import { Raid5Repair } from './raid5-repair.js';
import { Raid5RowCache } from './raid5-row-cache.js';
import { Raid5Writer } from './raid5-write.js';
import type { RowScrubReport } from './scrub-report.js';

export class Raid5Engine {
  /** Every access to a row that reads or changes parity holds the row's lock. */
  private readonly rowLocks = new ChunkLockManager();
  private readonly rows: Raid5RowCache;
  private readonly reader: Raid5Reader;
  private readonly writer: Raid5Writer;
  private readonly repair: Raid5Repair;

  constructor(
    readonly memberCount: number,
    readonly stripeUnitBytes: number,
    io: MemberIo,
    /** The pool's; a layout outside a pool (tests) has its own. */
    memory: Raid5Memory = new Raid5Memory(),
  ) {
    const members = new Raid5Members(new Raid5Geometry(memberCount, stripeUnitBytes), io);
    // The row cache writes held rows through the writer, which writes through the cache: the one
    // cycle, closed here (the writer exists before any I/O calls this).
    this.rows = new Raid5RowCache(members, this.rowLocks, memory, {
      writeRowUncached: (row, pieces, data, reservation) =>
        this.writer.writeRowUncached(row, pieces, data, reservation),
    });
    this.reader = new Raid5Reader(members, this.rowLocks, this.rows);
    this.writer = new Raid5Writer(
      members,
      this.rowLocks,
      memory,
      this.rows,
      this.reader,
      new Raid5ReadModifyWrite(members, this.rows, memory),
    );
    this.repair = new Raid5Repair(members, this.rowLocks, this.rows, this.reader);
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    return this.reader.read(offsetBytes, target);
  }

  write(offsetBytes: number, data: Buffer): Promise<void> {
    return this.writer.write(offsetBytes, data);
  }

  /**
   * Writes back every held unit and pending parity (before the drives are flushed) and drops the
   * rows.
   */
  writeBackKnownRows(): Promise<void> {
    return this.rows.writeBackKnownRows();
  }

  /** Forgets every row without writing anything (the session was abandoned: a simulated crash). */
  discardKnownRows(): void {
    this.rows.discardKnownRows();
  }

  /** Whether a held unit or a parity is waiting to be written back. */
  get hasPendingParity(): boolean {
    return this.rows.hasPendingParity;
  }

  /**
   * Rebuild of member memberIndex for rows [firstRow, endRow) (see Raid5Repair); rebuilt(row) is
   * told under the row's lock, so a write waiting for the row sees the member in service.
   */
  rebuildRows(
    memberIndex: number,
    firstRow: number,
    endRow: number,
    rebuilt: (row: number) => void,
  ): Promise<void> {
    return this.repair.rebuildRows(memberIndex, firstRow, endRow, rebuilt);
  }

  /**
   * Replays a row log record after a power cut; false when nothing was written (see Raid5Repair).
   */
  replayRowLog(
    row: number,
    memberIndex: number,
    offsetInUnit: number,
    contents: Buffer,
  ): Promise<boolean> {
    return this.repair.replayRowLog(row, memberIndex, offsetInUnit, contents);
  }

  /** Recomputes the parity of rows [firstRow, endRow) after an unclean shutdown. */
  resyncRows(firstRow: number, endRow: number): Promise<void> {
    return this.repair.resyncRows(firstRow, endRow);
  }

  /** Scrub of rows [firstRow, endRow): checksums verified and repaired, parity made consistent. */
  scrubRows(
    firstRow: number,
    endRow: number,
    options: { trustData?: boolean } = {},
  ): Promise<RowScrubReport> {
    return this.repair.scrubRows(firstRow, endRow, options);
  }

  /** The first row in [firstRow, endRow) whose parity is not the XOR of its data (for tests). */
  firstInconsistentRow(firstRow: number, endRow: number): Promise<number | undefined> {
    return this.repair.firstInconsistentRow(firstRow, endRow);
  }
}
