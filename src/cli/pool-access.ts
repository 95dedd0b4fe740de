// How the CLI reaches a pool: through the control socket of the process that has it mounted, or
// by opening it here under the pool lock, acting, and closing it cleanly.

import { existsSync } from 'node:fs';
import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Drive } from '../drive/drive.js';
import { FileDrive, type DriveIoMode } from '../drive/file-drive.js';
import { readLabels } from '../meta/drive-labels.js';
import type { RaidLevel } from '../meta/pool-metadata.js';
import { systemClock } from '../util/clock.js';
import { isLunfsError, LunfsError } from '../util/errors.js';
import { MissingDrive } from '../drive/missing-drive.js';
import { layerLogger } from '../util/logger.js';
import { Controller, type StatusJson } from '../volume/controller.js';
import {
  poolFilePath,
  privateDirectoryMode,
  privateFileMode,
  readPoolFile,
  writePoolFile,
} from '../volume/pool-directory.js';
import {
  acquirePoolLock,
  busyError,
  poolLockState,
  tryAcquirePoolLock,
  type HeldPoolLock,
} from '../volume/pool-lock.js';
import { poolPermissionWarnings } from '../volume/pool-permissions.js';
import { Pool } from '../pool/pool.js';
import {
  runControlRequest,
  sendControlRequest,
  sendStreamingRequest,
  type ControlIo,
  type ControlRequest,
} from './control-socket.js';
import { defaultCacheBytes } from '../util/constants.js';

export interface CreatePoolRequest {
  directory: string;
  driveCount?: number;
  driveSizeBytes?: number;
  drivePaths: string[];
  raidLevel: RaidLevel;
  psegSizeBytes?: number;
  allocationUnitBytes?: number;
  stripeUnitBytes?: number;
  rssSize?: number;
}

/**
 * How long a CLI command waits for another lunfs command, or a mount that is starting or stopping,
 * to let go of the pool.
 */
const poolWaitMs = 10_000;
const poolPollMs = 50;

/**
 * Creates a pool; returns warnings about its permissions (a directory the user made open to
 * others).
 */
export async function createPool(request: CreatePoolRequest): Promise<string[]> {
  const directory = resolve(request.directory);
  if (existsSync(poolFilePath(directory)))
    throw new LunfsError(
      'EEXIST',
      `a pool already exists at ${directory} (${poolFilePath(directory)})`,
    );
  const createdDirectory = await makeDirectory(directory, 'a pool');
  // the pool itself is private, whatever the umask
  if (createdDirectory !== undefined) await chmod(directory, privateDirectoryMode);
  let lock: HeldPoolLock;
  try {
    lock = await acquirePoolLock(directory, { pid: process.pid });
  } catch (error) {
    if (createdDirectory) await rm(createdDirectory, { recursive: true, force: true });
    throw refusedDirectory(directory, 'a pool', error);
  }
  const release = (): Promise<void> => lock.release();
  const drives: Drive[] = [];
  const createdFiles: string[] = [];
  let paths: string[] = [];
  try {
    if (request.drivePaths.length > 0) {
      paths = request.drivePaths.map((path) => resolve(path));
      if (new Set(paths).size !== paths.length)
        throw new LunfsError('EINVAL', 'the same drive is given twice');
      for (const path of paths) drives.push(await FileDrive.open(path));
      await refuseLunfsDrives(drives);
    } else {
      if (request.driveCount === undefined || request.driveSizeBytes === undefined)
        throw new LunfsError(
          'EINVAL',
          'give --drives N and --drive-size SIZE, or --drive PATH for each drive',
        );
      if (request.driveSizeBytes === 0)
        throw new LunfsError('EINVAL', 'drive size must be larger than 0');
      if (request.driveSizeBytes % 512 !== 0)
        throw new LunfsError(
          'EINVAL',
          `drive size ${request.driveSizeBytes} is not a whole number of 512-byte sectors`,
        );
      paths = [...Array(request.driveCount).keys()].map((index) =>
        join(directory, `drive-${index}.img`),
      );
      for (const path of paths) {
        drives.push(await FileDrive.createSparse(path, request.driveSizeBytes));
        createdFiles.push(path);
        await chmod(path, privateFileMode); // every LUN's data: owner only, whatever the umask
      }
    }
    const pool = await Pool.format(drives, {
      raidLevel: request.raidLevel,
      psegSizeBytes: request.psegSizeBytes,
      allocationUnitBytes: request.allocationUnitBytes,
      stripeUnitBytes: request.stripeUnitBytes,
      rssSize: request.rssSize,
      drivesZeroed: request.drivePaths.length === 0,
      clock: systemClock,
      random: Math.random,
      log: layerLogger('pool'),
    });
    await writePoolFile(
      directory,
      request.drivePaths.length > 0 ? paths : paths.map((path) => path.slice(directory.length + 1)),
    );
    await pool.close();
  } catch (error) {
    await Promise.all(drives.map((drive) => drive.close()));
    // a failed create leaves nothing behind
    await Promise.all(createdFiles.map((path) => rm(path, { force: true })));
    await release();
    if (createdDirectory) await rm(createdDirectory, { recursive: true, force: true });
    throw error;
  }
  await release();
  return poolPermissionWarnings(directory, paths);
}

/**
 * Makes a directory (the pool's, or a mountpoint) and any missing parents, one level at a time:
 * Node's recursive mkdir spins forever under /proc (each level answers ENOENT). Returns the
 * topmost directory it created (to remove on failure), or undefined when the directory was there
 * already. A path that exists and is not a directory, or where no directory can be made, is
 * refused (EEXIST, EINVAL) with its reason; `purpose` names what it is for in the message.
 */
export async function makeDirectory(
  directory: string,
  purpose: 'a pool' | 'the mountpoint',
): Promise<string | undefined> {
  const missing: string[] = [];
  for (let path = directory; ; path = dirname(path)) {
    const kind = await stat(path).then(
      (info) => (info.isDirectory() ? 'directory' : 'other'),
      (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? 'missing' : error),
    );
    if (kind === 'directory') break;
    if (kind === 'other')
      throw new LunfsError(
        'EEXIST',
        `${path} exists and is not a directory: give a new or empty directory for ${purpose}`,
      );
    if (kind !== 'missing') throw refusedDirectory(directory, purpose, kind);
    missing.unshift(path);
    if (dirname(path) === path) break;
  }
  for (const path of missing) {
    try {
      await mkdir(path);
    } catch (error) {
      if (missing[0] !== path) await rm(missing[0]!, { recursive: true, force: true });
      throw refusedDirectory(directory, purpose, error);
    }
  }
  return missing[0];
}

/**
 * A file system error while making the directory (or the pool's lock in it): bad input, with the
 * reason.
 */
function refusedDirectory(
  directory: string,
  purpose: 'a pool' | 'the mountpoint',
  error: unknown,
): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (isLunfsError(error) || typeof code !== 'string') return error;
  const reason = (error as Error).message.split(',')[0];
  return new LunfsError(
    'EINVAL',
    `${purpose === 'a pool' ? 'cannot create a pool in' : 'cannot make the mountpoint'} ${directory} (${reason})`,
    { cause: error },
  );
}

/** Refuses drives that already carry a lunfs header: pool create never overwrites a pool. */
async function refuseLunfsDrives(drives: Drive[]): Promise<void> {
  for (const drive of drives) {
    const { header } = await readLabels(drive);
    if (header) {
      throw new LunfsError(
        'EEXIST',
        `drive ${drive.path} already belongs to lunfs pool ${header.poolUuid} (drive ${header.driveIndex}); clear its first and last 4 KiB to reuse it`,
      );
    }
  }
}

/** Opens the drives of a pool directory (or the paths given) and the pool on them. */
export async function openPool(
  directory: string,
  options: {
    drivePaths?: string[];
    readOnly?: boolean;
    deferSession?: boolean;
    ioMode?: DriveIoMode;
    forceDegraded?: boolean;
    /** Read-only, without taking the drives' locks: a mount owns them (a migration's copier). */
    shared?: boolean;
  },
): Promise<Pool> {
  const paths =
    options.drivePaths && options.drivePaths.length > 0
      ? options.drivePaths.map((path) => resolve(path))
      : await readPoolFile(directory);
  await refuseDuplicateDrives(paths);
  const drives: Drive[] = [];
  try {
    for (const path of paths) {
      try {
        drives.push(
          options.shared
            ? await FileDrive.openShared(path)
            : await FileDrive.open(path, options.ioMode),
        );
      } catch (error) {
        if (!isLunfsError(error, 'ENOENT') && !isLunfsError(error, 'EIO')) throw error;
        drives.push(
          new MissingDrive(
            path,
            (error as Error).message,
            0,
            isLunfsError(error, 'ENOENT') ? 'absent' : 'error',
          ),
        ); // the pool decides whether it can do without it
      }
    }
    return await Pool.open(drives, {
      clock: systemClock,
      log: layerLogger('pool'),
      readOnly: options.readOnly || options.shared,
      deferSession: options.deferSession,
      forceDegraded: options.forceDegraded,
    });
  } catch (error) {
    await Promise.all(drives.map((drive) => drive.close()));
    throw error;
  }
}

/**
 * Refuses one drive named twice (the same path, or two names of one file): its second open would
 * find it locked by the first and look like a drive in use by another process.
 */
async function refuseDuplicateDrives(paths: string[]): Promise<void> {
  const seen = new Map<string, number>();
  for (const [position, path] of paths.entries()) {
    const identity = await stat(path).then(
      (info) => `${info.dev}:${info.ino}`,
      () => `path:${path}`,
    );
    const first = seen.get(identity);
    if (first !== undefined)
      throw new LunfsError(
        'EINVAL',
        `the same drive is given twice: ${path} as drive ${position} is ${paths[first]} (drive ${first})`,
      );
    seen.set(identity, position);
  }
}

/**
 * Runs a request against the pool: through the mount's control socket when a mount holds the
 * pool, otherwise by opening the pool here (read-only for status), under the pool lock.
 */
export async function withPool(
  directory: string,
  request: ControlRequest,
  onProgress?: (status: StatusJson) => void,
  io: ControlIo = {},
): Promise<unknown> {
  const absolute = resolve(directory);
  await readPoolFile(absolute); // ENOENT for a directory that holds no pool
  const readOnly = request.command === 'status' || request.command === 'snappoint-ls';
  const access = await reachPool(absolute, readOnly);
  if (access.socket !== undefined)
    return request.command === 'export' || request.command === 'import'
      ? sendStreamingRequest(access.socket, request, io)
      : sendControlRequest(access.socket, request);
  try {
    const pool = await openPool(absolute, { readOnly, deferSession: true });
    const controller = localController(absolute, pool);
    try {
      await controller.openSnapshots(readOnly);
      if (!readOnly) await controller.drives.start();
      const ticker = onProgress
        ? setInterval(() => onProgress(controller.status()), 200)
        : undefined;
      try {
        return await runControlRequest(controller, request, io);
      } finally {
        if (ticker) clearInterval(ticker);
      }
    } finally {
      if (readOnly) await pool.abandonSession();
      else await controller.close();
    }
  } finally {
    await access.lock?.release();
  }
}

/**
 * Runs work on a controller of the pool opened here, for writing, under the pool lock: EBUSY if a
 * mount serves the pool (use its socket or mountpoint instead).
 */
export async function withLocalController<T>(
  directory: string,
  work: (controller: Controller) => Promise<T>,
): Promise<T> {
  const absolute = resolve(directory);
  await readPoolFile(absolute);
  const access = await reachPool(absolute, false);
  if (access.socket !== undefined)
    throw new LunfsError('EBUSY', `pool ${absolute} is mounted: it is served by its mount`);
  try {
    const controller = localController(absolute, await openPool(absolute, { deferSession: true }));
    try {
      await controller.openSnapshots(false);
      await controller.drives.start();
      return await work(controller);
    } finally {
      await controller.close();
    }
  } finally {
    await access.lock?.release();
  }
}

/** A controller for a pool this CLI process opened itself (no mount holds it). */
function localController(absolute: string, pool: Pool): Controller {
  return new Controller(pool, {
    cacheBytes: defaultCacheBytes,
    clock: systemClock,
    log: layerLogger('controller'),
    driveSettings: { onDrivePathsChanged: (paths) => recordDrivePaths(absolute, paths) },
    warnings: (drivePaths) => poolPermissionWarnings(absolute, drivePaths),
  });
}

/** Where the mount that holds the pool serves it, if one does. */
export function mountpointOf(directory: string): string | undefined {
  const state = poolLockState(resolve(directory));
  return state.held ? state.owner?.mountpoint : undefined;
}

/** The control socket of the mount that holds the pool, if one does and it is serving. */
export function mountSocket(directory: string): string | undefined {
  const state = poolLockState(resolve(directory));
  return state.held ? state.owner?.socket : undefined;
}

/**
 * Waits until the pool is served by a mount's socket, or is free and (to write) locked by this
 * process. Another lunfs command holding it, or a mount that is starting or stopping (it holds
 * the lock but serves no socket), is waited for, up to poolWaitMs; then EBUSY names the holder.
 */
async function reachPool(
  directory: string,
  readOnly: boolean,
): Promise<{ socket?: string; lock?: HeldPoolLock }> {
  const deadline = systemClock.nowMs() + poolWaitMs;
  for (;;) {
    const state = poolLockState(directory);
    let holder = state.held ? state.owner : undefined;
    if (holder?.socket !== undefined) return { socket: holder.socket };
    if (!state.held) {
      if (readOnly) return {}; // status reads without the lock, as a read-only open changes nothing
      const attempt = tryAcquirePoolLock(directory, { pid: process.pid });
      if (attempt.acquired) return { lock: attempt.lock };
      holder = attempt.owner;
    }
    if (systemClock.nowMs() >= deadline) throw busyError(directory, holder);
    await sleep(poolPollMs);
  }
}

/**
 * Writes the pool's drive paths to pool.json (relative to the pool directory where they lie in it).
 */
export async function recordDrivePaths(directory: string, paths: string[]): Promise<void> {
  const absolute = resolve(directory);
  await writePoolFile(
    absolute,
    paths.map((path) => (path.startsWith(absolute + '/') ? path.slice(absolute.length + 1) : path)),
  );
}
