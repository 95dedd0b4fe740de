// How the CLI reaches a pool: through the control socket of the process that has it mounted, or
// by opening it here under the pool lock, acting, and closing it cleanly.

import { existsSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Drive } from '../drive/drive.js';
import { FileDrive, type DriveIoMode } from '../drive/file-drive.js';
import { decodeDriveHeader, driveHeaderBytes } from '../meta/drive-header.js';
import type { RaidLevel } from '../meta/pool-metadata.js';
import { systemClock } from '../util/clock.js';
import { isLunfsError, LunfsError } from '../util/errors.js';
import { MissingDrive } from '../drive/missing-drive.js';
import { layerLogger } from '../util/logger.js';
import { Controller, type StatusJson } from '../volume/controller.js';
import { acquirePoolLock, liveLockOwner, poolFilePath, readPoolFile, socketPath, writePoolFile } from '../volume/pool-directory.js';
import { Pool } from '../volume/pool.js';
import { defaultCacheBytes } from '../volume/stack.js';
import { runControlRequest, sendControlRequest, type ControlRequest } from './control-socket.js';

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

export async function createPool(request: CreatePoolRequest): Promise<void> {
  const directory = resolve(request.directory);
  if (existsSync(poolFilePath(directory))) throw new LunfsError('EEXIST', `a pool already exists at ${directory} (${poolFilePath(directory)})`);
  const createdDirectory = await makeDirectory(directory, 'a pool');
  let release: () => Promise<void>;
  try {
    release = await acquirePoolLock(directory, { pid: process.pid });
  } catch (error) {
    if (createdDirectory) await rm(createdDirectory, { recursive: true, force: true });
    throw refusedDirectory(directory, 'a pool', error);
  }
  const drives: Drive[] = [];
  const createdFiles: string[] = [];
  try {
    let paths: string[];
    if (request.drivePaths.length > 0) {
      paths = request.drivePaths.map((path) => resolve(path));
      if (new Set(paths).size !== paths.length) throw new LunfsError('EINVAL', 'the same drive is given twice');
      for (const path of paths) drives.push(await FileDrive.open(path));
      await refuseLunfsDrives(drives);
    } else {
      if (request.driveCount === undefined || request.driveSizeBytes === undefined) throw new LunfsError('EINVAL', 'give --drives N and --drive-size SIZE, or --drive PATH for each drive');
      if (request.driveSizeBytes === 0) throw new LunfsError('EINVAL', 'drive size must be larger than 0');
      if (request.driveSizeBytes % 512 !== 0) throw new LunfsError('EINVAL', `drive size ${request.driveSizeBytes} is not a whole number of 512-byte sectors`);
      paths = [...Array(request.driveCount).keys()].map((index) => join(directory, `drive-${index}.img`));
      for (const path of paths) {
        drives.push(await FileDrive.createSparse(path, request.driveSizeBytes));
        createdFiles.push(path);
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
    await writePoolFile(directory, request.drivePaths.length > 0 ? paths : paths.map((path) => path.slice(directory.length + 1)));
    await pool.close();
  } catch (error) {
    await Promise.all(drives.map((drive) => drive.close()));
    await Promise.all(createdFiles.map((path) => rm(path, { force: true }))); // a failed create leaves nothing behind
    await release();
    if (createdDirectory) await rm(createdDirectory, { recursive: true, force: true });
    throw error;
  }
  await release();
}

/**
 * Makes a directory (the pool's, or a mountpoint) and any missing parents, one level at a time:
 * Node's recursive mkdir spins forever under /proc (each level answers ENOENT). Returns the
 * topmost directory it created (to remove on failure), or undefined when the directory was there
 * already. A path that exists and is not a directory, or where no directory can be made, is
 * refused (EEXIST, EINVAL) with its reason; `purpose` names what it is for in the message.
 */
export async function makeDirectory(directory: string, purpose: 'a pool' | 'the mountpoint'): Promise<string | undefined> {
  const missing: string[] = [];
  for (let path = directory; ; path = dirname(path)) {
    const kind = await stat(path).then((info) => (info.isDirectory() ? 'directory' : 'other'), (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? 'missing' : error));
    if (kind === 'directory') break;
    if (kind === 'other') throw new LunfsError('EEXIST', `${path} exists and is not a directory: give a new or empty directory for ${purpose}`);
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

/** A file system error while making the directory (or the pool's lock in it): bad input, with the reason. */
function refusedDirectory(directory: string, purpose: 'a pool' | 'the mountpoint', error: unknown): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (isLunfsError(error) || typeof code !== 'string') return error;
  const reason = (error as Error).message.split(',')[0];
  return new LunfsError('EINVAL', `${purpose === 'a pool' ? 'cannot create a pool in' : 'cannot make the mountpoint'} ${directory} (${reason})`, { cause: error });
}

/** Refuses drives that already carry a lunfs header: pool create never overwrites a pool. */
async function refuseLunfsDrives(drives: Drive[]): Promise<void> {
  for (const drive of drives) {
    const header = Buffer.alloc(driveHeaderBytes);
    await drive.read(0, header);
    const decoded = decodeDriveHeader(header);
    if (decoded.ok) {
      throw new LunfsError('EEXIST', `drive ${drive.path} already belongs to lunfs pool ${decoded.header.poolUuid} (drive ${decoded.header.driveIndex}); clear its first 4 KiB to reuse it`);
    }
  }
}

/** Opens the drives of a pool directory (or the paths given) and the pool on them. */
export async function openPool(directory: string, options: { drivePaths?: string[]; readOnly?: boolean; deferSession?: boolean; ioMode?: DriveIoMode; forceDegraded?: boolean }): Promise<Pool> {
  const paths = options.drivePaths && options.drivePaths.length > 0 ? options.drivePaths.map((path) => resolve(path)) : await readPoolFile(directory);
  const drives: Drive[] = [];
  try {
    for (const path of paths) {
      try {
        drives.push(await FileDrive.open(path, options.ioMode));
      } catch (error) {
        if (!isLunfsError(error, 'ENOENT') && !isLunfsError(error, 'EIO')) throw error;
        drives.push(new MissingDrive(path, (error as Error).message)); // the pool decides whether it can do without it
      }
    }
    return await Pool.open(drives, { clock: systemClock, log: layerLogger('pool'), readOnly: options.readOnly, deferSession: options.deferSession, forceDegraded: options.forceDegraded });
  } catch (error) {
    await Promise.all(drives.map((drive) => drive.close()));
    throw error;
  }
}

/**
 * Runs a request against the pool: through the mount's control socket when a live process holds
 * the pool, otherwise by opening the pool here (read-only for status).
 */
export async function withPool(directory: string, request: ControlRequest, onProgress?: (status: StatusJson) => void): Promise<unknown> {
  const absolute = resolve(directory);
  await readPoolFile(absolute); // ENOENT for a directory that holds no pool
  if (await liveLockOwner(absolute)) return sendControlRequest(socketPath(absolute), request);
  const readOnly = request.command === 'status';
  const release = readOnly ? async () => {} : await acquirePoolLock(absolute, { pid: process.pid });
  try {
    const pool = await openPool(absolute, { readOnly, deferSession: true });
    const controller = new Controller(pool, { cacheBytes: defaultCacheBytes, clock: systemClock, log: layerLogger('controller'), driveSettings: { onDrivePathsChanged: (paths) => recordDrivePaths(absolute, paths) } });
    try {
      await controller.openSnapshots(readOnly);
      if (!readOnly) await controller.drives.start();
      const ticker = onProgress ? setInterval(() => onProgress(controller.status()), 200) : undefined;
      try {
        return await runControlRequest(controller, request);
      } finally {
        if (ticker) clearInterval(ticker);
      }
    } finally {
      if (readOnly) await pool.abandonSession();
      else await controller.close();
    }
  } finally {
    await release();
  }
}

/** Writes the pool's drive paths to pool.json (relative to the pool directory where they lie in it). */
export async function recordDrivePaths(directory: string, paths: string[]): Promise<void> {
  const absolute = resolve(directory);
  await writePoolFile(absolute, paths.map((path) => (path.startsWith(absolute + '/') ? path.slice(absolute.length + 1) : path)));
}
