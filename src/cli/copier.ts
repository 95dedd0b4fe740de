// The copier of a migration (issue 16, seed 003): a process of its own (`lunfs copier`, which
// `lunfs migrate` starts) that copies a live LUN to a target by reading the pool's drives itself.
// The server (the mount, or `lunfs migrate` serving an unmounted pool) gives it, pass by pass, the
// LUN's translation map and the runs its snap-point maps mark (src/volume/migration.ts). The
// copier opens the drives read-only without their locks, each pass anew (so it sees the RStores,
// mappings, drive states and checksum tables the server has committed), and reads each unit
// through the pool's own RStores: checksums checked, degraded RAID-5 rebuilt from parity.
//
// A read that fails while the server writes (a block caught between its data and its checksum,
// or a degraded row rebuilt from members that are changing) is no fault: the copier keeps the
// range and sends it with its next pass request (extra), so the server includes it, with its
// translation, in that pass. Only the final pass, with the LUN's writes held, must read all.
//
// Resuming: the state file (DIR/migrate-LUN.json, written before each acknowledgement) says
// whether a full copy to this target was acknowledged, and which ranges wait to be read again; a
// new run asks for the runs of the maps the server kept plus those, or starts over without it.
// The server's maps are durable, so a kill of either process loses nothing.

import { constants } from 'node:fs';
import { open, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { getPriority, setPriority } from 'node:os';
import { join, resolve } from 'node:path';
import type { BlockDevice } from '../block/block-device.js';
import { systemClock } from '../util/clock.js';
import { isLunfsError, LunfsError } from '../util/errors.js';
import type { Pool } from '../pool/pool.js';
import { sizeOf } from '../drive/file-drive.js';
import { JobPacer } from '../volume/job-pacer.js';
import type { MigrationPass } from '../volume/migration.js';
import { sendControlRequest, type ControlRequest } from './control-socket.js';
import {
  mountSocket,
  mountpointOf,
  openPool,
  withLocalController,
  withPool,
} from './pool-access.js';

export type CopyTargetSpec =
  { kind: 'path'; path: string; force: boolean } | { kind: 'pool'; directory: string; lun: string };

export interface CopierOptions {
  directory: string;
  lun: string;
  target: CopyTargetSpec;
  /** The server's control socket (default: the mount's). */
  socket?: string;
  /** A pass with fewer bytes than this is followed by the final one. */
  smallBytes?: number;
  maxPasses?: number;
  /** Start over with a full copy even when an earlier run left a resumable one. */
  restart?: boolean;
  /** Have the server take snapshot LUN@NAME at the cut-over (what the target then holds). */
  snapshot?: string;
  /** The share of the time the copier may take while the LUN serves I/O (default 0.2). */
  busyShare?: number;
  /**
   * The process's nice value during the passes before the final one (the copier process runs at
   * 19: where cores are few, the kernel then gives them to the server and its users first). The
   * final pass, which holds the LUN's writes, runs at the process's own priority again where the
   * process may raise it back (root). Unset: the priority is left alone (a copier in a test).
   */
  backgroundNice?: number;
  progress?: (event: CopierProgress) => void;
}

export interface CopierProgress {
  pass: number;
  final: boolean;
  doneBytes: number;
  totalBytes: number;
}

export interface CopierReport {
  lun: string;
  target: string;
  sizeBytes: number;
  resumed: boolean;
  passes: Array<{ bytes: number; ms: number; final: boolean; failedReads: number }>;
  copiedBytes: number;
  /** How long the final pass held the LUN's writes. */
  pausedMs: number;
}

/** Where a copier writes: a file, a block device, or a LUN of a pool. */
interface CopyTarget {
  readonly description: string;
  /** Makes the target sizeBytes long; on a full pass, also empty when it can be made so cheaply. */
  prepare(sizeBytes: number, full: boolean): Promise<void>;
  /** Whether every byte reads as zeros now (skip zeros). */
  readonly fresh: boolean;
  write(offsetBytes: number, data: Buffer): Promise<void>;
  zero(offsetBytes: number, lengthBytes: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

const defaultSmallBytes = 16 * 1024 * 1024;
/**
 * While the server's LUNs serve reads and writes, a pass (not the final one) takes about this
 * share of the time: the copier runs in its own process, but on a machine with few cores it
 * competes with the server for them.
 */
const defaultBusyShare = 0.2;

interface Pacer {
  step(): Promise<void>;
  stop(): void;
}

/**
 * A JobPacer (as rebuilds use) fed by the server's count of foreground reads and writes, asked
 * every 100 ms over the control socket.
 */
function pacerFor(request: (body: ControlRequest) => Promise<unknown>, busyShare: number): Pacer {
  let ops = 0;
  let asking = false;
  const timer = setInterval(() => {
    if (asking) return;
    asking = true;
    request({ command: 'activity' })
      .then((answer) => (ops = (answer as { foregroundOps: number }).foregroundOps))
      .catch(() => undefined)
      .finally(() => (asking = false));
  }, 100);
  timer.unref();
  const pacer = new JobPacer({ clock: systemClock, foregroundOps: () => ops, busyShare });
  pacer.jobStarted();
  return { step: () => pacer.step(), stop: () => clearInterval(timer) };
}
const zeros = Buffer.alloc(1024 * 1024);

class FileTarget implements CopyTarget {
  fresh = false;

  private constructor(
    readonly description: string,
    private readonly handle: FileHandle,
    private readonly regular: boolean,
  ) {}

  /** lunFile: the file of a LUN under a mount (it neither shrinks nor is truncated). */
  static async open(path: string, lunFile: boolean): Promise<FileTarget> {
    let regular = true;
    let exists = true;
    try {
      const info = await stat(path);
      regular = info.isFile();
      if (!regular && !info.isBlockDevice())
        throw new LunfsError('EINVAL', `${path} is neither a file nor a block device`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      exists = false;
    }
    // A block device is claimed (O_EXCL): the kernel refuses one that is mounted or in use.
    const flags = exists
      ? constants.O_RDWR | (regular ? 0 : constants.O_EXCL)
      : constants.O_RDWR | constants.O_CREAT | constants.O_EXCL;
    let handle: FileHandle;
    try {
      handle = await open(path, flags, 0o600);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new LunfsError(
        code === 'EBUSY' ? 'EBUSY' : code === 'ENOENT' ? 'ENOENT' : 'EIO',
        `cannot open the target ${path}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    return new FileTarget(path, handle, regular && !lunFile);
  }

  async prepare(sizeBytes: number, full: boolean): Promise<void> {
    const current = (await this.handle.stat()).size;
    this.fresh = false;
    if (this.regular) {
      if (full) {
        await this.handle.truncate(0); // a sparse file of zeros: only data is written
        this.fresh = true;
      }
      if (full || current < sizeBytes) await this.handle.truncate(sizeBytes);
      return;
    }
    const size = current > 0 ? current : await sizeOf(this.description, this.handle);
    if (size < sizeBytes)
      throw new LunfsError(
        'ENOSPC',
        `the target ${this.description} holds ${size} bytes; the LUN needs ${sizeBytes}`,
      );
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(
        data,
        done,
        data.length - done,
        offsetBytes + done,
      );
      done += bytesWritten;
    }
  }

  async zero(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (this.fresh) return;
    for (let done = 0; done < lengthBytes; done += zeros.length)
      await this.write(
        offsetBytes + done,
        zeros.subarray(0, Math.min(zeros.length, lengthBytes - done)),
      );
  }

  async flush(): Promise<void> {
    await this.handle.sync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** A LUN of a pool this process opened (the target pool is not mounted). */
class LunTarget implements CopyTarget {
  fresh = false;

  constructor(
    readonly description: string,
    private readonly device: () => BlockDevice,
    private readonly resize: (sizeBytes: number) => Promise<void>,
    private created: boolean,
  ) {}

  async prepare(sizeBytes: number, full: boolean): Promise<void> {
    if (this.device().sizeBytes < sizeBytes) await this.resize(sizeBytes);
    this.fresh = full && this.created;
    this.created = false;
  }

  write(offsetBytes: number, data: Buffer): Promise<void> {
    return this.device().write(offsetBytes, data);
  }

  async zero(offsetBytes: number, lengthBytes: number): Promise<void> {
    if (!this.fresh) await this.device().discard(offsetBytes, lengthBytes);
  }

  flush(): Promise<void> {
    return this.device().flush();
  }

  async close(): Promise<void> {}
}

/** Runs a copier to its end (the final pass done) and reports it. */
export async function runCopier(options: CopierOptions): Promise<CopierReport> {
  const directory = resolve(options.directory);
  const socket = options.socket ?? mountSocket(directory);
  if (socket === undefined)
    throw new LunfsError(
      'EINVAL',
      `pool ${directory} is not mounted: lunfs migrate serves it to the copier (or mount it)`,
    );
  const request = (body: ControlRequest): Promise<unknown> => sendControlRequest(socket, body);
  const source = (await request({ command: 'status' })) as {
    luns: Array<{ name: string; sizeBytes: number }>;
  };
  const lunStatus = source.luns.find((lun) => lun.name === options.lun);
  if (!lunStatus) throw new LunfsError('ENOENT', `pool ${directory} has no LUN '${options.lun}'`);
  return withTarget(options.target, lunStatus.sizeBytes, async (target) => {
    const statePath = join(directory, `migrate-${options.lun}.json`);
    const state = await readState(statePath);
    const resumed =
      !options.restart && state?.target === target.description && state.fullDone === true;
    if (!resumed && options.target.kind === 'path' && !options.target.force)
      await refuseNonEmpty(options.target.path, state?.target === target.description);
    const report: CopierReport = {
      lun: options.lun,
      target: target.description,
      sizeBytes: lunStatus.sizeBytes,
      resumed,
      passes: [],
      copiedBytes: 0,
      pausedMs: 0,
    };
    const ownPriority = getPriority();
    const smallBytes = options.smallBytes ?? defaultSmallBytes;
    const maxPasses = options.maxPasses ?? 10;
    let restart = !resumed;
    let retry: Array<[number, number]> = resumed ? (state?.retry ?? []) : [];
    for (let passNumber = 1; ; passNumber += 1) {
      const final =
        !restart &&
        (report.passes.length >= maxPasses - 1 ||
          (report.passes.length > 0 &&
            report.passes.at(-1)!.bytes <= smallBytes &&
            report.passes.at(-1)!.failedReads === 0));
      const pass = (await request({
        command: 'migrate-pass',
        name: options.lun,
        restart,
        final,
        ...(retry.length > 0 ? { extra: retry } : {}),
        ...(final && options.snapshot !== undefined ? { snapshot: options.snapshot } : {}),
      })) as MigrationPass;
      restart = false;
      if (options.backgroundNice !== undefined)
        setOwnPriority(final ? ownPriority : options.backgroundNice);
      const started = systemClock.nowMs();
      let failed: Array<[number, number]> = [];
      try {
        await target.prepare(pass.sizeBytes, pass.full);
        failed = await copyPass(
          directory,
          pass,
          target,
          final,
          (doneBytes) =>
            options.progress?.({ pass: passNumber, final, doneBytes, totalBytes: pass.bytes }),
          final ? undefined : pacerFor(request, options.busyShare ?? defaultBusyShare),
        );
        await target.flush(); // durable before the server drops the maps this pass covered
      } catch (error) {
        if (final)
          await request({ command: 'migrate-release', name: options.lun }).catch(() => undefined);
        throw error;
      }
      report.passes.push({
        bytes: pass.bytes,
        ms: systemClock.nowMs() - started,
        final,
        failedReads: failed.length,
      });
      report.copiedBytes += pass.bytes;
      if (final) {
        const finished = (await request({ command: 'migrate-finish', name: options.lun })) as {
          pausedMs: number;
        };
        report.pausedMs = finished.pausedMs;
        await rm(statePath, { force: true });
        return report;
      }
      retry = failed;
      await writeState(statePath, { target: target.description, fullDone: true, retry });
      await request({ command: 'migrate-ack', name: options.lun, covers: pass.covers });
    }
  });
}

/** Sets this process's nice value; a refusal (raising it back needs privilege) is no error. */
function setOwnPriority(nice: number): void {
  try {
    setPriority(nice);
  } catch {
    // the pass runs at the priority it has
  }
}

/** Copies a pass's runs; returns the ranges it could not read (the final pass throws instead). */
async function copyPass(
  directory: string,
  pass: MigrationPass,
  target: CopyTarget,
  final: boolean,
  progress: (doneBytes: number) => void,
  pacer?: Pacer,
): Promise<Array<[number, number]>> {
  // opened anew for each pass: what the server committed before answering is what it reads
  const open = (): Promise<Pool> => openPool(directory, { shared: true, deferSession: true });
  let pool = await open();
  const units = new Map(pass.units);
  const unitBytes = pass.allocationUnitBytes;
  const buffer = Buffer.alloc(unitBytes);
  const failed: Array<[number, number]> = [];
  let doneBytes = 0;
  try {
    for (const [runOffset, runLength] of pass.runs) {
      for (let offset = runOffset; offset < runOffset + runLength;) {
        const unit = Math.floor(offset / unitBytes);
        const inUnit = offset - unit * unitBytes;
        const length = Math.min(unitBytes - inUnit, runOffset + runLength - offset);
        const entry = units.get(unit);
        if (!entry) await target.zero(offset, length);
        else {
          const slice = buffer.subarray(0, length);
          const mismatches = pool.health.integrity.checksumMismatches;
          const failedBefore = pool.health.failedDrives().length;
          try {
            await pool.rstore(entry[0]).read(entry[1] * unitBytes + inUnit, slice);
            // A member that failed its checksum was rebuilt from the others, which the server
            // may be changing too (a parity it holds in memory, not yet written): before the
            // final pass such a read proves nothing, and is read again.
            if (!final && pool.health.integrity.checksumMismatches !== mismatches)
              throw new LunfsError('EIO', 'a member failed its checksum while the LUN changes');
            await target.write(offset, slice);
          } catch (error) {
            if (final || !isLunfsError(error)) throw error;
            failed.push([offset, length]); // caught mid-change: the next pass reads it again
          }
          if (
            pool.health.failedDrives().length !== failedBefore ||
            (pool.health.integrity.checksumMismatches !== mismatches &&
              pool.metadata.config.raidLevel !== 0)
          ) {
            // The read-only pool tried to write a repair, could not, and took that member out
            // of service: from then on it would rebuild the member's data from the others,
            // silently old where the server is changing them; and what it keeps of the member
            // (checksum table pages) is old too. A fresh open sees it as the server does. RAID-0
            // has nothing to rebuild from: a mismatch there is a failed read, retried, and
            // reopening at each one cost half of the copier's CPU under random writes. (Without
            // the reopen, a degraded RAID-5 copy came out wrong: test/e2e/migrate.test.ts.)
            await pool.abandonSession();
            pool = await open();
          }
        }
        offset += length;
        doneBytes += length;
        progress(doneBytes);
        await pacer?.step();
      }
    }
  } finally {
    pacer?.stop();
    await pool.abandonSession();
  }
  return failed;
}

async function withTarget<T>(
  spec: CopyTargetSpec,
  sizeBytes: number,
  work: (target: CopyTarget) => Promise<T>,
): Promise<T> {
  if (spec.kind === 'path') {
    const target = await FileTarget.open(resolve(spec.path), false);
    try {
      return await work(target);
    } finally {
      await target.close();
    }
  }
  const directory = resolve(spec.directory);
  const status = (await withPool(directory, { command: 'status' })) as {
    luns: Array<{ name: string; sizeBytes: number }>;
  };
  const existing = status.luns.find((lun) => lun.name === spec.lun);
  const mountpoint = mountSocket(directory) === undefined ? undefined : mountpointOf(directory);
  if (mountpoint !== undefined) {
    if (!existing) await withPool(directory, { command: 'lun-create', name: spec.lun, sizeBytes });
    else if (existing.sizeBytes < sizeBytes)
      await withPool(directory, { command: 'lun-resize', name: spec.lun, sizeBytes });
    const target = await FileTarget.open(join(mountpoint, 'luns', spec.lun), true);
    if (!existing) target.fresh = true;
    try {
      return await work(target);
    } finally {
      await target.close();
    }
  }
  return withLocalController(directory, async (controller) => {
    const created = !controller.pool.hasLun(spec.lun);
    if (created) await controller.createLun(spec.lun, sizeBytes);
    const target = new LunTarget(
      `LUN ${spec.lun} of pool ${directory}`,
      () => controller.stack(spec.lun).cache,
      (size) => controller.resizeLun(spec.lun, size),
      created,
    );
    return work(target);
  });
}

/**
 * Refuses, before anything starts, a target file that holds data and is not the one an
 * interrupted migration of this LUN was copying to (unless force).
 */
export async function checkTarget(
  directory: string,
  lun: string,
  target: CopyTargetSpec,
): Promise<void> {
  if (target.kind !== 'path' || target.force) return;
  const state = await readState(join(resolve(directory), `migrate-${lun}.json`));
  await refuseNonEmpty(resolve(target.path), state?.target === resolve(target.path));
}

async function refuseNonEmpty(path: string, sameTarget: boolean): Promise<void> {
  try {
    const info = await stat(path);
    if (info.isFile() && info.size > 0 && !sameTarget)
      throw new LunfsError(
        'EEXIST',
        `the target ${path} exists and is not empty: give --force to overwrite it`,
      );
  } catch (error) {
    if (!isLunfsError(error)) return;
    throw error;
  }
}

interface CopierState {
  target: string;
  fullDone: boolean;
  /** Ranges to read again in the next pass. */
  retry?: Array<[number, number]>;
}

async function readState(path: string): Promise<CopierState | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as CopierState;
  } catch {
    return undefined;
  }
}

async function writeState(path: string, state: CopierState): Promise<void> {
  await writeFile(`${path}.tmp`, JSON.stringify(state) + '\n', { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}
