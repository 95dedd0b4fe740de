// Helpers for the end-to-end tests: real `lunfs mount` processes, real FUSE, loop devices, ext4.
// Everything a test sets up is recorded in a Sandbox, and the Sandbox undoes it in afterEach /
// afterAll even when the test failed half-way: it lazily unmounts ext4, detaches its own loop
// devices (checked by disk sequence number, so a loop device number reused by someone else is
// never touched), stops its `lunfs mount` processes (SIGTERM, then SIGKILL), lazily unmounts a FUSE
// mount left stale by a killed server, and removes its temporary directory. It then checks that
// nothing is left (no mount, loop device or process) and fails the hook if something is.
//
// Other engineers run their own FUSE tests on this machine at the same time: helpers only look at
// mounts and loop devices under the sandbox's own directory.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import type { StatusJson } from '../../src/volume/controller.js';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const lunfsBin = join(repoRoot, 'bin', 'lunfs');
export const MiB = 1024 * 1024;

if (!existsSync(join(repoRoot, 'dist', 'bin.js'))) {
  throw new Error(
    `${join(repoRoot, 'dist', 'bin.js')} is missing: run \`make build\` before the e2e tests`,
  );
}

// ---------------------------------------------------------------------------------------------
// Running commands

export interface RunResult {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Every child this module started and that has not exited yet: killed when the worker exits. */
const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

/** Runs a command to completion; never throws on a non-zero exit (see runOk). */
export function run(
  command: string,
  args: string[],
  options: { timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    liveChildren.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => {
      stderr += `\n[e2e: ${command} killed after ${timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      resolve({ command: [command, ...args].join(' '), code, signal, stdout, stderr });
    });
  });
}

/** Runs a command and throws (with its stderr) unless it exits 0. */
export async function runOk(
  command: string,
  args: string[],
  options: { timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `\`${result.command}\` failed (exit ${result.code ?? result.signal}):\n${result.stderr}${result.stdout}`,
    );
  }
  return result;
}

/** `node bin/lunfs ARGS`, whatever the exit code. */
export function lunfs(...args: string[]): Promise<RunResult> {
  return run(process.execPath, [lunfsBin, ...args]);
}

/** `node bin/lunfs ARGS`, which must succeed. */
export function lunfsOk(...args: string[]): Promise<RunResult> {
  return runOk(process.execPath, [lunfsBin, ...args]);
}

export async function statusJson(poolDirectory: string): Promise<StatusJson> {
  return JSON.parse((await lunfsOk('status', poolDirectory, '--json')).stdout) as StatusJson;
}

// ---------------------------------------------------------------------------------------------
// Kernel state: /proc/mounts and loop devices

export interface MountEntry {
  source: string;
  mountpoint: string;
  type: string;
}

function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(parseInt(octal, 8)),
  );
}

export async function mountsUnder(root: string): Promise<MountEntry[]> {
  const text = await readFile('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [source, mountpoint, type] = line.split(' ');
      return {
        source: unescapeMountField(source!),
        mountpoint: unescapeMountField(mountpoint!),
        type: type!,
      };
    })
    .filter((entry) => entry.mountpoint === root || entry.mountpoint.startsWith(root + '/'));
}

export async function mountEntriesAt(mountpoint: string): Promise<MountEntry[]> {
  return (await mountsUnder(mountpoint)).filter((entry) => entry.mountpoint === mountpoint);
}

/**
 * A loop device attached by a sandbox. It is identified by its device name and its disk sequence
 * number (/sys/block/loopN/diskseq, which the kernel bumps at every attach and detach): the
 * backing file's device and inode cannot be used, because once the FUSE server below is dead the
 * kernel can no longer stat the file, and a device number may be reused by someone else.
 */
export interface LoopDevice {
  device: string;
  backingFile: string;
  diskseq: string;
}

function sysfsLoop(device: string): string {
  return join('/sys/block', device.replace(/^\/dev\//, ''));
}

async function readSysfs(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Whether the loop device is still attached with the backing file we attached. */
async function stillOurs(loop: LoopDevice): Promise<boolean> {
  const backing = await readSysfs(join(sysfsLoop(loop.device), 'loop', 'backing_file'));
  const diskseq = await readSysfs(join(sysfsLoop(loop.device), 'diskseq'));
  return backing !== undefined && diskseq === loop.diskseq;
}

/** Attached loop devices and their backing files (paths as the kernel prints them). */
export async function listLoops(): Promise<Array<{ device: string; backingFile: string }>> {
  const found: Array<{ device: string; backingFile: string }> = [];
  for (const name of await readdir('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    const backingFile = await readSysfs(join('/sys/block', name, 'loop', 'backing_file'));
    if (backingFile !== undefined) found.push({ device: `/dev/${name}`, backingFile });
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// A `lunfs mount` process

/**
 * LUNFS_TEST_FRONT=native (or fuse-native) runs every mount of the e2e suite on that FUSE front,
 * so that one suite proves both fronts (issue 12); a test that names its front keeps it.
 */
export const testFront = process.env['LUNFS_TEST_FRONT'];

function withTestFront(args: string[]): string[] {
  return testFront === undefined || args.includes('--front')
    ? args
    : [...args, '--front', testFront];
}

export class MountServer {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  /** bin: the CLI to run (another build of lunfs; default this checkout's bin/lunfs). */
  constructor(
    readonly poolDirectory: string,
    readonly mountpoint: string,
    args: string[],
    bin = lunfsBin,
  ) {
    this.child = spawn(process.execPath, [bin, 'mount', poolDirectory, mountpoint, ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    liveChildren.add(this.child);
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        liveChildren.delete(this.child);
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Resolves once the server printed its ready line; rejects if it exits or takes too long. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!/lunfs: pool .* mounted at /.test(this.stdout)) {
      if (!this.running)
        throw new Error(
          `lunfs mount exited (${JSON.stringify(this.exitStatus)}) before it was ready:\n${this.stderr}${this.stdout}`,
        );
      if (Date.now() > deadline)
        throw new Error(
          `lunfs mount not ready after ${timeoutMs} ms:\n${this.stderr}${this.stdout}`,
        );
      await sleep(20);
    }
  }

  /** SIGTERM (flush and unmount cleanly) and wait for the exit; SIGKILL if it takes too long. */
  async stop(timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.running) return this.exitStatus!;
    this.child.kill('SIGTERM');
    const outcome = await Promise.race([this.exited, sleep(timeoutMs).then(() => undefined)]);
    if (outcome) return outcome;
    await this.kill();
    throw new Error(
      `lunfs mount (pid ${this.pid}) did not stop within ${timeoutMs} ms of SIGTERM; killed it:\n${this.stderr}`,
    );
  }

  /**
   * SIGKILL and wait for the exit. With leaveStaleMount the dead FUSE mount stays in /proc/mounts
   * (to check that the next `lunfs mount` cleans it up itself); otherwise it is `fusermount -uz`ed.
   */
  async kill(options: { leaveStaleMount?: boolean } = {}): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
    if (!options.leaveStaleMount) await lazyUnmountFuse(this.mountpoint);
  }
}

async function lazyUnmountFuse(mountpoint: string): Promise<void> {
  for (
    let attempt = 0;
    attempt < 5 && (await mountEntriesAt(mountpoint)).length > 0;
    attempt += 1
  ) {
    const result = await run('fusermount', ['-uz', mountpoint], { timeoutMs: 10_000 });
    if (result.code !== 0) await run('umount', ['-l', mountpoint], { timeoutMs: 10_000 });
  }
}

// ---------------------------------------------------------------------------------------------
// The sandbox

export interface PoolOptions {
  drives?: number;
  driveSize?: string;
  raid: 0 | 1 | 5;
  extra?: string[];
}

export class Sandbox {
  private readonly servers = new Set<MountServer>();
  private loops: LoopDevice[] = [];
  /** Every loop device this sandbox ever attached, for the final leftover check. */
  private readonly attachedLoops: LoopDevice[] = [];
  private ext4Mounts: string[] = [];

  private constructor(readonly root: string) {}

  static async create(prefix: string): Promise<Sandbox> {
    return new Sandbox(await mkdtemp(join(tmpdir(), `lunfs-e2e-${prefix}-`)));
  }

  path(...parts: string[]): string {
    return join(this.root, ...parts);
  }

  async mkdir(...parts: string[]): Promise<string> {
    const directory = this.path(...parts);
    await mkdir(directory, { recursive: true });
    return directory;
  }

  /** `lunfs pool create` of sparse file drives in ROOT/NAME; returns the pool directory. */
  async createPool(name: string, options: PoolOptions): Promise<string> {
    const directory = this.path(name);
    await lunfsOk(
      'pool',
      'create',
      directory,
      '--drives',
      String(options.drives ?? 4),
      '--drive-size',
      options.driveSize ?? '256M',
      '--raid',
      String(options.raid),
      ...(options.extra ?? []),
    );
    return directory;
  }

  /** Starts `lunfs mount` in the background and waits for its ready line. */
  async mount(
    poolDirectory: string,
    mountpoint: string,
    args: string[] = [],
    bin?: string,
  ): Promise<MountServer> {
    const server = this.spawnMount(poolDirectory, mountpoint, args, bin);
    await server.ready();
    return server;
  }

  /** Starts `lunfs mount` without waiting (for mounts expected to fail). */
  spawnMount(
    poolDirectory: string,
    mountpoint: string,
    args: string[] = [],
    bin?: string,
  ): MountServer {
    const server = new MountServer(poolDirectory, mountpoint, withTestFront(args), bin);
    this.servers.add(server);
    return server;
  }

  async attachLoop(file: string): Promise<LoopDevice> {
    const device = (await runOk('losetup', ['-f', '--show', file])).stdout.trim();
    const diskseq = await readSysfs(join(sysfsLoop(device), 'diskseq'));
    if (diskseq === undefined) throw new Error(`losetup attached ${device} but it has no diskseq`);
    const loop = { device, backingFile: file, diskseq };
    this.loops.push(loop);
    this.attachedLoops.push(loop);
    return loop;
  }

  /** Like attachLoop, with `losetup -r`: a read-only loop device (for a snapshot file, say). */
  async attachLoopReadOnly(file: string): Promise<LoopDevice> {
    const device = (await runOk('losetup', ['-r', '-f', '--show', file])).stdout.trim();
    const diskseq = await readSysfs(join(sysfsLoop(device), 'diskseq'));
    if (diskseq === undefined)
      throw new Error(`losetup -r attached ${device} but it has no diskseq`);
    const loop = { device, backingFile: file, diskseq };
    this.loops.push(loop);
    this.attachedLoops.push(loop);
    return loop;
  }

  /** Detaches the loop device if it is still ours (same attachment: see LoopDevice). */
  async detachLoop(loop: LoopDevice): Promise<void> {
    this.loops = this.loops.filter((other) => other !== loop);
    if (!(await stillOurs(loop))) return; // detached already (autoclear), or reused by someone else
    await runOk('losetup', ['-d', loop.device], { timeoutMs: 30_000 });
  }

  async mkfsExt4(loop: LoopDevice): Promise<void> {
    await runOk('mkfs.ext4', ['-q', '-F', loop.device], { timeoutMs: 60_000 });
  }

  /** `fsck.ext4 -fn`: returns its result; exit 0 means clean. */
  fsckExt4(loop: LoopDevice): Promise<RunResult> {
    return run('fsck.ext4', ['-fn', loop.device], { timeoutMs: 60_000 });
  }

  async mountExt4(loop: LoopDevice, directory: string): Promise<void> {
    await mkdir(directory, { recursive: true });
    await runOk('mount', ['-t', 'ext4', loop.device, directory], { timeoutMs: 60_000 });
    this.ext4Mounts.push(directory);
  }

  /** Like mountExt4, with mount options: e.g. ['ro', 'noload'] for a snapshot of a mounted ext4. */
  async mountExt4With(loop: LoopDevice, directory: string, options: string[]): Promise<void> {
    await mkdir(directory, { recursive: true });
    await runOk('mount', ['-t', 'ext4', '-o', options.join(','), loop.device, directory], {
      timeoutMs: 60_000,
    });
    this.ext4Mounts.push(directory);
  }

  /** Unmounts an ext4 mounted by mountExt4; lazy is for cleanup paths (dead FUSE server below). */
  async umount(directory: string, options: { lazy?: boolean } = {}): Promise<void> {
    this.ext4Mounts = this.ext4Mounts.filter((other) => other !== directory);
    if ((await mountEntriesAt(directory)).length === 0) return;
    await runOk('umount', options.lazy ? ['-l', directory] : [directory], { timeoutMs: 60_000 });
  }

  /**
   * Releases everything this sandbox set up, in the safe order: ext4 (lazily), loop devices,
   * servers (SIGTERM, else SIGKILL), stale FUSE mounts. Keeps the files. Returns what it had to
   * undo.
   */
  async release(): Promise<string[]> {
    const undone: string[] = [];
    for (const directory of [...this.ext4Mounts].reverse()) {
      undone.push(`ext4 at ${directory}`);
      await this.umount(directory, { lazy: true }).catch(() => undefined);
    }
    for (const loop of [...this.loops].reverse()) {
      undone.push(`loop ${loop.device}`);
      await this.detachLoop(loop).catch(() => undefined);
    }
    for (const server of this.servers) {
      if (server.running) {
        undone.push(`lunfs mount pid ${server.pid}`);
        try {
          await server.stop(15_000);
        } catch {
          // stop() already killed it
        }
      }
      await lazyUnmountFuse(server.mountpoint);
    }
    this.servers.clear();
    // Anything else mounted under the sandbox (a mount the test made by hand): lazily unmount it.
    for (const entry of (await mountsUnder(this.root)).reverse()) {
      undone.push(`${entry.type} at ${entry.mountpoint}`);
      if (entry.type.startsWith('fuse')) await lazyUnmountFuse(entry.mountpoint);
      else await run('umount', ['-l', entry.mountpoint]);
    }
    return undone;
  }

  /**
   * What is still left of this sandbox in the kernel: mounts under it, loop devices on its files.
   */
  async leftovers(): Promise<string[]> {
    const found: string[] = [];
    for (const entry of await mountsUnder(this.root))
      found.push(`mount ${entry.type} at ${entry.mountpoint}`);
    for (const loop of this.attachedLoops)
      if (await stillOurs(loop)) found.push(`loop device ${loop.device} on ${loop.backingFile}`);
    for (const loop of await listLoops()) {
      if (
        loop.backingFile.startsWith(this.root + '/') &&
        !found.some((line) => line.startsWith(`loop device ${loop.device} `))
      )
        found.push(`loop device ${loop.device} on ${loop.backingFile}`);
    }
    for (const server of this.servers)
      if (server.running) found.push(`lunfs mount pid ${server.pid}`);
    return found;
  }

  /**
   * release(), then checks nothing is left and removes the directory. Throws if something is left.
   */
  async destroy(): Promise<void> {
    await this.release();
    // A lazily unmounted ext4 lets go of its loop device a moment later: give the kernel time.
    let left = await this.leftovers();
    for (let attempt = 0; attempt < 50 && left.length > 0; attempt += 1) {
      await sleep(100);
      left = await this.leftovers();
    }
    if (left.length > 0)
      throw new Error(`e2e sandbox ${this.root} left behind:\n  ${left.join('\n  ')}`);
    await rm(this.root, { recursive: true, force: true });
  }
}

/**
 * Registers the hooks for a sandbox. per 'test': a fresh sandbox for each test, destroyed after it.
 * per 'file': one sandbox for the file; after each test everything it mounted, attached or started
 * is released (the files stay), and the sandbox is destroyed after the last test.
 */
export function useSandbox(prefix: string, per: 'test' | 'file' = 'test'): () => Sandbox {
  let sandbox: Sandbox | undefined;
  if (per === 'test') {
    beforeEach(async () => {
      sandbox = await Sandbox.create(prefix);
    });
    afterEach(async () => {
      const current = sandbox;
      sandbox = undefined;
      await current?.destroy();
    });
  } else {
    beforeAll(async () => {
      sandbox = await Sandbox.create(prefix);
    });
    afterEach(async () => {
      await sandbox?.release();
    });
    afterAll(async () => {
      const current = sandbox;
      sandbox = undefined;
      await current?.destroy();
    });
  }
  return () => {
    if (!sandbox) throw new Error('no sandbox: useSandbox() hooks did not run');
    return sandbox;
  };
}

// ---------------------------------------------------------------------------------------------
// Data

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 of a file, or of its first `length` bytes, read in 1 MiB pieces. */
export async function sha256File(path: string, length?: number): Promise<string> {
  const handle = await open(path, 'r');
  try {
    const hash = createHash('sha256');
    const total = length ?? (await handle.stat()).size;
    const buffer = Buffer.alloc(MiB);
    for (let done = 0; done < total;) {
      const { bytesRead } = await handle.read(
        buffer,
        0,
        Math.min(buffer.length, total - done),
        done,
      );
      if (bytesRead === 0) throw new Error(`${path}: short read at ${done} of ${total}`);
      hash.update(buffer.subarray(0, bytesRead));
      done += bytesRead;
    }
    return hash.digest('hex');
  } finally {
    await handle.close();
  }
}

/** sha256 of each MiB of a file (the last one may be shorter), read in 1 MiB pieces. */
export async function sha256PerMiB(path: string): Promise<string[]> {
  const handle = await open(path, 'r');
  try {
    const total = (await handle.stat()).size;
    const buffer = Buffer.alloc(MiB);
    const digests: string[] = [];
    for (let done = 0; done < total;) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(MiB, total - done), done);
      if (bytesRead === 0) throw new Error(`${path}: short read at ${done} of ${total}`);
      digests.push(sha256(buffer.subarray(0, bytesRead)));
      done += bytesRead;
    }
    return digests;
  } finally {
    await handle.close();
  }
}

/** The MiB (by index) where two lists of sha256PerMiB differ, for a failure message. */
export function differingMiB(actual: string[], expected: string[]): number[] {
  const differ: number[] = [];
  for (let index = 0; index < Math.max(actual.length, expected.length); index += 1)
    if (actual[index] !== expected[index]) differ.push(index);
  return differ;
}

/**
 * Writes `size` random bytes to a file (fsync'ed, so they reach the filesystem below) and
 * returns their sha256.
 */
export async function writeRandomFile(path: string, size: number): Promise<string> {
  const handle = await open(path, 'w');
  const hash = createHash('sha256');
  try {
    for (let done = 0; done < size;) {
      const piece = randomBytes(Math.min(4 * MiB, size - done));
      hash.update(piece);
      await handle.write(piece, 0, piece.length, done);
      done += piece.length;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

/**
 * A cheap fingerprint of a pool directory: every file's name, size and modification time. Any
 * write to a drive, pool.json or a lock file changes it.
 */
export async function directoryFingerprint(directory: string): Promise<string> {
  const names = (await readdir(directory)).sort();
  const lines: string[] = [];
  for (const name of names) {
    const info = await stat(join(directory, name), { bigint: true });
    lines.push(`${name} ${info.size} ${info.mtimeNs}`);
  }
  return lines.join('\n');
}

/**
 * Every entry under `root` (lost+found left out), sorted by path: a directory as `path/` with the
 * value 'dir', a file with its sha256. Two trees are equal, file by file, when these are equal.
 */
export async function treeChecksums(root: string): Promise<Record<string, string>> {
  const found: Array<[string, string]> = [];
  async function walk(relative: string): Promise<void> {
    for (const entry of await readdir(join(root, relative), { withFileTypes: true })) {
      const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (path === 'lost+found') continue;
      if (entry.isDirectory()) {
        found.push([`${path}/`, 'dir']);
        await walk(path);
      } else if (entry.isFile()) {
        found.push([path, await sha256File(join(root, path))]);
      } else {
        found.push([path, 'not a regular file']);
      }
    }
  }
  await walk('');
  return Object.fromEntries(found.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
