// The pool directory: pool.json (where the drives are; the drive headers are the authority),
// the lock file that keeps a second process from writing the pool (pool-lock.ts), and the control
// socket of the process that has it mounted.
//
// What lunfs creates here is for its owner only, whatever the umask: the directory 0700, files
// 0600 (the drives hold every LUN's data; pool.json and the lock name them). The control socket
// lives in the pool directory when its path fits in a socket address (108 bytes with the NUL),
// and otherwise in a 0700 directory of the user's own, under a name hashed from the pool's real
// path, which every lunfs process computes the same way.

import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { existsSync, lstatSync, mkdirSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { LunfsError } from '../util/errors.js';

/** Modes of what lunfs creates: owner only. */
export const privateDirectoryMode = 0o700;
export const privateFileMode = 0o600;

/**
 * A Unix socket address holds at most 107 bytes of path and its terminating NUL (sun_path[108]).
 */
const socketPathBytesMax = 107;

export interface PoolDirectoryFile {
  format: 'lunfs-pool';
  version: 1;
  /** Drive paths in drive-index order; relative paths are relative to the pool directory. */
  drives: string[];
}

export function poolFilePath(directory: string): string {
  return join(directory, 'pool.json');
}

/**
 * Where the control socket of the pool lives: POOL/lunfs.sock when that path fits in a socket
 * address, else SHORT/HASH.sock (see shortSocketDirectory), HASH from the pool's real path. Too
 * long a path would otherwise be bound under a truncated name that the next mount collides with.
 */
export function socketPath(directory: string): string {
  const inPool = join(resolve(directory), 'lunfs.sock');
  if (Buffer.byteLength(inPool) <= socketPathBytesMax) return inPool;
  let realPath = resolve(directory);
  try {
    realPath = realpathSync(realPath);
  } catch {
    // a pool directory that is gone: the resolved path names it as well as anything
  }
  const name = createHash('sha256').update(realPath).digest('hex').slice(0, 32) + '.sock';
  const path = join(shortSocketDirectory(), name);
  if (Buffer.byteLength(path) > socketPathBytesMax) {
    throw new LunfsError(
      'EINVAL',
      `no place for the control socket of pool ${directory}: ${path} is longer than a socket address (${socketPathBytesMax} bytes); set TMPDIR to a shorter directory`,
    );
  }
  return path;
}

/**
 * A 0700 directory of this user's for control sockets whose pool path is too long: /run/lunfs for
 * root, $XDG_RUNTIME_DIR/lunfs for a user with a runtime directory, else TMPDIR/lunfs-UID.
 */
export function shortSocketDirectory(): string {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0 && existsSync('/run')) return '/run/lunfs';
  const runtime = process.env['XDG_RUNTIME_DIR'];
  if (runtime && isAbsolute(runtime) && existsSync(runtime)) return join(runtime, 'lunfs');
  return join(tmpdir(), `lunfs-${uid}`);
}

/**
 * Makes sure the directory of a control socket outside the pool exists, is ours and is 0700
 * (a directory in a shared place made by someone else could be used to intercept the CLI).
 */
export function prepareSocketDirectory(socket: string, directory: string): void {
  const parent = resolve(socket, '..');
  if (parent === resolve(directory)) return; // the pool directory itself
  mkdirSync(parent, { recursive: true, mode: privateDirectoryMode });
  const info = lstatSync(parent);
  const uid = process.getuid?.() ?? 0;
  if (!info.isDirectory() || info.uid !== uid || (info.mode & 0o077) !== 0) {
    throw new LunfsError(
      'EACCES',
      `refusing to serve the control socket in ${parent}: it must be a directory of uid ${uid} with mode 0700 (it is ${info.isDirectory() ? `uid ${info.uid}, mode 0${(info.mode & 0o777).toString(8)}` : 'not a directory'})`,
    );
  }
}

export async function readPoolFile(directory: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(poolFilePath(directory), 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new LunfsError('ENOENT', `no lunfs pool at ${directory} (no pool.json)`);
    if (code === 'EACCES' || code === 'EPERM')
      throw new LunfsError(
        'EACCES',
        `permission denied reading ${poolFilePath(directory)}: the pool belongs to another user`,
        { cause: error },
      );
    throw error;
  }
  let parsed: PoolDirectoryFile;
  try {
    parsed = JSON.parse(text) as PoolDirectoryFile;
  } catch {
    throw new LunfsError('ECORRUPT', `${poolFilePath(directory)} is not valid JSON`);
  }
  if (
    parsed?.format !== 'lunfs-pool' ||
    !Array.isArray(parsed.drives) ||
    !parsed.drives.every((path) => typeof path === 'string' && path !== '')
  )
    throw new LunfsError('ECORRUPT', `${poolFilePath(directory)} is not a lunfs pool file`);
  return parsed.drives.map((path) => (isAbsolute(path) ? path : join(directory, path)));
}

/** Writes pool.json (0600) through a temporary file and a rename. */
export async function writePoolFile(directory: string, drives: string[]): Promise<void> {
  await mkdir(directory, { recursive: true, mode: privateDirectoryMode });
  const file: PoolDirectoryFile = { format: 'lunfs-pool', version: 1, drives };
  const temporary = poolFilePath(directory) + '.tmp';
  const handle = await open(temporary, 'w', privateFileMode);
  try {
    // a temporary file left by a crash keeps its old mode otherwise
    await handle.chmod(privateFileMode);
    await handle.writeFile(JSON.stringify(file, null, 2) + '\n');
  } finally {
    await handle.close();
  }
  await rename(temporary, poolFilePath(directory));
}
