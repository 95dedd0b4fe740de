// The pool directory: pool.json (where the drives are; the drive headers are the authority),
// the lock file that keeps a second process from writing the pool, and the control socket of the
// process that has it mounted.

import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { LunfsError } from '../util/errors.js';

export interface PoolDirectoryFile {
  format: 'lunfs-pool';
  version: 1;
  /** Drive paths in drive-index order; relative paths are relative to the pool directory. */
  drives: string[];
}

export function poolFilePath(directory: string): string {
  return join(directory, 'pool.json');
}

export function socketPath(directory: string): string {
  return join(resolve(directory), 'lunfs.sock');
}

export function lockPath(directory: string): string {
  return join(directory, 'lunfs.lock');
}

export async function readPoolFile(directory: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(poolFilePath(directory), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new LunfsError('ENOENT', `no lunfs pool at ${directory} (no pool.json)`);
    throw error;
  }
  let parsed: PoolDirectoryFile;
  try {
    parsed = JSON.parse(text) as PoolDirectoryFile;
  } catch {
    throw new LunfsError('ECORRUPT', `${poolFilePath(directory)} is not valid JSON`);
  }
  if (parsed?.format !== 'lunfs-pool' || !Array.isArray(parsed.drives) || !parsed.drives.every((path) => typeof path === 'string' && path !== '')) throw new LunfsError('ECORRUPT', `${poolFilePath(directory)} is not a lunfs pool file`);
  return parsed.drives.map((path) => (isAbsolute(path) ? path : join(directory, path)));
}

export async function writePoolFile(directory: string, drives: string[]): Promise<void> {
  await mkdir(directory, { recursive: true });
  const file: PoolDirectoryFile = { format: 'lunfs-pool', version: 1, drives };
  const temporary = poolFilePath(directory) + '.tmp';
  await writeFile(temporary, JSON.stringify(file, null, 2) + '\n');
  await rename(temporary, poolFilePath(directory));
}

export interface LockOwner {
  pid: number;
  mountpoint?: string;
}

/**
 * Takes the pool lock for this process. A lock whose process is gone (kill -9) is stale and is
 * taken over; a live one is EBUSY.
 */
export async function acquirePoolLock(directory: string, owner: LockOwner): Promise<() => Promise<void>> {
  const path = lockPath(directory);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(JSON.stringify(owner));
      await handle.close();
      return async () => {
        await rm(path, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = await readLockOwner(directory);
    if (holder && isAlive(holder.pid) && holder.pid !== process.pid) {
      const where = holder.mountpoint ? ` (mounted at ${holder.mountpoint})` : '';
      throw new LunfsError('EBUSY', `pool ${directory} is in use by process ${holder.pid}${where}`);
    }
    await rm(path, { force: true }); // stale: its process is gone
  }
  throw new LunfsError('EBUSY', `could not take the lock of pool ${directory}`);
}

export async function readLockOwner(directory: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await readFile(lockPath(directory), 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

/** The live process that holds the pool, if any. */
export async function liveLockOwner(directory: string): Promise<LockOwner | undefined> {
  const owner = await readLockOwner(directory);
  return owner && isAlive(owner.pid) ? owner : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // A killed process that nobody has reaped yet still answers kill(0): it is a zombie, not alive.
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}
