// The degraded-row log on its own (src/raid/row-log.ts), on MemoryDrives as its copies: records
// are durable once append returns, come back at open in order from any copy that holds them
// whole, are gone once cleared by the watermark, and never overwrite a record not yet cleared:
// with the ring full, reserve waits for a flush of the data (which clears what is done).

import { describe, expect, it } from 'vitest';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import {
  DegradedRowLog,
  rowLogBytesFor,
  type RowLogCopy,
  type RowLogEntry,
} from '../../src/raid/row-log.js';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { patternBytes } from '../support/bytes.js';
import { SessionDrive } from '../support/session-drive.js';

const offsetBytes = 64 * KiB;
const unitBytes = 4 * KiB;
const areaBytes = rowLogBytesFor(unitBytes, MiB); // 4 records of a 4 KiB unit on so small a drive

function copiesOf(drives: MemoryDrive[]): RowLogCopy[] {
  return drives.map((drive, driveIndex) => ({ drive, driveIndex }));
}

function entry(row: number, seed: number, blocks = 1): RowLogEntry {
  return {
    rstoreId: 7,
    row,
    memberIndex: row % 3,
    offsetInUnit: 0,
    data: patternBytes(blocks * 4096, seed),
  };
}

async function reopen(
  drives: MemoryDrive[],
  flushData: () => Promise<void> = async () => {},
): Promise<{ rowLog: DegradedRowLog; entries: RowLogEntry[] }> {
  const random = new SeededRandom(1);
  for (const drive of drives) drive.crash(random); // everything was flushed: nothing to lose
  return DegradedRowLog.open(copiesOf(drives), offsetBytes, areaBytes, silentLogger(), flushData);
}

describe('degraded-row log', () => {
  it('keeps records across a power cut, in order, until the watermark clears them', async () => {
    const drives = [new MemoryDrive('a', MiB), new MemoryDrive('b', MiB)];
    await DegradedRowLog.format(copiesOf(drives), offsetBytes, areaBytes);
    let { rowLog, entries } = await reopen(drives);
    expect(entries).toEqual([]);
    const written = [entry(1, 11), entry(2, 12), entry(3, 13)];
    const seqs: number[] = [];
    for (const record of written) {
      const release = rowLog.tryReserve(record.data.length)!;
      seqs.push(await rowLog.append(record));
      release();
    }
    ({ rowLog, entries } = await reopen(drives));
    expect(entries).toEqual(written);
    // The first two are done; a flush that starts now clears them, not the third.
    const again: number[] = [];
    for (const record of written) {
      const release = rowLog.tryReserve(record.data.length)!;
      again.push(await rowLog.append(record));
      release();
    }
    expect(again[0]).toBeGreaterThan(seqs[2]!); // sequence numbers go on across sessions
    rowLog.done(again[0]!);
    rowLog.done(again[2]!); // done, but behind one that is not: not clearable yet
    rowLog.done(again[1]!);
    const mark = rowLog.clearableSeq();
    expect(mark).toBe(again[2]);
    rowLog.done(again[2]!);
    await rowLog.clearThrough(again[1]!);
    ({ entries } = await reopen(drives));
    expect(entries).toEqual([written[2]]);
  });

  it('takes a record from any copy that holds it whole, and none that no copy does', async () => {
    const drives = [new MemoryDrive('a', MiB), new MemoryDrive('b', MiB)];
    await DegradedRowLog.format(copiesOf(drives), offsetBytes, areaBytes);
    const { rowLog } = await reopen(drives);
    const record = entry(4, 41);
    await rowLog.append(record);
    const dataOffset = offsetBytes + 2 * 4096 + 4096 + 100; // the first record's data
    drives[0]!.flipBit(dataOffset, 3);
    expect((await reopen(drives)).entries).toEqual([record]);
    drives[1]!.flipBit(dataOffset, 5);
    expect((await reopen(drives)).entries).toEqual([]);
  });

  it('with the ring full, waits for a flush, never writes over a record not cleared, and wraps', async () => {
    const drives = [new MemoryDrive('a', MiB)];
    await DegradedRowLog.format(copiesOf(drives), offsetBytes, areaBytes);
    let flushes = 0;
    const holder: { rowLog?: DegradedRowLog } = {};
    const flushData = async (): Promise<void> => {
      flushes += 1;
      await holder.rowLog!.clearThrough(holder.rowLog!.clearableSeq());
    };
    const { rowLog } = await reopen(drives, flushData);
    holder.rowLog = rowLog;
    const all: RowLogEntry[] = [];
    const live: number[] = [];
    for (let index = 0; index < 11; index += 1) {
      const record = entry(index, 100 + index, 1 + (index % 2)); // 8 or 12 KiB in the ring
      const release = await rowLog.reserve(record.data.length);
      const seq = await rowLog.append(record);
      release();
      all.push(record);
      live.push(seq);
      // Records stay in flight a while: the oldest is done only once three are written.
      if (live.length > 2) rowLog.done(live.shift()!);
    }
    expect(flushes).toBeGreaterThan(0);
    (await rowLog.reserve(4096))(); // room again once a flush cleared what is done
    // At a power cut now, exactly the records not cleared come back: the last ones, intact.
    const { entries } = await reopen(drives);
    expect(entries.length).toBeGreaterThanOrEqual(2);
    expect(entries).toEqual(all.slice(all.length - entries.length));
  });

  it('a copy added while a batch is being written leaves the batch durable on the copies it was written to', async () => {
    const drives = [
      new MemoryDrive('a', MiB),
      new MemoryDrive('b', MiB),
      new MemoryDrive('c', MiB),
    ];
    await DegradedRowLog.format(copiesOf(drives.slice(0, 2)), offsetBytes, areaBytes);
    const views = drives.map((drive) => new SessionDrive(drive));
    const { rowLog } = await DegradedRowLog.open(
      views.slice(0, 2).map((drive, driveIndex) => ({ drive, driveIndex })),
      offsetBytes,
      areaBytes,
      silentLogger(),
      async () => {},
    );
    views[0]!.holdFlushes(); // the batch waits in its flush of copy a
    const record = entry(5, 51);
    const appended = rowLog.append(record);
    for (let turn = 0; turn < 20; turn += 1) await Promise.resolve();
    await rowLog.addCopy({ drive: views[2]!, driveIndex: 2 }); // the pool places a copy meanwhile
    views[0]!.releaseFlushes();
    expect(await appended).toBeGreaterThan(0);
    expect((await reopen(drives.slice(0, 1))).entries).toEqual([record]);
    expect((await reopen(drives.slice(1, 2))).entries).toEqual([record]);
    // The next record goes to all three.
    const next = entry(6, 61);
    await rowLog.append(next);
    expect((await reopen(drives.slice(2))).entries).toEqual([next]);
  });
});
