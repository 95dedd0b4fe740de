// Resolving a path without ever entering one directory (the pool's own FUSE mountpoint). A
// process that serves a mountpoint must not open, or even stat, a path inside it as a drive: the
// request would come back to the same process, which waits for its own answer (a D-state hang).
// realpath(3) cannot be used for the check, since it stats every component on the way; this walks
// the components itself, follows symbolic links, and stops before it touches the fence.

import { lstat, readlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { LunfsError } from './errors.js';

/** At most this many symbolic links on one path, as the kernel (ELOOP after 40). */
const symlinkHopsMax = 40;

/**
 * The real path of `path` (symbolic links followed; a part that does not exist yet is kept as
 * written), or EINVAL when it is `fence` or lies under it. `fence` must be a real path.
 */
export async function realPathOutside(path: string, fence: string, what: string): Promise<string> {
  const inside = (candidate: string): boolean =>
    candidate === fence || candidate.startsWith(fence + sep);
  const refuse = (): LunfsError =>
    new LunfsError(
      'EINVAL',
      `${what} ${path} lies inside the pool's own mountpoint ${fence}: a drive must live outside the pool it serves`,
    );
  let pending = resolve(path).split(sep).filter(Boolean);
  let current: string = sep;
  let hops = 0;
  while (pending.length > 0) {
    const name = pending.shift()!;
    if (name === '.') continue;
    const candidate = name === '..' ? dirname(current) : join(current, name);
    if (inside(candidate)) throw refuse();
    let isLink = false;
    try {
      isLink = (await lstat(candidate)).isSymbolicLink();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      const rest = join(candidate, ...pending); // the rest does not exist yet, so it holds no link
      if (inside(rest)) throw refuse();
      return rest;
    }
    if (!isLink) {
      current = candidate;
      continue;
    }
    hops += 1;
    if (hops > symlinkHopsMax)
      throw new LunfsError('EINVAL', `${what} ${path}: too many symbolic links`);
    const target = await readlink(candidate);
    pending = [...target.split(sep).filter(Boolean), ...pending];
    if (isAbsolute(target)) current = sep;
  }
  return current;
}
