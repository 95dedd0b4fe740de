// Snapclones end to end (issue 15), no mocks: a RAID-5 pool of 4 sparse 1 GiB file drives, a
// 512 MiB LUN served by a real `lunfs mount` process through FUSE, a loop device on the LUN file,
// ext4 on it, and fio writing a file of that ext4 (4 KiB random O_DIRECT writes carrying fio's
// crc32c verify headers) when the clone is taken. It proves:
//   1. `touch MNT/control/snapclone/db@c1` under the fio load makes clones/c1 at once, holding the
//      LUN at that instant: attached to a second loop device and mounted read-write, its ext4
//      replays its journal and holds, file by file (sha256), every file synced before the clone,
//      and every block of fio's file is a whole fio block. While BGCOPY runs, the clone takes a
//      file rewritten, one deleted and new files; the source takes a new file and fio goes on
//      until BGCOPY has ended. Status shows its progress, then the job
//      done, `clone: null`, the file under luns/c1 and no longer under clones/. The source checks
//      clean with its own files; the clone, attached again under luns/, checks clean, holds
//      exactly its instant's files plus what was written into it, and takes more. The source's
//      snapshots and then the source itself are deleted: the clone file does not change by a
//      byte, checks clean and holds its files, also after a clean restart (no BGCOPY again);
//   2. the same with `kill -9` of the server in the middle of BGCOPY, on RAID-0 and RAID-5
//      (status showed its progress between 0 and 1, and a commit of its copy was behind it): a
//      mount in a new process resumes it, copying only what was left, and ends it; the clone,
//      never written, reads byte for byte as at its instant, its ext4 replays and checks clean
//      with its instant's files; the source's
//      synced files survive and it checks clean; deleting the source's snapshots and the source
//      changes nothing in the clone;
//   3. bad input through the mount and the CLI is refused with the right errno / exit code and
//      changes nothing (the pool status compared before and after): a clone of an unknown LUN or
//      snapshot (ENOENT, exit 2), a clone name taken by a LUN, a finished clone or its source
//      (EEXIST), bad names (EINVAL), a file created under clones/ (EPERM), and, while a clone's
//      BGCOPY runs (kept slow by a paced foreground load), removal of its source through the CLI
//      and `rm luns/SOURCE` (EBUSY, exit 1); the clone itself can be removed then (`rm
//      clones/NAME`), and its source after it; `lunfs clone --wait` returns once the clone is
//      an independent LUN, and so does a clone made with the pool not mounted.
// In 1 the clone's ext4 stays mounted from a loop device on clones/c1 across BGCOPY's end and
// takes a file after it: a file opened under clones/ goes on working once the clone has moved to
// luns/ (a first version of this test found it did not: fstat and reads failed with ENOENT).

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobStatus } from '../../src/volume/background-jobs.js';
import type { StatusJson } from '../../src/volume/controller.js';
import {
  MiB,
  lunfs,
  lunfsOk,
  run,
  runOk,
  differingMiB,
  sha256File,
  sha256PerMiB,
  sleep,
  statusJson,
  treeChecksums,
  useSandbox,
  writeRandomFile,
  type LoopDevice,
  type MountServer,
  type RunResult,
  type Sandbox,
} from './support.js';

const driveSize = '1G';
const lunSize = 512 * MiB; // >= 512 MiB: mkfs.ext4 uses 4 KiB blocks
const fioFileName = 'fio.bin';
const fioFileBytes = 32 * MiB;

/** The tree written before the source's first snapshot (sizes in bytes): about 70 MiB. */
const initialFiles: Record<string, number> = {
  'small.bin': MiB + 37,
  'medium.bin': 3 * MiB,
  'empty.bin': 0,
  'will-change.bin': 5 * MiB,
  'will-delete.bin': 2 * MiB,
  'dir/large.bin': 24 * MiB + 4095,
  'dir/sub/a.txt': 4097,
  'dir/sub/deeper/b.bin': 700 * 1024,
  'big/a.bin': 32 * MiB,
  ...Object.fromEntries(
    Array.from({ length: 16 }, (_, index) => [
      `tree/d${index % 4}/f${index}.bin`,
      1000 + index * 7919,
    ]),
  ),
};

/**
 * About 100 MiB more: BGCOPY (paced to a share of the time while fio runs) lasts long enough for
 * the clone's checks and writes, and has more than one commit to make (one every 64 MiB).
 */
const bulkFiles: Record<string, number> = {
  'bulk/x.bin': 48 * MiB,
  'bulk/y.bin': 40 * MiB + 12345,
  'bulk/z.bin': 12 * MiB,
};

// ---------------------------------------------------------------------------------------------
// Files and trees

async function writeFiles(root: string, files: Record<string, number>): Promise<void> {
  for (const [name, size] of Object.entries(files)) {
    await mkdir(join(root, name, '..'), { recursive: true });
    await writeRandomFile(join(root, name), size);
  }
}

/** The tree without fio's file (its content is checked by fio's verify headers instead). */
async function treeWithoutFio(root: string): Promise<Record<string, string>> {
  const tree = await treeChecksums(root);
  delete tree[fioFileName];
  return tree;
}

/**
 * The files of `tree` outside bulk/ (a quick check of a clone while BGCOPY runs: reading all of
 * bulk/ would take the time BGCOPY is given), each with its sha256 as read under root.
 */
async function filesOutsideBulk(
  root: string,
  tree: Record<string, string>,
): Promise<Record<string, string>> {
  const found: Record<string, string> = {};
  for (const [name, value] of Object.entries(tree))
    if (value !== 'dir' && !name.startsWith('bulk/'))
      found[name] = await sha256File(join(root, name));
  return found;
}

function outsideBulk(tree: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(tree).filter(([name, value]) => value !== 'dir' && !name.startsWith('bulk/')),
  );
}

/** Writes random bytes at the start of a LUN file (no O_TRUNC: a LUN keeps its size), fsync'ed. */
async function writeRandomLun(path: string, sizeBytes: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    for (let doneBytes = 0; doneBytes < sizeBytes; doneBytes += 4 * MiB) {
      const piece = randomBytes(Math.min(4 * MiB, sizeBytes - doneBytes));
      await handle.write(piece, 0, piece.length, doneBytes);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** After the first snapshot: a file rewritten, one deleted, one added. The caller syncs. */
async function changeAfterSnapshot(root: string): Promise<void> {
  await writeRandomFile(join(root, 'will-change.bin'), 5 * MiB);
  await rm(join(root, 'will-delete.bin'));
  await writeFiles(root, { 'after-s1.bin': 6 * MiB });
}

// ---------------------------------------------------------------------------------------------
// fio: the file laid out with verify headers, a write load of back-to-back runs, a verify pass

// verify_state_save=0: no <job>-verify.state files left in the working directory.
const fioBlock = [
  '--bs=4k',
  '--verify=crc32c',
  '--verify_fatal=1',
  '--verify_dump=0',
  '--verify_state_save=0',
];

/** Writes every block of the file once, sequentially, with verify headers, and syncs it. */
async function fioLayout(file: string): Promise<void> {
  await runOk(
    'fio',
    [
      '--name=layout',
      `--filename=${file}`,
      `--filesize=${fioFileBytes}`,
      ...fioBlock,
      '--rw=write',
      '--fallocate=none',
      '--end_fsync=1',
      '--ioengine=psync',
      '--output=/dev/null',
    ],
    { timeoutMs: 120_000 },
  );
}

/** Reads every block with O_DIRECT and checks its verify header (crc32c, offset). */
async function expectFioBlocksWhole(file: string, what: string): Promise<void> {
  const result = await run(
    'fio',
    [
      '--name=check',
      `--filename=${file}`,
      `--filesize=${fioFileBytes}`,
      ...fioBlock,
      '--rw=read',
      '--direct=1',
      '--ioengine=psync',
      '--output-format=terse',
    ],
    { timeoutMs: 120_000 },
  );
  expect(result.code, `fio verify pass over ${what}:\n${result.stderr}`).toBe(0);
}

interface FioRun {
  index: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * fio runs of `runSeconds` each, back to back, until stopped: psync, 4 KiB random writes with
 * verify headers (checked as it goes with verify_backlog), O_DIRECT; `extra` adds options (a
 * rate limit). A run that fails ends the load.
 */
class FioLoad {
  readonly runs: FioRun[] = [];
  private child: ChildProcess | undefined;
  private stopping = false;
  private ended = false;
  readonly done: Promise<void>;

  constructor(
    readonly file: string,
    readonly fileBytes: number,
    readonly runSeconds: number,
    readonly extra: string[] = [],
  ) {
    liveLoads.add(this);
    this.done = this.loop().finally(() => {
      this.ended = true;
      liveLoads.delete(this);
    });
  }

  get running(): boolean {
    return !this.ended;
  }

  private async loop(): Promise<void> {
    for (let index = 0; !this.stopping; index += 1) {
      const result = await this.runOnce(index);
      this.runs.push(result);
      if (result.code !== 0) return;
    }
  }

  private runOnce(index: number): Promise<FioRun> {
    const args = [
      `--name=load${index}`,
      `--filename=${this.file}`,
      `--filesize=${this.fileBytes}`,
      ...fioBlock,
      '--rw=randwrite',
      '--direct=1',
      '--ioengine=psync',
      '--fsync=32',
      '--end_fsync=1',
      '--verify_backlog=128',
      '--time_based',
      `--runtime=${this.runSeconds}`,
      '--output=/dev/null',
      ...this.extra,
    ];
    return new Promise((resolveRun) => {
      const child = spawn('fio', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      this.child = child;
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.on('error', (error) => (stderr += `\n[spawn failed: ${error.message}]`));
      child.on('close', (code, signal) => {
        this.child = undefined;
        resolveRun({ index, code, signal, stderr });
      });
    });
  }

  /** Every failed run, described. */
  problems(): string[] {
    return this.runs
      .filter((run) => run.code !== 0)
      .map((run) => `fio run ${run.index}: exit ${run.code ?? run.signal}:\n${run.stderr}`);
  }

  /** Ends the load after the run in progress. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
  }

  /** SIGKILL the run in progress and wait (bounded) for the loop to end. */
  async kill(): Promise<void> {
    this.stopping = true;
    this.child?.kill('SIGKILL');
    await Promise.race([this.done, sleep(15_000)]);
  }
}

const liveLoads = new Set<FioLoad>();

// ---------------------------------------------------------------------------------------------
// Status, BGCOPY, checks

async function controlStatus(mountpoint: string): Promise<StatusJson> {
  return JSON.parse(await readFile(join(mountpoint, 'control', 'status'), 'utf8')) as StatusJson;
}

/** The newest BGCOPY job of the clone in this mount's status. */
function bgcopyOf(status: StatusJson, clone: string): JobStatus | undefined {
  return status.jobs.filter((job) => job.kind === 'bgcopy' && job.lun === clone).at(-1);
}

function lunOf(status: StatusJson, name: string): StatusJson['luns'][number] | undefined {
  return status.luns.find((lun) => lun.name === name);
}

/**
 * Polls control/status until the clone's BGCOPY has ended; `step` runs between polls (the test's
 * writes; a pause when none). Returns the job, the status it was read from, and the progress seen.
 */
async function waitForBgcopyEnd(
  mountpoint: string,
  clone: string,
  step: () => Promise<void> = () => sleep(100),
  timeoutMs = 120_000,
): Promise<{ job: JobStatus; status: StatusJson; progressSeen: number[] }> {
  const deadline = Date.now() + timeoutMs;
  const progressSeen: number[] = [];
  for (;;) {
    const status = await controlStatus(mountpoint);
    const job = bgcopyOf(status, clone);
    if (!job) throw new Error(`no BGCOPY job of ${clone} in the status`);
    progressSeen.push(job.progress);
    if (job.state !== 'running') return { job, status, progressSeen };
    if (Date.now() > deadline)
      throw new Error(`BGCOPY of ${clone} still running after ${timeoutMs} ms: ${job.progress}`);
    await step();
  }
}

/** The clone is an ordinary LUN: job done, `clone: null`, under luns/ and gone from clones/. */
async function expectIndependent(
  mountpoint: string,
  clone: string,
  ended: { job: JobStatus; status: StatusJson },
  openUnderClones = false,
): Promise<void> {
  expect(ended.job, `BGCOPY of ${clone}: ${ended.job.error ?? ''}`).toMatchObject({
    state: 'done',
    progress: 1,
    doneBytes: ended.job.totalBytes,
  });
  expect(lunOf(ended.status, clone), `${clone} in the status once BGCOPY ended`).toMatchObject({
    clone: null,
    sizeBytes: lunSize,
  });
  expect(await readdir(join(mountpoint, 'clones')), 'clones/ once BGCOPY ended').toEqual([]);
  expect(await readdir(join(mountpoint, 'luns'))).toContain(clone);
  // A file opened under clones/ keeps its path there while it is open (not listed).
  if (!openUnderClones)
    await expect(stat(join(mountpoint, 'clones', clone))).rejects.toThrow(/ENOENT/);
  expect((await stat(join(mountpoint, 'luns', clone))).size).toBe(lunSize);
}

function fsckOutput(result: RunResult): string {
  return `${result.stdout}${result.stderr}`;
}

async function expectFsckClean(box: Sandbox, loop: LoopDevice, what: string): Promise<void> {
  const result = await box.fsckExt4(loop);
  expect(result.code, `fsck.ext4 -fn of ${what}:\n${fsckOutput(result)}`).toBe(0);
}

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
}

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/**
 * The source LUN with ext4 mounted at data: the initial tree, snapshot s1 (touch), changes,
 * snapshot s2 (CLI), fio's file laid out; everything synced. Returns the loop device and the tree
 * (fio's file left out).
 */
async function sourceWithSnapshots(
  box: Sandbox,
  pool: string,
  mountpoint: string,
  data: string,
  extraFiles: Record<string, number> = {},
): Promise<{ loop: LoopDevice; tree: Record<string, string> }> {
  const loop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
  await box.mkfsExt4(loop);
  await box.mountExt4(loop, data);
  await writeFiles(data, { ...initialFiles, ...extraFiles });
  await runOk('sync', ['-f', data]);
  await runOk('touch', [join(mountpoint, 'control', 'snapshot', 'db@s1')]);
  await changeAfterSnapshot(data);
  await runOk('sync', ['-f', data]);
  await lunfsOk('snapshot', pool, 'db@s2');
  await fioLayout(join(data, fioFileName));
  await runOk('sync', ['-f', data]);
  return { loop, tree: await treeWithoutFio(data) };
}

// ---------------------------------------------------------------------------------------------

describe('snapclones of an ext4 under fio', () => {
  const sandbox = useSandbox('snapclone-ext4');
  // Registered after useSandbox: runs before its cleanup (hooks run in reverse), so no fio
  // process holds the ext4 the sandbox unmounts.
  afterEach(async () => {
    for (const load of [...liveLoads]) await load.kill();
  });

  it('a clone taken under fio holds its instant; both sides are written during BGCOPY and check clean after it; deleting the source changes nothing', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 4, driveSize, raid: 5 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', `${lunSize / MiB}M`);
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const cloneData = box.path('clone');
    const cloneFile = join(mountpoint, 'clones', 'c1');
    const server = await box.mount(pool, mountpoint, ['--log-level', 'info']);

    const source = await sourceWithSnapshots(box, pool, mountpoint, data, bulkFiles);
    const sourceLoop = source.loop;
    const atInstant = source.tree;
    expect(Object.keys(atInstant)).toEqual(expect.arrayContaining(['after-s1.bin', 'big/a.bin']));

    // ---- the clone, under fio
    const load = new FioLoad(join(data, fioFileName), fioFileBytes, 2);
    await sleep(1500);
    expect(load.running, `fio load ended early:\n${load.problems().join('\n')}`).toBe(true);
    await runOk('sync', ['-f', data]);
    await expect(stat(cloneFile), 'no clone before the touch').rejects.toThrow(/ENOENT/);
    await runOk('touch', [join(mountpoint, 'control', 'snapclone', 'db@c1')]);
    expect((await stat(cloneFile)).size, 'clones/c1 at once, of the source size').toBe(lunSize);
    const started = await controlStatus(mountpoint);
    const startedJob = bgcopyOf(started, 'c1');
    expect(startedJob, 'BGCOPY job right after the clone').toMatchObject({
      kind: 'bgcopy',
      lun: 'c1',
      state: 'running',
    });
    expect(startedJob!.progress).toBeLessThan(1);
    expect(startedJob!.totalBytes, 'BGCOPY copies at least the files').toBeGreaterThanOrEqual(
      170 * MiB,
    );
    expect(lunOf(started, 'c1')?.clone).toMatchObject({ source: 'db' });
    expect(lunOf(started, 'c1')!.clone!.pendingBytes).toBeGreaterThan(0);
    expect(lunOf(started, 'db')?.clone).toBeNull();
    expect(await readdir(join(mountpoint, 'clones'))).toEqual(['c1']);
    expect(await readdir(join(mountpoint, 'luns')), 'the clone is not under luns/ yet').toEqual([
      'db',
    ]);
    expect(
      started.snapshots.map((snapshot) => snapshot.name),
      "the clone's base is not a listed snapshot",
    ).toEqual(['db@s1', 'db@s2']);

    // ---- the source goes on: fio, and a new file
    const afterClone = await writeRandomFile(join(data, 'after-clone.bin'), 4 * MiB);

    // ---- the clone: its ext4 replays its journal and holds the synced files of its instant
    // (bulk/ and the whole tree are checked once BGCOPY has ended)
    const cloneLoop = await box.attachLoop(cloneFile);
    await box.mountExt4(cloneLoop, cloneData);
    expect(
      await filesOutsideBulk(cloneData, atInstant),
      "the clone's files at its instant",
    ).toEqual(outsideBulk(atInstant));
    await expectFioBlocksWhole(join(cloneData, fioFileName), "the clone's fio file");

    // ---- both written while BGCOPY runs: the clone gets a rewrite, a deletion and new files one
    // after another (each fsync'ed); its ext4 stays mounted from clones/c1 across BGCOPY's end.
    const expectedClone: Record<string, string> = { ...atInstant };
    expectedClone['will-change.bin'] = await writeRandomFile(
      join(cloneData, 'will-change.bin'),
      5 * MiB,
    );
    await rm(join(cloneData, 'medium.bin'));
    delete expectedClone['medium.bin'];
    await mkdir(join(cloneData, 'clone-new'));
    expectedClone['clone-new/'] = 'dir';
    let written = 0;
    for (const until = Date.now() + 1500; Date.now() < until; written += 1) {
      const name = `clone-new/f${String(written).padStart(3, '0')}.bin`;
      expectedClone[name] = await writeRandomFile(join(cloneData, name), 512 * 1024);
    }
    expect(written, 'files written into the clone').toBeGreaterThanOrEqual(2);
    const whileRunning = bgcopyOf(await controlStatus(mountpoint), 'c1')!;
    expect(whileRunning.state, 'BGCOPY ran while the clone was written and checked').toBe(
      'running',
    );
    expect(whileRunning.progress).toBeGreaterThan(0);
    expect(whileRunning.progress).toBeLessThan(1);

    // ---- BGCOPY to its end while fio writes the source
    const ended = await waitForBgcopyEnd(mountpoint, 'c1');
    const loadRanThrough = load.running;
    console.info(
      `snapclone under fio: BGCOPY of ${ended.job.totalBytes / MiB} MiB ended after ${Date.parse(ended.job.finishedAt!) - Date.parse(ended.job.startedAt)} ms (paused ${ended.job.pausedMs} ms); at ${whileRunning.progress} after the writes into the clone; ${written} files written into the clone; ${load.runs.length} fio runs ended`,
    );
    expect(loadRanThrough, `fio ran until BGCOPY ended:\n${load.problems().join('\n')}`).toBe(true);
    const progressSeen = [whileRunning.progress, ...ended.progressSeen];
    expect(
      progressSeen.every((progress, index) => index === 0 || progress >= progressSeen[index - 1]!),
      `progress never goes back: ${progressSeen.join(' ')}`,
    ).toBe(true);
    await expectIndependent(mountpoint, 'c1', ended, true);
    expect(server.stderr, 'the server logs the end of BGCOPY').toMatch(
      /snapclone independent: BGCOPY done/,
    );
    await load.stop();
    expect(load.problems(), 'fio runs').toEqual([]);
    await runOk('sync', ['-f', data]);

    // ---- the clone's file, opened under clones/ before the move, goes on working after it
    expectedClone['across-move.bin'] = await writeRandomFile(
      join(cloneData, 'across-move.bin'),
      3 * MiB,
    );
    await box.umount(cloneData);
    await expectFsckClean(box, cloneLoop, 'the clone written across its move to luns/');
    await box.detachLoop(cloneLoop);
    await expect(stat(cloneFile), 'clones/c1 once the file opened there is closed').rejects.toThrow(
      /ENOENT/,
    );

    // ---- the source holds its own
    expect(await treeWithoutFio(data), 'the source: its own files').toEqual({
      ...atInstant,
      'after-clone.bin': afterClone,
    });
    await expectFioBlocksWhole(join(data, fioFileName), "the source's fio file");
    await box.umount(data);
    await expectFsckClean(box, sourceLoop, 'the source after BGCOPY');
    await box.detachLoop(sourceLoop);

    // ---- the clone, an ordinary LUN now: clean, its files, and it takes more
    const lunFile = join(mountpoint, 'luns', 'c1');
    let checkLoop = await box.attachLoop(lunFile);
    await expectFsckClean(box, checkLoop, 'the clone after BGCOPY');
    await box.mountExt4(checkLoop, cloneData);
    expect(await treeWithoutFio(cloneData), 'the clone after BGCOPY').toEqual(expectedClone);
    expectedClone['after-move.bin'] = await writeRandomFile(
      join(cloneData, 'after-move.bin'),
      3 * MiB,
    );
    await box.umount(cloneData);
    await expectFsckClean(box, checkLoop, 'the clone written under luns/');
    await box.detachLoop(checkLoop);

    // ---- the source's snapshots, then the source itself, deleted: the clone does not change
    const cloneBytes = await sha256File(lunFile);
    await runOk('rm', [join(mountpoint, 'snapshots', 'db@s1')]);
    await lunfsOk('snapshot', 'rm', pool, 'db@s2');
    await lunfsOk('lun', 'rm', pool, 'db');
    const afterDelete = await statusJson(pool);
    expect(afterDelete.luns.map((lun) => [lun.name, lun.clone])).toEqual([['c1', null]]);
    expect(afterDelete.snapshots).toEqual([]);
    expect(await sha256File(lunFile), 'the clone after its source is deleted').toBe(cloneBytes);
    checkLoop = await box.attachLoop(lunFile);
    await expectFsckClean(box, checkLoop, 'the clone after its source is deleted');
    await box.mountExt4With(checkLoop, cloneData, ['ro']);
    expect(await treeWithoutFio(cloneData), 'the clone once its source is gone').toEqual(
      expectedClone,
    );
    await box.umount(cloneData);
    await box.detachLoop(checkLoop);

    // ---- an ordinary LUN across a clean restart: no BGCOPY any more, the same bytes
    await expectCleanStop(server);
    const again = await box.mount(pool, mountpoint);
    const restarted = await controlStatus(mountpoint);
    expect(restarted.jobs, 'no BGCOPY after a restart').toEqual([]);
    expect(lunOf(restarted, 'c1')?.clone).toBeNull();
    expect(await sha256File(lunFile), 'the clone after a restart').toBe(cloneBytes);
    await expectCleanStop(again);
  }, 240_000);

  // The RAID-5 case failed in about 1 run of 10 until the RAID-5 row cache kept a held row visible
  // to readers while its write-back ran (raid5-row-cache.ts): the hash taken of the clone at its
  // instant had read zeros where BGCOPY had just copied data, and the clone was right afterwards.
  for (const raid of [0, 5] as const)
    it(`kill -9 in the middle of BGCOPY (RAID-${raid}): a new mount resumes it where it was committed; the clone reads as at its instant`, async () => {
      const box = sandbox();
      const pool = await box.createPool('pool', { drives: 4, driveSize, raid });
      await lunfsOk('lun', 'create', pool, 'db', '--size', `${lunSize / MiB}M`);
      const mountpoint = box.path('mnt');
      const data = box.path('data');
      const cloneData = box.path('clone');
      const first = await box.mount(pool, mountpoint);

      const source = await sourceWithSnapshots(box, pool, mountpoint, data, bulkFiles);
      let sourceLoop = source.loop;
      const atInstant = source.tree;

      // ---- the clone, through the CLI and the control socket, under fio
      const load = new FioLoad(join(data, fioFileName), fioFileBytes, 2);
      await sleep(1500);
      expect(load.running, `fio load ended early:\n${load.problems().join('\n')}`).toBe(true);
      await runOk('sync', ['-f', data]);
      const made = await lunfsOk('clone', pool, 'db', 'c1');
      expect(made.stdout).toMatch(/clone c1 of db made \(clones\/c1\); its background copy runs/);
      // The clone is never written: its bytes at the instant (reading it paces BGCOPY).
      const cloneFile = join(mountpoint, 'clones', 'c1');
      const instantBytes = await sha256PerMiB(cloneFile);
      await writeFiles(data, { 'not-synced.bin': 2 * MiB }); // may or may not survive: not checked

      // ---- kill -9 once BGCOPY is past its first commit (every 64 units of 1 MiB) and not done
      const firstJob = bgcopyOf(await controlStatus(mountpoint), 'c1')!;
      const totalBytes = firstJob.totalBytes;
      expect(totalBytes, 'BGCOPY has more than two commits to make').toBeGreaterThan(128 * MiB);
      const killAtBytes = Math.min(96 * MiB, totalBytes / 2);
      let beforeKill: JobStatus = firstJob;
      for (const deadline = Date.now() + 60_000; beforeKill.doneBytes < killAtBytes;) {
        if (beforeKill.state !== 'running' || Date.now() > deadline) break;
        await sleep(20);
        beforeKill = bgcopyOf(await controlStatus(mountpoint), 'c1')!;
      }
      await first.kill();
      console.info(
        `snapclone kill -9: BGCOPY of ${totalBytes / MiB} MiB at ${beforeKill.doneBytes / MiB} MiB (${beforeKill.progress}) at the last status before the kill`,
      );
      expect(beforeKill.state, 'BGCOPY was running at the last status before the kill').toBe(
        'running',
      );
      expect(beforeKill.progress).toBeGreaterThan(0);
      expect(beforeKill.progress).toBeLessThan(1);
      await load.kill(); // its writes fail: the server is gone
      await box.umount(data, { lazy: true });
      await box.detachLoop(sourceLoop);

      // ---- a mount in a new process resumes BGCOPY with what was left
      const second = await box.mount(pool, mountpoint, ['--log-level', 'info']);
      expect(second.pid).not.toBe(first.pid);
      const ended = await waitForBgcopyEnd(mountpoint, 'c1');
      console.info(
        `snapclone resumed: ${ended.job.totalBytes / MiB} MiB left of ${totalBytes / MiB} MiB`,
      );
      expect(ended.job.totalBytes, 'the resumed BGCOPY copies only what was left').toBeLessThan(
        totalBytes,
      );
      expect(ended.job.totalBytes, 'the kill came before BGCOPY ended').toBeGreaterThan(0);
      expect(second.stderr).toMatch(/snapclone independent: BGCOPY done/);
      await expectIndependent(mountpoint, 'c1', ended);
      const lunFile = join(mountpoint, 'luns', 'c1');
      const afterBytes = await sha256PerMiB(lunFile);
      expect(
        differingMiB(afterBytes, instantBytes),
        'the MiB where the clone after kill -9 and the resumed BGCOPY differs from its instant',
      ).toEqual([]);

      // ---- the clone's ext4: journal replay, its instant's files, clean
      const cloneLoop = await box.attachLoop(lunFile);
      await box.mountExt4(cloneLoop, cloneData);
      expect(await treeWithoutFio(cloneData), "the clone's tree after kill -9").toEqual(atInstant);
      await expectFioBlocksWhole(
        join(cloneData, fioFileName),
        "the clone's fio file after kill -9",
      );
      await box.umount(cloneData);
      await expectFsckClean(box, cloneLoop, 'the clone after kill -9 and journal replay');
      await box.detachLoop(cloneLoop);
      // ---- the source's ext4: journal replay, its synced files, clean
      sourceLoop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
      await box.mountExt4(sourceLoop, data);
      const sourceTree = await treeWithoutFio(data);
      delete sourceTree['not-synced.bin'];
      expect(sourceTree, "the source's synced tree after kill -9").toEqual(atInstant);
      await expectFioBlocksWhole(join(data, fioFileName), "the source's fio file after kill -9");
      await box.umount(data);
      await expectFsckClean(box, sourceLoop, 'the source after kill -9 and journal replay');
      await box.detachLoop(sourceLoop);

      // ---- the source's snapshots and the source deleted: the clone does not change
      const cloneBytes = await sha256File(lunFile); // its ext4 was mounted: journal replayed
      await lunfsOk('snapshot', 'rm', pool, 'db@s1');
      await lunfsOk('snapshot', 'rm', pool, 'db@s2');
      await lunfsOk('lun', 'rm', pool, 'db');
      expect((await statusJson(pool)).luns.map((lun) => lun.name)).toEqual(['c1']);
      expect(await sha256File(lunFile), 'the clone after its source is deleted').toBe(cloneBytes);
      await expectCleanStop(second);
    }, 240_000);
});

describe('snapclone bad input', () => {
  const sandbox = useSandbox('snapclone-input');
  afterEach(async () => {
    for (const load of [...liveLoads]) await load.kill();
  });

  /**
   * The pool as status --json reports it, less what the mount changes on its own: cache counters,
   * open counts, the write intent and the metadata journal.
   */
  function poolState(full: StatusJson): unknown {
    const { cache: _cache, writeIntent: _writeIntent, metadata: _metadata, ...status } = full;
    return {
      ...status,
      luns: status.luns.map(({ open: _open, ...rest }) => rest),
      snapshots: status.snapshots.map(({ open: _open, ...rest }) => rest),
    };
  }

  /** What names the LUNs, clones and snapshots (not byte counts: BGCOPY moves those). */
  function names(status: StatusJson): unknown {
    return {
      luns: status.luns.map((lun) => [lun.name, lun.sizeBytes, lun.clone?.source ?? null]),
      snapshots: status.snapshots.map((snapshot) => snapshot.name),
      jobs: status.jobs.map((job) => [job.id, job.kind, job.lun]),
    };
  }

  /**
   * A refused CLI command: exit code, a one-line `lunfs: ...` message, nothing changed. With
   * progressBar, the message may follow the lines of a progress bar (a clone with the pool not
   * mounted starts its bar before it asks the pool).
   */
  async function expectRefused(
    state: () => Promise<unknown>,
    args: string[],
    exitCode: number,
    message: RegExp,
    options: { progressBar?: boolean } = {},
  ): Promise<void> {
    const before = await state();
    const result = await lunfs(...args);
    const stderr = options.progressBar
      ? result.stderr.replace(/^(copy of clone .*\n|\n)*/, '')
      : result.stderr;
    expect(result.code, describeRun(result)).toBe(exitCode);
    expect(stderr, describeRun(result)).toMatch(/^lunfs: [^\n]*\n$/);
    expect(stderr, describeRun(result)).toMatch(message);
    expect(result.stderr, 'no stack trace for bad input').not.toMatch(/\n\s+at /);
    expect(await state(), `pool changed by \`lunfs ${args.join(' ')}\``).toEqual(before);
  }

  /** A refused shell command on the mountpoint: non-zero exit, the errno's text, no change. */
  async function expectShellRefused(
    state: () => Promise<unknown>,
    command: string,
    args: string[],
    message: RegExp,
  ): Promise<void> {
    const before = await state();
    const result = await run(command, args);
    expect(result.code, describeRun(result)).not.toBe(0);
    expect(result.stderr, describeRun(result)).toMatch(message);
    expect(await state(), `pool changed by \`${command} ${args.join(' ')}\``).toEqual(before);
  }

  it('unknown sources, names taken, bad names, clones/ by hand and removing a source under BGCOPY are refused and change nothing', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 4, driveSize, raid: 5 });
    const mountpoint = box.path('mnt');
    const request = (spec: string): string => join(mountpoint, 'control', 'snapclone', spec);
    await lunfsOk('lun', 'create', pool, 'db', '--size', '64M');
    await lunfsOk('lun', 'create', pool, 'src', '--size', '256M');
    await lunfsOk('lun', 'create', pool, 'pace', '--size', '16M');
    const server = await box.mount(pool, mountpoint);
    const state = async (): Promise<unknown> => poolState(await controlStatus(mountpoint));

    // db: 8 MiB of data, a snapshot, and a clone made with --wait (independent when it returns)
    const dbFile = join(mountpoint, 'luns', 'db');
    await writeRandomLun(dbFile, 8 * MiB);
    await lunfsOk('snapshot', pool, 'db@s1');
    const dbBytes = await sha256File(dbFile);
    const waited = await lunfsOk('clone', pool, 'db', 'done1', '--wait');
    expect(waited.stdout).toMatch(/clone done1 of db made: an independent LUN \(luns\/done1\)/);
    const afterWait = await statusJson(pool);
    expect(bgcopyOf(afterWait, 'done1')).toMatchObject({ state: 'done', progress: 1 });
    expect(lunOf(afterWait, 'done1')?.clone).toBeNull();
    expect(await sha256File(join(mountpoint, 'luns', 'done1'))).toBe(dbBytes);

    // ---- CLI
    await expectRefused(state, ['clone', pool, 'nosuch', 'c9'], 2, /no LUN named 'nosuch'/);
    await expectRefused(state, ['clone', pool, 'db@nosuch', 'c9'], 2, /no snapshot named/);
    await expectRefused(state, ['clone', pool, 'nosuch@s1', 'c9'], 2, /nosuch/);
    await expectRefused(state, ['clone', pool, 'db', 'src'], 2, /'src' exists already/);
    await expectRefused(state, ['clone', pool, 'db', 'done1'], 2, /'done1' exists already/);
    await expectRefused(state, ['clone', pool, 'db', 'db'], 2, /'db' exists already/);
    await expectRefused(state, ['clone', pool, 'db', 'bad name'], 2, /invalid LUN name/);
    await expectRefused(state, ['clone', pool, 'db', '.x'], 2, /invalid LUN name/);
    await expectRefused(state, ['clone', pool, 'db@', 'c9'], 2, /LUN@NAME/);
    await expectRefused(state, ['clone', pool, 'db@.clone-done1', 'c9'], 2, /invalid snapshot/);
    // ---- through the mount
    await expectShellRefused(state, 'touch', [request('nosuch@c9')], /No such file or directory/);
    await expectShellRefused(state, 'touch', [request('db@nosuch@c9')], /No such file/);
    await expectShellRefused(state, 'touch', [request('db@bad name')], /Invalid argument/);
    await expectShellRefused(state, 'touch', [request('db@-x')], /Invalid argument/);
    await expectShellRefused(state, 'touch', [request('@c9')], /Invalid argument/);
    await expectShellRefused(
      state,
      'touch',
      [join(mountpoint, 'clones', 'x')],
      /Operation not permitted/,
    );
    // A name taken: the request file of an existing LUN exists, so an exclusive create is EEXIST.
    for (const taken of ['src', 'done1'])
      await expectShellRefused(
        state,
        process.execPath,
        ['-e', `require('fs').openSync(${JSON.stringify(request(`db@${taken}`))}, 'wx')`],
        /EEXIST/,
      );
    // Not refused but harmless: the mount answers a lookup of control/snapclone/SOURCE@NAME (and
    // of a bare NAME) for any existing LUN NAME, whatever SOURCE, so touch finds a file there and
    // exits 0 without asking for a clone. Nothing may change.
    for (const spec of ['db', 'nosuch@src', 'db@done1']) {
      const before = await state();
      await run('touch', [request(spec)]);
      expect(await state(), `pool changed by touch control/snapclone/${spec}`).toEqual(before);
    }
    const stillWaitedBytes = await sha256File(join(mountpoint, 'luns', 'done1'));
    expect(stillWaitedBytes).toBe(dbBytes);

    // ---- src: 96 MiB of data and a clone whose BGCOPY a rate-limited fio load on another LUN
    // keeps slow (the pacer gives a job 10% of the time while the foreground is busy)
    await writeRandomLun(join(mountpoint, 'luns', 'src'), 96 * MiB);
    const pace = new FioLoad(join(mountpoint, 'luns', 'pace'), 16 * MiB, 2, ['--rate_iops=200']);
    await sleep(500);
    await runOk('touch', [request('src@c2')]);
    const running = async (): Promise<unknown> => names(await controlStatus(mountpoint));
    const expectRunning = async (when: string): Promise<number> => {
      const job = bgcopyOf(await controlStatus(mountpoint), 'c2');
      expect(job?.state, `BGCOPY of c2 still running ${when}`).toBe('running');
      return job!.progress;
    };
    const progressAtClone = await expectRunning('after the clone');
    await expectRefused(running, ['lun', 'rm', pool, 'src'], 1, /source of clone\(s\) c2/);
    await expectShellRefused(
      running,
      'rm',
      [join(mountpoint, 'luns', 'src')],
      /Device or resource busy/,
    );
    const progressAfter = await expectRunning('after the refused removals');
    console.info(
      `snapclone removals refused at BGCOPY progress ${progressAtClone} .. ${progressAfter}`,
    );
    // The clone itself can go while its BGCOPY runs; then its source can.
    await runOk('rm', [join(mountpoint, 'clones', 'c2')]);
    const afterClone = await statusJson(pool);
    expect(afterClone.luns.map((lun) => lun.name)).toEqual(['db', 'src', 'pace', 'done1']);
    expect(bgcopyOf(afterClone, 'c2')?.state, 'the removed clone stops its BGCOPY').toBe('failed');
    await lunfsOk('lun', 'rm', pool, 'src');
    await pace.stop();
    expect(pace.problems()).toEqual([]);

    // ---- not mounted: the CLI opens the pool and waits for the copy
    await expectCleanStop(server);
    const offline = await lunfsOk('clone', pool, 'db@s1', 'off1');
    expect(offline.stdout).toMatch(/clone off1 of db@s1 made: an independent LUN/);
    await expectRefused(
      async () => poolState(await statusJson(pool)),
      ['clone', pool, 'db', 'off1'],
      2,
      /'off1' exists already/,
      { progressBar: true },
    );
    const again = await box.mount(pool, mountpoint);
    const status = await controlStatus(mountpoint);
    expect(lunOf(status, 'off1')?.clone).toBeNull();
    expect(status.jobs).toEqual([]);
    expect(await sha256File(join(mountpoint, 'luns', 'off1'))).toBe(dbBytes);
    await expectCleanStop(again);
  }, 240_000);
});
