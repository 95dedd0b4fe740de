// Drive failures end to end, no mocks: real `lunfs mount` processes, FUSE, loop devices, ext4 and
// fio, pools of sparse file drives in the sandbox's tmp directory. It proves (issue 4):
//   1. RAID-5 (4 drives, one redundancy set): with fio writing through ext4, a drive file is
//      deleted; the writer sees no error, new files can be written (new space for the thin LUN),
//      and the status shows the pool degraded, the drive failed and the LUN at risk.
//      `lunfs drive replace` rebuilds onto a new path while fio keeps going, draws its progress bar
//      on stderr (run under a pseudo-terminal: cli-progress draws nothing on a pipe) and exits 0
//      when done (status online, the job done with progress 1, three good metadata copies,
//      pool.json naming the new drive); then another drive of the same set is deleted: still no
//      error. Every file reads back by sha256, every fio block by its crc32c header, in the same
//      mount and after a stop and a mount in a new process that finds the drive missing (mounted
//      degraded); `fsck.ext4 -fn` checks clean in both;
//   2. a degraded pool goes on taking writes that need new space (parts of a thin LUN never written
//      before), for RAID-1 and RAID-5;
//   3. RAID-1: kill -9 of the server, a drive file deleted, a new mount: it mounts degraded, ext4
//      replays its journal, every synced file is there, new files can be written; the missing
//      drive, named by its path, is replaced with ext4 mounted; fsck is clean, the files read back.
//      A RAID-0 pool with a drive gone, and a RAID-5 pool with two gone, refuse to mount with a
//      message naming the drives and the LUN with data on them: exit non-zero, nothing mounted;
//   4. bits flipped in one drive file of a RAID-5 pool (50 of them, each in its own 4 KiB block of
//      the PSEG area that holds data or parity) are found by the per-block crc32c on read and
//      repaired from redundancy: the LUN reads back byte for byte and the status counts mismatches
//      and repairs, nothing unrepairable. More flips, made while the pool is mounted, are found by
//      `lunfs scrub --json` through the mount; a second scrub finds nothing; flips in another drive
//      of the unmounted pool are repaired by an offline scrub, and the LUN still reads the same.
//
// fio overwrites files laid out before the first failure (so that every block carries a verify
// header); the writes that need new space while degraded are the new files of (1), ext4's lazy
// inode table initialisation running in the background, and (2).

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeDriveHeader } from '../../src/meta/drive-header.js';
import type { StatusJson } from '../../src/volume/controller.js';
import type { ScrubReport } from '../../src/pool/pool-drives.js';
import {
  MiB,
  lunfs,
  lunfsBin,
  lunfsOk,
  mountEntriesAt,
  run,
  runOk,
  sha256File,
  sleep,
  statusJson,
  treeChecksums,
  useSandbox,
  writeRandomFile,
  type LoopDevice,
  type MountServer,
  type Sandbox,
} from './support.js';

const blockBytes = 4096;

// ---------------------------------------------------------------------------------------------
// Pools and status

/**
 * `lunfs pool create DIR --drives N --drive-size SIZE --raid R` in the sandbox; the pool directory.
 */
async function createPool(
  box: Sandbox,
  name: string,
  raid: 0 | 1 | 5,
  drives: number,
  driveSize: string,
): Promise<string> {
  const directory = box.path(name);
  await lunfsOk(
    'pool',
    'create',
    directory,
    '--drives',
    String(drives),
    '--drive-size',
    driveSize,
    '--raid',
    String(raid),
  );
  return directory;
}

function driveFile(pool: string, index: number): string {
  return join(pool, `drive-${index}.img`);
}

/** Polls `lunfs status --json` until `ready` holds (the mount checks its drives every 500 ms). */
async function waitForStatus(
  pool: string,
  what: string,
  ready: (status: StatusJson) => boolean,
  timeoutMs = 15_000,
): Promise<StatusJson> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await statusJson(pool);
    if (ready(status)) return status;
    if (Date.now() > deadline)
      throw new Error(
        `status did not show ${what} within ${timeoutMs} ms:\n${JSON.stringify({ pool: status.pool, drives: status.drives, jobs: status.jobs }, null, 2)}`,
      );
    await sleep(200);
  }
}

/** The drive paths pool.json records, resolved against the pool directory. */
async function recordedDrives(pool: string): Promise<string[]> {
  const recorded = JSON.parse(await readFile(join(pool, 'pool.json'), 'utf8')) as {
    drives: string[];
  };
  return recorded.drives.map((path) => resolve(pool, path));
}

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
  expect(server.stdout).toContain('unmounted cleanly');
  expect(await mountEntriesAt(server.mountpoint)).toEqual([]);
}

/** The good metadata copies, by drive index: each on a drive in service. */
function goodCopies(status: StatusJson): number[] {
  return status.drives
    .filter(
      (drive) =>
        drive.holdsMetadataCopy && drive.metadataCopy === 'good' && drive.state === 'online',
    )
    .map((drive) => drive.index);
}

/**
 * `lunfs ARGS` with its stderr on a pseudo-terminal (script(1)), where cli-progress draws its bar,
 * and its stdout to a file. Returns the exit code, the stdout and what the terminal showed, with
 * the escape sequences taken out.
 */
async function lunfsOnTerminal(
  box: Sandbox,
  name: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; terminal: string }> {
  const stdoutFile = box.path(`${name}.stdout`);
  const quote = (arg: string): string => `'${arg.replace(/'/g, `'\\''`)}'`;
  const line = `${[process.execPath, lunfsBin, ...args].map(quote).join(' ')} > ${quote(stdoutFile)}`;
  const result = await run('script', ['-qec', line, '/dev/null'], { timeoutMs: 120_000 });
  // eslint-disable-next-line no-control-regex -- the terminal's escape sequences are what it strips
  const terminal = (result.stdout + result.stderr).replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '');
  return {
    code: result.code,
    stdout: await readFile(stdoutFile, 'utf8').catch(() => ''),
    terminal,
  };
}

/**
 * Writes `data` at `offset` of a file and fdatasyncs it (the LUN file through FUSE). A short write
 * is continued, as a writer would: the error that cut it short (ENOSPC, say) then surfaces.
 */
async function writeAt(file: string, offset: number, data: Buffer): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    for (let done = 0; done < data.length;) {
      const { bytesWritten } = await handle.write(data, done, data.length - done, offset + done);
      if (bytesWritten === 0)
        throw new Error(
          `${file}: write of ${data.length - done} bytes at ${offset + done} wrote nothing`,
        );
      done += bytesWritten;
    }
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
    expect(bytesRead, `read of ${length} bytes at ${offset} of ${file}`).toBe(length);
    return buffer;
  } finally {
    await handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// ext4 helpers

async function expectFsckClean(box: Sandbox, loop: LoopDevice, when: string): Promise<void> {
  const fsck = await box.fsckExt4(loop);
  expect(fsck.code, `fsck.ext4 -fn ${when}:\n${fsck.stdout}${fsck.stderr}`).toBe(0);
}

// ---------------------------------------------------------------------------------------------
// The fio writer: back-to-back fio runs of 4 KiB random direct writes over files laid out before,
// each block carrying fio's crc32c verify header (checked as it goes with verify_backlog, and at
// the end by a read pass). One run lasts `runSeconds`; the load ends after the run in progress.

interface FioRun {
  index: number;
  startedAt: number;
  endedAt: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** fio's per-job error (0: none), from its JSON output. */
  jobError: number | undefined;
  writtenBytes: number;
  stderr: string;
}

// verify_state_save=0: no <job>-verify.state files left in the working directory.
const fioBlock = [
  '--bs=4k',
  '--verify=crc32c',
  '--verify_fatal=1',
  '--verify_dump=0',
  '--verify_state_save=0',
];

function fioFiles(files: string[], fileBytes: number): string[] {
  return [`--filename=${files.join(':')}`, `--filesize=${fileBytes}`];
}

/** Writes every block of the files once, sequentially, with verify headers; then verifies them. */
async function fioLayout(files: string[], fileBytes: number): Promise<void> {
  await runOk(
    'fio',
    [
      '--name=layout',
      ...fioFiles(files, fileBytes),
      ...fioBlock,
      '--rw=write',
      '--fallocate=none',
      '--do_verify=1',
      '--end_fsync=1',
      '--ioengine=psync',
      '--output=/dev/null',
    ],
    { timeoutMs: 120_000 },
  );
}

/**
 * Reads every block with O_DIRECT and checks its verify header (crc32c, offset): exit 0 = all good.
 */
async function fioVerify(files: string[], fileBytes: number, when: string): Promise<void> {
  const result = await run(
    'fio',
    [
      '--name=check',
      ...fioFiles(files, fileBytes),
      ...fioBlock,
      '--rw=read',
      '--direct=1',
      '--ioengine=psync',
      '--output-format=terse',
    ],
    { timeoutMs: 120_000 },
  );
  expect(result.code, `fio read verification ${when}:\n${result.stderr}`).toBe(0);
}

const liveLoads = new Set<FioLoad>();

class FioLoad {
  readonly runs: FioRun[] = [];
  private child: ChildProcess | undefined;
  private stopping = false;
  readonly done: Promise<void>;

  constructor(
    readonly files: string[],
    readonly fileBytes: number,
    readonly runSeconds = 2,
  ) {
    liveLoads.add(this);
    this.done = this.loop().finally(() => liveLoads.delete(this));
  }

  private async loop(): Promise<void> {
    for (let index = 0; !this.stopping; index += 1) {
      const result = await this.runOnce(index);
      this.runs.push(result);
      if (this.problemOf(result) !== undefined) return; // a failed run ends the load
    }
  }

  private runOnce(index: number): Promise<FioRun> {
    const args = [
      `--name=load${index}`,
      ...fioFiles(this.files, this.fileBytes),
      ...fioBlock,
      '--rw=randwrite',
      '--direct=1',
      '--ioengine=psync',
      '--fsync=32',
      '--end_fsync=1',
      '--verify_backlog=128',
      '--time_based',
      `--runtime=${this.runSeconds}`,
      '--output-format=json',
    ];
    const startedAt = Date.now();
    return new Promise((resolveRun) => {
      const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.on('error', (error) => {
        stderr += `\n[spawn failed: ${error.message}]`;
      });
      child.on('close', (code, signal) => {
        this.child = undefined;
        let jobError: number | undefined;
        let writtenBytes = 0;
        const json = stdout.indexOf('{');
        try {
          const report = JSON.parse(stdout.slice(json)) as {
            jobs: Array<{ error: number; write: { io_bytes: number } }>;
          };
          jobError = report.jobs[0]!.error;
          writtenBytes = report.jobs[0]!.write.io_bytes;
        } catch {
          stderr += `\n[no JSON report from fio; stdout: ${stdout.slice(0, 2000)}]`;
        }
        resolveRun({
          index,
          startedAt,
          endedAt: Date.now(),
          code,
          signal,
          jobError,
          writtenBytes,
          stderr,
        });
      });
    });
  }

  private problemOf(run: FioRun): string | undefined {
    if (run.code === 0 && run.signal === null && run.jobError === 0) return undefined;
    return `fio run ${run.index} (${new Date(run.startedAt).toISOString()} .. ${new Date(run.endedAt).toISOString()}): exit ${run.code ?? run.signal}, job error ${run.jobError}:\n${run.stderr}`;
  }

  /** Every failed run, described. */
  problems(): string[] {
    return this.runs
      .map((run) => this.problemOf(run))
      .filter((problem): problem is string => problem !== undefined);
  }

  get running(): boolean {
    return liveLoads.has(this);
  }

  /**
   * Waits until a run that started at or after `since` (ms) has ended; fails if the load stopped.
   */
  async waitForRunStartedAfter(since: number, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.runs.some((run) => run.startedAt >= since)) {
      if (!this.running) throw new Error(`the fio load stopped:\n${this.problems().join('\n')}`);
      if (Date.now() > deadline)
        throw new Error(
          `no fio run started after ${new Date(since).toISOString()} ended within ${timeoutMs} ms`,
        );
      await sleep(50);
    }
  }

  /** Ends the load after the run in progress. */
  async stop(): Promise<FioRun[]> {
    this.stopping = true;
    await this.done;
    return this.runs;
  }

  /** Cleanup: SIGKILL the run in progress and wait (bounded) for the loop to end. */
  async kill(): Promise<void> {
    this.stopping = true;
    this.child?.kill('SIGKILL');
    await Promise.race([this.done, sleep(15_000)]);
  }
}

// ---------------------------------------------------------------------------------------------
// Bit flips in a drive file

/** The drive's PSEG area as its header gives it: [start, start + bytes). */
async function psegArea(drive: string): Promise<{ start: number; bytes: number }> {
  const handle = await open(drive, 'r');
  try {
    const header = Buffer.alloc(4096);
    await handle.read(header, 0, header.length, 0);
    const decoded = decodeDriveHeader(header);
    if (!decoded.ok)
      throw new Error(`${drive}: drive header does not decode: ${JSON.stringify(decoded)}`);
    return {
      start: decoded.header.psegAreaOffsetBytes,
      bytes: decoded.header.psegCount * decoded.header.psegSizeBytes,
    };
  } finally {
    await handle.close();
  }
}

/**
 * Flips one bit in each of `count` distinct 4 KiB blocks of the drive's PSEG area that hold
 * something (LUN data or parity: not zeros), never in a block listed in `avoid`; writes the drive
 * file directly. Returns the drive offsets of the flipped blocks.
 */
async function flipBits(drive: string, count: number, avoid: Set<number>): Promise<number[]> {
  const area = await psegArea(drive);
  const span = Math.min(area.bytes, 64 * MiB);
  const handle = await open(drive, 'r+');
  try {
    const candidates: number[] = [];
    const piece = Buffer.alloc(MiB);
    for (let offset = area.start; offset < area.start + span; offset += piece.length) {
      const { bytesRead } = await handle.read(piece, 0, piece.length, offset);
      for (let at = 0; at + blockBytes <= bytesRead; at += blockBytes) {
        const block = offset + at;
        if (!avoid.has(block) && piece.subarray(at, at + blockBytes).some((byte) => byte !== 0))
          candidates.push(block);
      }
    }
    if (candidates.length < count * 4)
      throw new Error(
        `${drive}: only ${candidates.length} written blocks in its PSEG area to flip bits in`,
      );
    const chosen = new Set<number>();
    while (chosen.size < count) chosen.add(candidates[randomInt(candidates.length)]!);
    const one = Buffer.alloc(1);
    for (const block of chosen) {
      const bit = randomInt(blockBytes * 8);
      const at = block + (bit >> 3);
      await handle.read(one, 0, 1, at);
      one[0]! ^= 1 << (bit & 7);
      await handle.write(one, 0, 1, at);
    }
    await handle.sync();
    return [...chosen].sort((a, b) => a - b);
  } finally {
    await handle.close();
  }
}

async function scrub(pool: string, when: string): Promise<ScrubReport> {
  const result = await lunfs('scrub', pool, '--json');
  expect(result.code, `lunfs scrub ${when}:\n${result.stderr}${result.stdout}`).toBe(0);
  return JSON.parse(result.stdout) as ScrubReport;
}

// ---------------------------------------------------------------------------------------------

describe('drive failures', () => {
  const sandbox = useSandbox('drive-failure');
  // Registered after useSandbox's hooks, so it runs first: fio must be gone before ext4, the loop
  // device and the server below it are taken down.
  afterEach(async () => {
    for (const load of [...liveLoads]) await load.kill();
  });

  it('RAID-5: a drive deleted under an ext4 writer, replaced and rebuilt under load, then another one deleted: no error, data intact, fsck clean', async () => {
    const box = sandbox();
    const pool = await createPool(box, 'pool', 5, 4, '256M');
    await lunfsOk('lun', 'create', pool, 'db', '--size', '256M');
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const lunFile = join(mountpoint, 'luns', 'db');
    // A small cache, so that the reads of the checks below go to the drives.
    const first = await box.mount(pool, mountpoint, ['--cache-size', '16M']);
    let loop = await box.attachLoop(lunFile);
    await box.mkfsExt4(loop);
    await box.mountExt4(loop, data);

    // Files that stay as they are (sha256), and fio's files (every block with a crc32c header).
    const sums = new Map<string, string>();
    for (const [name, size] of Object.entries({
      'static-a.bin': 5 * MiB + 123,
      'static-b.bin': 12 * MiB,
      'static-c.bin': 7 * MiB - 4095,
    })) {
      sums.set(name, await writeRandomFile(join(data, name), size));
    }
    const fioFileBytes = 8 * MiB;
    const fioPaths = [0, 1, 2, 3].map((index) => join(data, `fio-${index}.dat`));
    await fioLayout(fioPaths, fioFileBytes);
    await runOk('sync', ['-f', data]);

    const online = await statusJson(pool);
    expect(online.pool.raid).toBe('raid5');
    expect(online.pool.state).toBe('online');
    expect(
      online.drives.map((drive) => drive.rss),
      'one redundancy set of 4 drives',
    ).toEqual([0, 0, 0, 0]);

    // ---- the writer runs; drive 1 is deleted under it
    const load = new FioLoad(fioPaths, fioFileBytes);
    await sleep(1500);
    expect(load.problems()).toEqual([]);
    const firstFailureAt = Date.now();
    await rm(driveFile(pool, 1));
    // Failed, and its metadata copy moved to another drive (just after the failure).
    const degraded = await waitForStatus(
      pool,
      'drive 1 failed, three good metadata copies',
      (status) => status.drives[1]!.state === 'failed' && goodCopies(status).length === 3,
    );
    expect(degraded.pool.state).toBe('degraded');
    expect(degraded.drives[1]!.failedReason, 'failedReason of drive 1').toMatch(/drive-1\.img/);
    expect(
      degraded.drives.filter((drive) => drive.index !== 1).map((drive) => drive.state),
    ).toEqual(['online', 'online', 'online']);
    expect(degraded.pool.atRiskLuns).toEqual(['db']);
    expect(degraded.luns.find((lun) => lun.name === 'db')!.atRisk).toBe(true);
    // New files while degraded: new space for the thin LUN (and fsync'ed).
    sums.set('degraded-1.bin', await writeRandomFile(join(data, 'degraded-1.bin'), 10 * MiB));
    // A whole fio run in the degraded pool, without an error.
    await load.waitForRunStartedAfter(firstFailureAt);
    expect(load.problems(), 'fio after drive 1 was deleted').toEqual([]);

    // ---- replace drive 1 with a new file elsewhere, while the writer keeps going
    await mkdir(box.path('spare'));
    const newDrive = box.path('spare', 'new-drive-1.img');
    const replaceStartedAt = Date.now();
    const replaced = await lunfsOnTerminal(box, 'replace', [
      'drive',
      'replace',
      pool,
      '1',
      newDrive,
    ]);
    expect(replaced.code, `lunfs drive replace:\n${replaced.terminal}\n${replaced.stdout}`).toBe(0);
    expect(replaced.stdout).toContain(`rebuilt onto ${newDrive}`);
    expect(replaced.terminal, 'the progress bar on stderr (a terminal)').toMatch(
      /rebuild of drive 1 \[[^\]]+\] 100% \| (\d+)\/\1 MiB/,
    );
    const replaceEndedAt = Date.now();
    expect(load.running, `the writer during the rebuild:\n${load.problems().join('\n')}`).toBe(
      true,
    );
    const rebuilt = await statusJson(pool);
    expect(rebuilt.pool.state, 'pool state right after drive replace returned').toBe('online');
    expect(rebuilt.drives[1]!).toMatchObject({
      index: 1,
      path: newDrive,
      state: 'online',
      sizeBytes: 256 * MiB,
    });
    expect(rebuilt.drives[1]!.failedReason).toBeUndefined();
    expect(rebuilt.pool.atRiskLuns).toEqual([]);
    expect(rebuilt.luns[0]!.atRisk).toBe(false);
    expect(goodCopies(rebuilt), 'three good metadata copies after the rebuild').toHaveLength(3);
    const rebuildJobs = rebuilt.jobs.filter((job) => job.kind === 'rebuild');
    expect(rebuildJobs).toHaveLength(1);
    expect(rebuildJobs[0]!).toMatchObject({
      kind: 'rebuild',
      drive: 1,
      state: 'done',
      progress: 1,
    });
    expect(rebuildJobs[0]!.error).toBeUndefined();
    expect(rebuildJobs[0]!.totalBytes).toBeGreaterThan(0);
    expect(rebuildJobs[0]!.doneBytes).toBe(rebuildJobs[0]!.totalBytes);
    expect(await recordedDrives(pool), 'pool.json after the replacement').toEqual([
      driveFile(pool, 0),
      newDrive,
      driveFile(pool, 2),
      driveFile(pool, 3),
    ]);
    const created = await stat(newDrive);
    expect(created.size, "the new drive file has the old drive's size").toBe(256 * MiB);
    expect(created.blocks * 512, 'the new drive file is sparse').toBeLessThan(128 * MiB);
    sums.set('rebuilt.bin', await writeRandomFile(join(data, 'rebuilt.bin'), 6 * MiB));
    await load.waitForRunStartedAfter(replaceEndedAt);
    expect(load.problems(), 'fio during and after the rebuild').toEqual([]);
    // fio ran back to back through the whole replacement: no gap longer than a process start.
    const around = load.runs.filter(
      (run) => run.endedAt >= replaceStartedAt && run.startedAt <= replaceEndedAt,
    );
    expect(around.length, 'fio runs overlapping the replacement').toBeGreaterThan(0);

    // ---- delete another drive of the same redundancy set: still no error
    const secondFailureAt = Date.now();
    await rm(driveFile(pool, 2));
    const degradedAgain = await waitForStatus(
      pool,
      'drive 2 failed, three good metadata copies',
      (status) => status.drives[2]!.state === 'failed' && goodCopies(status).length === 3,
    );
    expect(degradedAgain.pool.state).toBe('degraded');
    expect(degradedAgain.drives[2]!.rss).toBe(degradedAgain.drives[1]!.rss);
    expect(degradedAgain.drives[2]!.failedReason).toMatch(/drive-2\.img/);
    expect(degradedAgain.drives[1]!.state).toBe('online');
    expect(degradedAgain.pool.atRiskLuns).toEqual(['db']);
    sums.set('degraded-2.bin', await writeRandomFile(join(data, 'degraded-2.bin'), 10 * MiB));
    await load.waitForRunStartedAfter(secondFailureAt);
    const runs = await load.stop();
    expect(load.problems(), 'fio after drive 2 was deleted').toEqual([]);
    const written = runs.reduce((sum, run) => sum + run.writtenBytes, 0);
    console.info(
      `drive-failure RAID-5: ${runs.length} fio runs, ${(written / MiB).toFixed(0)} MiB written through ext4; rebuild ${rebuildJobs[0]!.totalBytes / MiB} MiB`,
    );
    expect(written, 'fio wrote something').toBeGreaterThan(4 * MiB);

    // ---- verify in the degraded mount: the files before the loop device is detached, then fsck,
    // then again through a new loop device (no page cache of the old one), reading reconstructed
    // data
    const tree = await treeChecksums(data);
    for (const [name, sum] of sums) expect(tree[name], `checksum of ${name}`).toBe(sum);
    await box.umount(data);
    await expectFsckClean(box, loop, 'in the degraded mount after the second failure');
    await box.detachLoop(loop);
    loop = await box.attachLoop(lunFile);
    await box.mountExt4(loop, data);
    expect(await treeChecksums(data), 'every file read again through a new loop device').toEqual(
      tree,
    );
    await fioVerify(fioPaths, fioFileBytes, 'in the degraded mount');
    await box.umount(data);
    await box.detachLoop(loop);
    await expectCleanStop(first);

    // ---- a new process: the pool mounts degraded (drive 2 missing); fsck clean; every file intact
    const second = await box.mount(pool, mountpoint, ['--cache-size', '16M']);
    expect(second.pid).not.toBe(first.pid);
    const remounted = await statusJson(pool);
    expect(remounted.pool.state).toBe('degraded');
    expect(remounted.drives.map((drive) => drive.state)).toEqual([
      'online',
      'online',
      'failed',
      'online',
    ]);
    expect(remounted.drives[1]!.path).toBe(newDrive);
    expect(remounted.drives[2]!.failedReason).toMatch(/drive-2\.img/);
    loop = await box.attachLoop(lunFile);
    await expectFsckClean(box, loop, 'after a mount in a new process with drive 2 missing');
    await box.mountExt4(loop, data);
    expect(await treeChecksums(data), 'every file after the remount').toEqual(tree);
    await fioVerify(fioPaths, fioFileBytes, 'after the remount');
    await box.umount(data);
    await box.detachLoop(loop);
    const integrity = (await statusJson(pool)).integrity;
    expect(integrity.unrepairable, `integrity ${JSON.stringify(integrity)}`).toBe(0);
    await expectCleanStop(second);
  }, 240_000);

  it.each([1, 5] as const)(
    'RAID-%s: a degraded pool takes writes to parts of a thin LUN never written before',
    async (raid) => {
      const box = sandbox();
      const pool = await createPool(box, 'pool', raid, 4, '128M');
      await lunfsOk('lun', 'create', pool, 'raw', '--size', '64M');
      const mountpoint = box.path('mnt');
      const lunFile = join(mountpoint, 'luns', 'raw');
      const server = await box.mount(pool, mountpoint);
      const before = randomBytes(8 * MiB);
      await writeAt(lunFile, 0, before);
      const allocatedBefore = (await statusJson(pool)).luns[0]!.allocatedBytes;
      await rm(driveFile(pool, 1));
      await waitForStatus(
        pool,
        'drive 1 failed',
        (status) => status.drives[1]!.state === 'failed' && status.pool.state === 'degraded',
      );

      // 8 MiB at 40 MiB: allocation units the LUN never had.
      const after = randomBytes(8 * MiB);
      let error: unknown;
      try {
        await writeAt(lunFile, 40 * MiB, after);
      } catch (caught) {
        error = caught;
      }
      const status = await statusJson(pool);
      expect(
        error,
        `write + fdatasync of 8 MiB of new space in a degraded RAID-${raid} pool (pool.freeBytes ${status.pool.freeBytes}, allocatedBytes ${status.pool.allocatedBytes} of ${status.pool.totalBytes})`,
      ).toBeUndefined();
      expect(status.luns[0]!.allocatedBytes).toBeGreaterThanOrEqual(allocatedBefore + 8 * MiB);
      expect(
        (await readAt(lunFile, 0, before.length)).equals(before),
        'the data written before the failure',
      ).toBe(true);
      expect(
        (await readAt(lunFile, 40 * MiB, after.length)).equals(after),
        'the data written while degraded',
      ).toBe(true);
      await expectCleanStop(server);
    },
    240_000,
  );

  it('RAID-1: after kill -9 and a drive file deleted, the pool mounts degraded, every synced file is there, and the drive is replaced', async () => {
    const box = sandbox();
    const pool = await createPool(box, 'pool', 1, 4, '256M');
    await lunfsOk('lun', 'create', pool, 'db', '--size', '128M');
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const lunFile = join(mountpoint, 'luns', 'db');
    const first = await box.mount(pool, mountpoint);
    let loop = await box.attachLoop(lunFile);
    await box.mkfsExt4(loop);
    await box.mountExt4(loop, data);
    const sums = new Map<string, string>();
    for (const [name, size] of Object.entries({
      'a.bin': 3 * MiB + 17,
      'b.bin': 16 * MiB,
      'c.bin': 9 * MiB,
    }))
      sums.set(name, await writeRandomFile(join(data, name), size));
    await runOk('sync', ['-f', data]);
    const online = await statusJson(pool);
    expect(online.pool.raid).toBe('raid1');
    expect(online.luns[0]!.allocatedBytes).toBeGreaterThanOrEqual(28 * MiB);

    await first.kill();
    await box.umount(data, { lazy: true });
    await box.detachLoop(loop);
    await rm(driveFile(pool, 0)); // a drive with a metadata copy and (mirrored) LUN data

    const second = await box.mount(pool, mountpoint);
    expect(second.pid).not.toBe(first.pid);
    const status = await statusJson(pool);
    expect(status.pool.state).toBe('degraded');
    expect(status.drives.map((drive) => drive.state)).toEqual([
      'failed',
      'online',
      'online',
      'online',
    ]);
    expect(status.drives[0]!.failedReason).toMatch(/drive-0\.img/);
    expect(status.pool.atRiskLuns).toEqual(['db']);
    loop = await box.attachLoop(lunFile);
    await box.mountExt4(loop, data); // replays the journal
    for (const [name, sum] of sums)
      expect(await sha256File(join(data, name)), `checksum of ${name}`).toBe(sum);
    sums.set('degraded.bin', await writeRandomFile(join(data, 'degraded.bin'), 6 * MiB));
    // The missing drive named by its path this time, replaced while ext4 is mounted on the LUN.
    const newDrive = join(pool, 'new-0.img');
    const replaced = await lunfs('drive', 'replace', pool, driveFile(pool, 0), newDrive);
    expect(
      replaced.code,
      `lunfs drive replace by path:\n${replaced.stderr}${replaced.stdout}`,
    ).toBe(0);
    const rebuilt = await statusJson(pool);
    expect(rebuilt.pool.state).toBe('online');
    expect(rebuilt.drives[0]!).toMatchObject({ path: newDrive, state: 'online' });
    expect(
      rebuilt.jobs
        .filter((job) => job.kind === 'rebuild')
        .map((job) => [job.drive, job.state, job.progress]),
    ).toEqual([[0, 'done', 1]]);
    expect(await recordedDrives(pool)).toEqual([
      newDrive,
      driveFile(pool, 1),
      driveFile(pool, 2),
      driveFile(pool, 3),
    ]);
    await box.umount(data);
    await expectFsckClean(box, loop, 'after kill -9 and a degraded mount');
    await box.detachLoop(loop);
    loop = await box.attachLoop(lunFile);
    await box.mountExt4(loop, data);
    for (const [name, sum] of sums)
      expect(await sha256File(join(data, name)), `checksum of ${name} read again`).toBe(sum);
    await box.umount(data);
    await box.detachLoop(loop);
    expect((await statusJson(pool)).integrity.unrepairable).toBe(0);
    await expectCleanStop(second);
  }, 240_000);

  it('RAID-5: kill -9 with writes in flight and a drive file gone before the next mount: refused, naming the drive; --force-degraded mounts it degraded', async () => {
    const box = sandbox();
    const pool = await createPool(box, 'pool', 5, 3, '64M');
    await lunfsOk('lun', 'create', pool, 'db', '--size', '32M');
    const mountpoint = box.path('mnt');
    const first = await box.mount(pool, mountpoint);
    const data = randomBytes(8 * MiB);
    await writeAt(join(mountpoint, 'luns', 'db'), 0, data);
    await first.kill(); // within 5 s of the writes: the RStores' write intent is still set
    await rm(driveFile(pool, 1));

    const refused = box.spawnMount(pool, mountpoint);
    const exit = await Promise.race([refused.exited, sleep(30_000).then(() => undefined)]);
    expect(exit, `the mount did not exit; stderr:\n${refused.stderr}`).toBeDefined();
    expect(exit!.code, `exit of the refused mount; stdout:\n${refused.stdout}`).not.toBe(0);
    const message = refused.stderr
      .split('\n')
      .filter((line) => line.startsWith('lunfs:'))
      .join('\n');
    expect(message, `stderr:\n${refused.stderr}`).toContain(driveFile(pool, 1));
    expect(message).toMatch(/not shut down cleanly.*--force-degraded/);
    expect(await mountEntriesAt(mountpoint), 'nothing mounted').toEqual([]);

    const forced = await box.mount(pool, mountpoint, ['--force-degraded']);
    const status = await statusJson(pool);
    expect(status.pool.state).toBe('degraded');
    expect(status.drives[1]!.state).toBe('failed');
    expect((await readAt(join(mountpoint, 'luns', 'db'), 0, 4096)).length).toBe(4096);
    await expectCleanStop(forced);
  }, 240_000);

  it.each([
    ['RAID-0', 'drive 1 of 2', 0, 2, [1]],
    ['RAID-5', 'drives 0 and 2 of 3', 5, 3, [0, 2]],
  ] as Array<[string, string, 0 | 5, number, number[]]>)(
    '%s with %s gone refuses to mount, naming them and the LUN',
    async (_label, _which, raid, drives, missing) => {
      const box = sandbox();
      const pool = await createPool(box, 'pool', raid, drives, '64M');
      await lunfsOk('lun', 'create', pool, 'db', '--size', '32M');
      const mountpoint = box.path('mnt');
      const server = await box.mount(pool, mountpoint);
      await writeAt(join(mountpoint, 'luns', 'db'), 0, randomBytes(32 * MiB));
      await expectCleanStop(server);
      for (const index of missing) await rm(driveFile(pool, index));

      const refused = box.spawnMount(pool, mountpoint);
      const exit = await Promise.race([refused.exited, sleep(30_000).then(() => undefined)]);
      expect(
        exit,
        `lunfs mount with drive(s) ${missing.join(', ')} of a RAID-${raid} pool gone did not exit; stdout:\n${refused.stdout}\nstderr:\n${refused.stderr}`,
      ).toBeDefined();
      expect(exit!.code, `exit of the refused mount; stdout:\n${refused.stdout}`).not.toBe(0);
      expect(exit!.code).not.toBeNull();
      const message = refused.stderr
        .split('\n')
        .filter((line) => line.startsWith('lunfs:'))
        .join('\n');
      for (const index of missing)
        expect(message, `the refusal names drive ${index}; stderr:\n${refused.stderr}`).toContain(
          driveFile(pool, index),
        );
      expect(
        message,
        `the refusal names the LUN with data there; stderr:\n${refused.stderr}`,
      ).toMatch(/\bdb\b/);
      expect(refused.stdout).not.toMatch(/mounted at/);
      expect(await mountEntriesAt(mountpoint), 'nothing mounted').toEqual([]);
      expect(existsSync(join(pool, 'lunfs.sock')), 'no control socket left behind').toBe(false);
    },
    240_000,
  );

  it('RAID-5: flipped bits in a drive file are found by their checksums, repaired on read and by scrub', async () => {
    const box = sandbox();
    const pool = await createPool(box, 'pool', 5, 4, '128M');
    const lunBytes = 64 * MiB;
    await lunfsOk('lun', 'create', pool, 'raw', '--size', `${lunBytes / MiB}M`);
    const mountpoint = box.path('mnt');
    const lunFile = join(mountpoint, 'luns', 'raw');
    const first = await box.mount(pool, mountpoint);
    await writeAt(lunFile, 0, randomBytes(48 * MiB));
    const lunSum = await sha256File(lunFile);
    await expectCleanStop(first);

    // ---- 50 flips in drive 1 of the unmounted pool
    const flipped = new Set<number>();
    const firstFlips = await flipBits(driveFile(pool, 1), 50, flipped);
    for (const block of firstFlips) flipped.add(block);
    const second = await box.mount(pool, mountpoint);
    expect(await sha256File(lunFile), 'the LUN read in full after 50 bit flips in drive 1').toBe(
      lunSum,
    );
    const afterRead = (await statusJson(pool)).integrity;
    const readReport = `integrity after the read: ${JSON.stringify(afterRead)}; flipped blocks at drive offsets ${firstFlips.join(' ')}`;
    expect(afterRead.checksumMismatches, readReport).toBeGreaterThan(0);
    expect(afterRead.checksumMismatches, readReport).toBeLessThanOrEqual(50);
    expect(afterRead.repairs, readReport).toBeGreaterThan(0);
    expect(afterRead.unrepairable, readReport).toBe(0);

    // ---- 50 more, in other blocks, while the pool is mounted: scrub through the mount
    const moreFlips = await flipBits(driveFile(pool, 1), 50, flipped);
    for (const block of moreFlips) flipped.add(block);
    const scrubbed = await scrub(pool, 'after 50 more flips (mounted)');
    expect(scrubbed.checksumRepairs, `scrub report ${JSON.stringify(scrubbed)}`).toBeGreaterThan(0);
    expect(scrubbed.unrepairable).toBe(0);
    expect(scrubbed.rstores).toBeGreaterThan(0);
    const rescrubbed = await scrub(pool, 'a second time (mounted)');
    expect(rescrubbed, 'a second scrub finds nothing to repair').toMatchObject({
      checksumRepairs: 0,
      parityRepairs: 0,
      unrepairable: 0,
    });
    const afterScrub = (await statusJson(pool)).integrity;
    expect(afterScrub.unrepairable).toBe(0);
    expect(afterScrub.repairs).toBeGreaterThanOrEqual(afterRead.repairs + scrubbed.checksumRepairs);
    expect(await sha256File(lunFile), 'the LUN after the scrub').toBe(lunSum);
    await expectCleanStop(second);

    // ---- 50 flips in drive 2 of the unmounted pool: an offline scrub repairs them
    await flipBits(driveFile(pool, 2), 50, new Set());
    const offline = await scrub(pool, 'offline, after 50 flips in drive 2');
    expect(
      offline.checksumRepairs,
      `offline scrub report ${JSON.stringify(offline)}`,
    ).toBeGreaterThan(0);
    expect(offline.unrepairable).toBe(0);
    expect(await scrub(pool, 'offline, a second time')).toMatchObject({
      checksumRepairs: 0,
      parityRepairs: 0,
      unrepairable: 0,
    });
    const third = await box.mount(pool, mountpoint);
    expect(await sha256File(lunFile), 'the LUN after the offline scrub').toBe(lunSum);
    const clean = (await statusJson(pool)).integrity;
    expect(clean, 'nothing left for a read to find').toMatchObject({
      checksumMismatches: 0,
      unrepairable: 0,
    });
    await expectCleanStop(third);
  }, 240_000);
});
