// The pool lock: one process at a time writes a pool. It is an flock(2) lock on POOL/lunfs.lock,
// held on an open file for as long as the process needs the pool; the kernel drops it when the
// file is closed or the process dies, so a killed process leaves nothing to "take over" and no
// process ever deletes a lock that another holds.
//
// Invariants:
// - Whether the pool is held is the flock state of the file, never the pid written in it (a pid
//   is reused; the file outlives a kill -9). The contents (owner pid, mountpoint, control socket)
//   are only for messages and for finding the mount's socket.
// - The holder removes the file when it lets go, while it still holds the lock. A process that
//   opened the file just before that removal may then lock an unlinked file: after locking, it
//   checks that the path still names the file it locked, and opens again if not.
// - Without the native addon (no flock), the lock falls back to the old exclusive-create file
//   (O_EXCL) with the pid check, which races when a stale file is taken over: a warning says so.

import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  ftruncateSync,
  lstatSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { osCallsAvailable, tryFlock, unflock } from '../native/os-calls.js';
import { LunfsError } from '../util/errors.js';
import { layerLogger } from '../util/logger.js';

export interface LockOwner {
  pid: number;
  /** Set by `lunfs mount`: where the pool is mounted. */
  mountpoint?: string;
  /** Set by `lunfs mount` once its control socket listens: where CLI commands reach it. */
  socket?: string;
}

/**
 * Whether a process holds the pool lock, and what it wrote in the file (undefined while it has not
 * yet).
 */
export type PoolLockState = { held: false } | { held: true; owner: LockOwner | undefined };

/** A pool lock this process holds. */
export interface HeldPoolLock {
  /** Rewrites the owner recorded in the lock file (the mount adds its socket once it listens). */
  record(owner: LockOwner): void;
  /** Lets go of the lock; the file is removed first (see the invariants). Idempotent. */
  release(): Promise<void>;
}

/** The lock file is created owner-only: it names the mount and its socket. */
const lockFileMode = 0o600;
/**
 * Opens of a file that its holder removed meanwhile before giving up (each one means a holder let
 * go).
 */
const reopenAttemptsMax = 8;
/**
 * Tries, and the pause between them, before a busy lock is reported as held (see acquirePoolLock).
 */
const busyAttemptsMax = 5;
const busyRetryMs = 20;

export function lockPath(directory: string): string {
  return join(directory, 'lunfs.lock');
}

/**
 * Takes the pool lock for this process, or throws EBUSY naming the holder. Without the addon,
 * falls back to the exclusive-create lock file (see the file's invariants).
 */
export async function acquirePoolLock(directory: string, owner: LockOwner): Promise<HeldPoolLock> {
  for (let attempt = 1; ; attempt += 1) {
    const result = tryAcquirePoolLock(directory, owner);
    if (result.acquired) return result.lock;
    // A poolLockState probe holds a shared lock for a moment: a few tries tell it from a holder.
    if (attempt >= busyAttemptsMax) throw busyError(directory, result.owner);
    await new Promise((resolve) => setTimeout(resolve, busyRetryMs));
  }
}

/** Takes the pool lock without waiting: the lock, or who holds it. */
export function tryAcquirePoolLock(
  directory: string,
  owner: LockOwner,
): { acquired: true; lock: HeldPoolLock } | { acquired: false; owner: LockOwner | undefined } {
  if (!osCallsAvailable) return tryExclusiveCreateLock(directory, owner);
  const path = lockPath(directory);
  for (let attempt = 0; attempt < reopenAttemptsMax; attempt += 1) {
    const fd = openLockFile(path, constants.O_RDWR | constants.O_CREAT);
    let keep = false;
    try {
      const state = tryFlock(fd, true);
      if (state === 'busy') return { acquired: false, owner: readLockOwner(directory) };
      // its holder removed it after we opened it: open the new one
      if (!namesSameFile(fd, path)) continue;
      fchmodSync(fd, lockFileMode); // a lock file left by an older lunfs may be world-readable
      writeOwner(fd, owner);
      keep = true;
      return { acquired: true, lock: flockHeldLock(path, fd) };
    } finally {
      if (!keep) closeSync(fd);
    }
  }
  return { acquired: false, owner: readLockOwner(directory) };
}

/**
 * Whether the pool is held, decided by the flock state: a shared lock on a fresh open of the
 * file succeeds only when no process holds it (the holder's lock is exclusive), and is released
 * at once. Without the addon, by the pid in the file.
 */
export function poolLockState(directory: string): PoolLockState {
  const path = lockPath(directory);
  if (!osCallsAvailable) {
    const owner = readLockOwner(directory);
    return owner && isAlive(owner.pid) ? { held: true, owner } : { held: false };
  }
  let fd: number;
  try {
    fd = openLockFile(path, constants.O_RDONLY);
  } catch (error) {
    if (error instanceof LunfsError && error.code === 'ENOENT') return { held: false };
    throw error;
  }
  try {
    if (tryFlock(fd, false) === 'locked') {
      unflock(fd);
      return { held: false };
    }
    return { held: true, owner: readLockOwner(directory) };
  } finally {
    closeSync(fd);
  }
}

/** What the holder wrote in the lock file, if it can be read (for messages and the socket path). */
export function readLockOwner(directory: string): LockOwner | undefined {
  try {
    const parsed = JSON.parse(readFileSync(lockPath(directory), 'utf8')) as LockOwner;
    return typeof parsed.pid === 'number' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** EBUSY naming the holder as far as the lock file tells. */
export function busyError(directory: string, owner: LockOwner | undefined): LunfsError {
  if (owner === undefined)
    return new LunfsError('EBUSY', `pool ${directory} is in use by another lunfs process`);
  const where = owner.mountpoint ? ` (mounted at ${owner.mountpoint})` : ' (a lunfs command)';
  return new LunfsError('EBUSY', `pool ${directory} is in use by process ${owner.pid}${where}`);
}

function openLockFile(path: string, flags: number): number {
  try {
    // O_NOFOLLOW: a symbolic link planted as lunfs.lock must not make root truncate its target.
    return openSync(path, flags | constants.O_NOFOLLOW, lockFileMode);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new LunfsError('ENOENT', `no lock file ${path}`, { cause: error });
    if (code === 'EACCES' || code === 'EPERM')
      throw new LunfsError(
        'EACCES',
        `permission denied opening the pool lock ${path}: the pool belongs to another user`,
        { cause: error },
      );
    if (code === 'ELOOP')
      throw new LunfsError('EINVAL', `the pool lock ${path} is a symbolic link; remove it`, {
        cause: error,
      });
    throw error;
  }
}

function namesSameFile(fd: number, path: string): boolean {
  try {
    const opened = fstatSync(fd);
    const named = lstatSync(path);
    return opened.ino === named.ino && opened.dev === named.dev;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

function writeOwner(fd: number, owner: LockOwner): void {
  ftruncateSync(fd, 0);
  writeSync(fd, JSON.stringify(owner), 0);
}

function flockHeldLock(path: string, fd: number): HeldPoolLock {
  let released = false;
  return {
    record(owner: LockOwner): void {
      if (!released) writeOwner(fd, owner);
    },
    async release(): Promise<void> {
      if (released) return;
      released = true;
      try {
        if (namesSameFile(fd, path)) unlinkSync(path); // while we hold it: see the invariants
      } finally {
        closeSync(fd); // drops the flock
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The fallback without flock: an exclusive-create lock file whose holder is found by its pid.

let fallbackWarned = false;

function tryExclusiveCreateLock(
  directory: string,
  owner: LockOwner,
): { acquired: true; lock: HeldPoolLock } | { acquired: false; owner: LockOwner | undefined } {
  if (!fallbackWarned) {
    fallbackWarned = true;
    layerLogger('pool-lock').warn(
      'the native addon is missing: the pool lock falls back to an exclusive-create file, which two commands taking over a stale lock at once can both believe they hold',
    );
  }
  const path = lockPath(directory);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const fd = openSync(
        path,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        lockFileMode,
      );
      writeOwner(fd, owner);
      closeSync(fd);
      let released = false;
      return {
        acquired: true,
        lock: {
          record(next: LockOwner): void {
            if (released) return;
            const rewrite = openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW);
            writeOwner(rewrite, next);
            closeSync(rewrite);
          },
          async release(): Promise<void> {
            if (released) return;
            released = true;
            if (readLockOwner(directory)?.pid === process.pid) unlinkSync(path);
          },
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = readLockOwner(directory);
    if (holder && isAlive(holder.pid) && holder.pid !== process.pid)
      return { acquired: false, owner: holder };
    try {
      unlinkSync(path); // stale: its process is gone (the race this fallback keeps)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  return { acquired: false, owner: readLockOwner(directory) };
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
