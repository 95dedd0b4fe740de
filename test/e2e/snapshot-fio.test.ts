// Snapshots under a running write load, end to end, no mocks (and no fio: the load generator is
// snapshot-writer.mjs, a separate process writing random 4 KiB-block ranges to the LUN file through
// FUSE, 4 writes in flight, every block stamped with its block index, the write's sequence number
// and a sha256 of the block, every write journaled when issued and when completed).
// A pool of 4 sparse 1 GiB drives (RAID-0), a 256 MiB LUN; the writer works on a 32 MiB region.
// The first server runs with inline drive I/O (as on memory drives), so the writer's whole-page
// writes take the cache's write-through path; the server after the kill uses the thread pool.
// It proves:
//   1. 32 snapshots taken 100-300 ms apart while the writer runs (through the CLI and the control
//      socket, and with touch control/snapshot/LUN@NAME; one with --reserve) each hold, for every
//      block, exactly the last write of that block that completed before the snapshot command was
//      issued, or a write issued while the command ran, and never a write issued after it
//      returned; every block is wholly one write (its sha256 matches), never torn or mixed. This is
//      independent of timing: the bounds come from the writer's journal, read just before the
//      command and just after it returned;
//   2. the snapshots keep reading the same while the writer goes on (copy-on-write under load),
//      and the LUN itself ends with the last write of every block;
//   3. a snapshot taken during a second write load, followed at once by `kill -9` of the server
//      (copy-on-write in flight): after a mount in a new process it holds exactly what (1) allows,
//      all 32 earlier snapshots read byte for byte as before and are listed as valid with the same
//      epochs, and the LUN holds for each block at least what that last snapshot made durable (or
//      a later write of the second load), never a torn block.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { statSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { SnapshotStatus } from '../../src/volume/controller.js';
import { MiB, lunfsOk, runOk, sha256, sleep, useSandbox, type MountServer } from './support.js';
import {
  blockBytes,
  completedKind,
  headerBytes,
  issuedKind,
  journalRecordBytes,
  magic,
} from './snapshot-writer.mjs';

const writerScript = fileURLToPath(new URL('./snapshot-writer.mjs', import.meta.url));

const lunSize = 256 * MiB;
const regionOffset = 40 * MiB; // not at 0: offsets are translated right
const regionBlocks = 8192; // 32 MiB
const regionBytes = regionBlocks * blockBytes;
const maxBlocksPerWrite = 48; // up to 192 KiB: some writes cross 128 KiB chunk boundaries
const queueDepth = 4;
const snapshotCount = 32;
const reservedSnapshot = 5;

// ---------------------------------------------------------------------------------------------
// The writer process

class Writer {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;

  constructor(
    readonly lunFile: string,
    readonly journal: string,
    readonly runId: number,
  ) {
    this.child = spawn(
      process.execPath,
      [
        writerScript,
        lunFile,
        journal,
        String(runId),
        String(regionOffset),
        String(regionBlocks),
        String(maxBlocksPerWrite),
        String(queueDepth),
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.child.stdin!.on('error', () => undefined);
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        this.done = true;
        resolve({ code, signal });
      }),
    );
    liveWriters.add(this);
    void this.exited.then(() => liveWriters.delete(this));
  }

  get running(): boolean {
    return !this.done;
  }

  /** Bytes in the journal now: a cut through the writer's history (see the header). */
  journalBytes(): number {
    try {
      return statSync(this.journal).size;
    } catch {
      return 0;
    }
  }

  /** Waits until the writer has journaled `records` records; fails if it exits first. */
  async waitForRecords(records: number, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.journalBytes() < records * journalRecordBytes) {
      if (!this.running) throw new Error(`the writer exited early:\n${this.stderr}`);
      if (Date.now() > deadline)
        throw new Error(
          `the writer journaled only ${this.journalBytes() / journalRecordBytes} records in ${timeoutMs} ms`,
        );
      await sleep(20);
    }
  }

  /** Closes its stdin: it finishes the writes in flight and exits 0 with {issued, completed}. */
  async stop(): Promise<{ issued: number; completed: number }> {
    this.child.stdin!.end();
    const exit = await this.exited;
    if (exit.code !== 0)
      throw new Error(`the writer exited ${exit.code ?? exit.signal}:\n${this.stderr}`);
    return JSON.parse(this.stdout.trim()) as { issued: number; completed: number };
  }

  async kill(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }
}

const liveWriters = new Set<Writer>();
afterEach(async () => {
  for (const writer of [...liveWriters]) await writer.kill();
});

// ---------------------------------------------------------------------------------------------
// The journal and the checks

interface WriteRecord {
  seq: number;
  first: number;
  count: number;
  /** Journal byte offsets of its issued and completed records (Infinity: not (yet) completed). */
  issuedAt: number;
  completedAt: number;
}

/** The writer's history as its journal tells it. */
class History {
  /** By sequence number (index 0: a placeholder, 'zeros'). */
  readonly writes: WriteRecord[] = [{ seq: 0, first: 0, count: 0, issuedAt: -1, completedAt: -1 }];
  /** Per block of the region, the sequence numbers of the writes that wrote it, ascending. */
  readonly byBlock: number[][] = Array.from({ length: regionBlocks }, () => []);

  constructor(
    readonly runId: number,
    journal: Buffer,
  ) {
    const records = Math.floor(journal.length / journalRecordBytes);
    for (let index = 0; index < records; index += 1) {
      const at = index * journalRecordBytes;
      const kind = journal.readUInt32LE(at);
      const seq = journal.readUInt32LE(at + 4);
      const first = journal.readUInt32LE(at + 8);
      const count = journal.readUInt32LE(at + 12);
      if (kind === issuedKind) {
        if (seq !== this.writes.length)
          throw new Error(
            `journal record ${index}: issued #${seq} after #${this.writes.length - 1}`,
          );
        this.writes[seq] = { seq, first, count, issuedAt: at, completedAt: Infinity };
        for (let block = first; block < first + count; block += 1) this.byBlock[block]!.push(seq);
      } else if (kind === completedKind) {
        const write = this.writes[seq];
        if (!write || seq === 0 || write.first !== first || write.count !== count)
          throw new Error(`journal record ${index}: completion of #${seq} that was not issued so`);
        write.completedAt = at;
      } else {
        throw new Error(`journal record ${index}: unknown kind ${kind}`);
      }
    }
  }

  get issued(): number {
    return this.writes.length - 1;
  }

  /** The largest sequence number issued before journal offset `cut` (0 for none). */
  maxIssuedBefore(cut: number): number {
    let max = 0;
    for (let seq = 1; seq < this.writes.length; seq += 1)
      if (this.writes[seq]!.issuedAt < cut) max = seq;
    return max;
  }
}

/**
 * What a block holds: 0 for zeros (never written), a sequence number, or why it is no whole write.
 */
function parseBlock(block: Buffer, runId: number, blockIndex: number): number | string {
  if (block.every((byte) => byte === 0)) return 0;
  if (!block.subarray(0, magic.length).equals(magic))
    return 'no block header (garbage or data from elsewhere)';
  const hash = sha256(Buffer.concat([block.subarray(0, 32), block.subarray(headerBytes)]));
  if (hash !== block.subarray(32, 64).toString('hex'))
    return `torn or mixed: the sha256 over the block does not match its header (header says run ${block.readUInt32LE(8)}, block ${block.readUInt32LE(12)}, write #${block.readUInt32LE(16)})`;
  if (block.readUInt32LE(8) !== runId)
    return `written by another run (${block.readUInt32LE(8)}, expected ${runId})`;
  if (block.readUInt32LE(12) !== blockIndex)
    return `holds block ${block.readUInt32LE(12)} of write #${block.readUInt32LE(16)}: misplaced`;
  return block.readUInt32LE(16);
}

interface SnapshotCut {
  name: string;
  /** Journal size read just before the snapshot command and just after it returned. */
  before: number;
  after: number;
}

interface Verdict {
  problems: string[];
  /**
   * Blocks whose content was fully determined (no write in flight around the instant) and not
   * zeros.
   */
  determined: number;
}

/**
 * Checks a region image taken from a snapshot: for each block, the allowed writes are the last
 * write of the block completed before `cut.before` (or write #0 if none: zeros, or with `base`, the
 * last write of that earlier load) and the writes of the block issued after that one and before
 * `cut.after` (in flight around the snapshot instant).
 */
function verifySnapshot(
  image: Buffer,
  history: History,
  cut: SnapshotCut,
  base?: History,
): Verdict {
  const maxIssued = history.maxIssuedBefore(cut.after);
  const problems: string[] = [];
  let determined = 0;
  for (let block = 0; block < regionBlocks; block += 1) {
    const seqs = history.byBlock[block]!;
    let mustHave = 0; // the last write of the block completed before the snapshot command
    for (const seq of seqs) if (history.writes[seq]!.completedAt < cut.before) mustHave = seq;
    const mayHave = seqs.filter((seq) => seq > mustHave && seq <= maxIssued);
    const content = image.subarray(block * blockBytes, (block + 1) * blockBytes);
    let got = parseBlock(content, history.runId, block);
    if (base) {
      const previous = parseBlock(content, base.runId, block);
      const lastOfBase = base.byBlock[block]!.at(-1) ?? 0;
      if (previous === lastOfBase)
        got = 0; // what the block held before this load
      else if (got === 0) got = `zeros, but the earlier load left its write #${lastOfBase} here`;
    }
    const zero = base ? 'what the earlier load left' : 'zeros';
    const allowed = `write #${mustHave}${mustHave === 0 ? ` (${zero})` : ''} (the last one completed before the command)${mayHave.length > 0 ? ` or one in flight around it: #${mayHave.join(', #')}` : ''}`;
    if (typeof got === 'string') {
      problems.push(`${cut.name} block ${block}: ${got}; expected ${allowed}`);
    } else if (got !== mustHave && !mayHave.includes(got)) {
      const why =
        got > maxIssued
          ? `issued after the snapshot command returned (last issued before: #${maxIssued})`
          : got < mustHave
            ? 'older than a write that completed before the snapshot command'
            : seqs.includes(got)
              ? 'not allowed'
              : 'a write that never wrote this block';
      problems.push(`${cut.name} block ${block}: holds write #${got}, ${why}; expected ${allowed}`);
    } else if (mayHave.length === 0 && mustHave !== 0) {
      determined += 1;
    }
  }
  return { problems, determined };
}

async function readRegion(file: string): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const image = Buffer.alloc(regionBytes);
    const { bytesRead } = await handle.read(image, 0, regionBytes, regionOffset);
    if (bytesRead !== regionBytes)
      throw new Error(`${file}: short read of the region (${bytesRead} bytes)`);
    return image;
  } finally {
    await handle.close();
  }
}

function summarize(problems: string[]): string {
  return problems.length <= 20
    ? problems.join('\n')
    : `${problems.slice(0, 20).join('\n')}\n... and ${problems.length - 20} more`;
}

async function snapshotList(pool: string): Promise<SnapshotStatus[]> {
  return JSON.parse((await lunfsOk('snapshot', 'ls', pool, '--json')).stdout) as SnapshotStatus[];
}

function snapshotName(index: number): string {
  return `db@s${String(index).padStart(2, '0')}`;
}

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
}

// ---------------------------------------------------------------------------------------------

describe('snapshots under a running write load', () => {
  const sandbox = useSandbox('snap-load');

  it(`${snapshotCount} snapshots taken while a writer runs each hold exactly the writes completed before them, also after kill -9`, async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 4, driveSize: '1G', raid: 0 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', `${lunSize / MiB}M`);
    const mountpoint = box.path('mnt');
    const lunFile = join(mountpoint, 'luns', 'db');
    const snapshotFile = (index: number): string =>
      join(mountpoint, 'snapshots', snapshotName(index));
    // Drive I/O inline, as on memory drives: whole-page writes go through the write-through path.
    const first = await box.mount(pool, mountpoint, ['--drive-io', 'inline']);

    // ---- 32 snapshots while the writer runs
    const runId = randomInt(1, 2 ** 31);
    const writer = new Writer(lunFile, box.path('journal-1.bin'), runId);
    await writer.waitForRecords(4000);
    const cuts: SnapshotCut[] = [];
    for (let index = 0; index < snapshotCount; index += 1) {
      const name = snapshotName(index);
      const before = writer.journalBytes();
      if (index % 2 === 1)
        await lunfsOk('snapshot', pool, name, ...(index === reservedSnapshot ? ['--reserve'] : []));
      else await runOk('touch', [join(mountpoint, 'control', 'snapshot', name)]);
      const after = writer.journalBytes();
      cuts.push({ name, before, after });
      expect(writer.running, `the writer died during the snapshots:\n${writer.stderr}`).toBe(true);
      await sleep(100 + randomInt(200));
    }

    // ---- verify every snapshot while the writer goes on writing (copy-on-write under load)
    const history = new History(runId, await readFile(writer.journal));
    const problems: string[] = [];
    const regionHashes: string[] = [];
    let determined = 0;
    for (let index = 0; index < snapshotCount; index += 1) {
      const image = await readRegion(snapshotFile(index));
      regionHashes.push(sha256(image));
      const verdict = verifySnapshot(image, history, cuts[index]!);
      problems.push(...verdict.problems);
      determined += verdict.determined;
    }
    const windows = cuts.map(
      (cut) => history.maxIssuedBefore(cut.after) - history.maxIssuedBefore(cut.before),
    );
    console.info(
      `snapshot load: ${history.issued} writes journaled at verification; ${determined} of ${snapshotCount * regionBlocks} snapshot blocks fully determined; writes issued while a snapshot command ran: ${windows.join(' ')}`,
    );
    expect(
      problems.length,
      `blocks of the snapshots that are not what the writer's journal allows:\n${summarize(problems)}`,
    ).toBe(0);
    // Not vacuous: many blocks had exactly one possible content (typically half of them; the rest
    // were written while a snapshot command ran).
    expect(determined, 'blocks whose snapshot content was fully determined').toBeGreaterThan(
      regionBlocks,
    );
    // Outside the region the LUN was never written: the oldest snapshot reads zeros there.
    const whole = await readFile(snapshotFile(0));
    expect(whole.length).toBe(lunSize);
    const outside = Buffer.concat([
      whole.subarray(0, regionOffset),
      whole.subarray(regionOffset + regionBytes),
    ]);
    expect(
      outside.every((byte) => byte === 0),
      `${snapshotName(0)} outside the written region is zeros`,
    ).toBe(true);

    // ---- stop the writer: the LUN holds the last write of every block
    const counts = await writer.stop();
    expect(counts.completed).toBe(counts.issued);
    const finalHistory = new History(runId, await readFile(writer.journal));
    expect(finalHistory.issued).toBe(counts.issued);
    const lunProblems = verifySnapshot(await readRegion(lunFile), finalHistory, {
      name: 'the LUN after the writer stopped',
      before: Infinity,
      after: Infinity,
    }).problems;
    expect(
      lunProblems.length,
      `LUN blocks that are not the last write:\n${summarize(lunProblems)}`,
    ).toBe(0);
    const flush = await open(lunFile, 'r+');
    await flush.datasync(); // the LUN's last writes are durable from here on
    await flush.close();

    const status = JSON.parse(await readFile(join(mountpoint, 'control', 'status'), 'utf8')) as {
      cache: { writtenThroughBytes: number };
    };
    expect(
      status.cache.writtenThroughBytes,
      'whole-page writes took the write-through path',
    ).toBeGreaterThan(0);

    const listed = await snapshotList(pool);
    expect(
      listed.map((entry) => [entry.name, entry.state, entry.sizeBytes, entry.reserved]),
    ).toEqual(cuts.map((cut, index) => [cut.name, 'valid', lunSize, index === reservedSnapshot]));
    const epochs = listed.map((entry) => entry.epoch);
    expect(
      epochs.every((epoch, index) => index === 0 || epoch > epochs[index - 1]!),
      `epochs rise in the order the snapshots were taken: ${epochs.join(' ')}`,
    ).toBe(true);
    expect(
      listed.reduce((sum, entry) => sum + entry.exclusiveBytes + entry.sharedBytes, 0),
      'the snapshots hold preserved data',
    ).toBeGreaterThan(0);

    // ---- a second load, one more snapshot in it, and kill -9 right after (copy-on-write in
    // flight)
    const secondRunId = runId === 1 ? 2 : runId - 1;
    const second = new Writer(lunFile, box.path('journal-2.bin'), secondRunId);
    await second.waitForRecords(4000);
    const lastName = 'db@under-load';
    const lastBefore = second.journalBytes();
    await runOk('touch', [join(mountpoint, 'control', 'snapshot', lastName)]);
    const lastCut: SnapshotCut = {
      name: lastName,
      before: lastBefore,
      after: second.journalBytes(),
    };
    await sleep(randomInt(200));
    await first.kill();
    await second.exited; // its next write fails: the server is gone
    const secondHistory = new History(secondRunId, await readFile(second.journal));
    expect(secondHistory.issued).toBeGreaterThan(0);

    const server = await box.mount(pool, mountpoint);
    expect(server.pid).not.toBe(first.pid);
    const relisted = await snapshotList(pool);
    const identity = (entry: SnapshotStatus): unknown[] => [
      entry.name,
      entry.state,
      entry.sizeBytes,
      entry.createdAt,
      entry.epoch,
      entry.reserved,
      entry.reservedBytes,
    ];
    expect(relisted.slice(0, snapshotCount).map(identity), 'the snapshots after kill -9').toEqual(
      listed.map(identity),
    );
    expect(
      relisted.slice(snapshotCount).map((entry) => [entry.name, entry.state]),
      'the snapshot taken right before kill -9',
    ).toEqual([[lastName, 'valid']]);
    const afterKill: string[] = [];
    for (let index = 0; index < snapshotCount; index += 1) {
      const image = await readRegion(snapshotFile(index));
      const verdict = verifySnapshot(image, history, cuts[index]!);
      afterKill.push(...verdict.problems);
      if (sha256(image) !== regionHashes[index])
        afterKill.push(
          `${cuts[index]!.name}: the region reads differently than before the kill -9`,
        );
    }
    // The snapshot taken under the second load, moments before the kill: durable and exact.
    afterKill.push(
      ...verifySnapshot(
        await readRegion(join(mountpoint, 'snapshots', lastName)),
        secondHistory,
        lastCut,
        finalHistory,
      ).problems,
    );
    expect(
      afterKill.length,
      `snapshots after kill -9 and a remount:\n${summarize(afterKill)}`,
    ).toBe(0);

    // The LUN: per block, at least what the last snapshot made durable (the last write of the
    // second load completed before it, else the first load's last write, flushed), or any later
    // write of the second load; never a torn block.
    const lunAfterKill = verifySnapshot(
      await readRegion(lunFile),
      secondHistory,
      { name: 'the LUN after kill -9', before: lastCut.before, after: Infinity },
      finalHistory,
    ).problems;
    expect(lunAfterKill.length, `LUN blocks after kill -9:\n${summarize(lunAfterKill)}`).toBe(0);
    await expectCleanStop(server);
  }, 240_000);
});
