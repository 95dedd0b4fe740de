// Warnings about a pool that others can reach: its drives hold every LUN's data, so a drive file
// or pool directory that group or other users can read (or write) leaks (or corrupts) them all.
// lunfs creates them owner-only (pool-directory.ts); a pool made by an older lunfs, a directory
// the user made beforehand, or a later chmod can still open them up, and `lunfs status` says so.
// Block devices are expected to belong to the `disk` group: for them only other users count.

import { statSync, type Stats } from 'node:fs';
import { poolFilePath } from './pool-directory.js';

/** One line per path that group or other users can reach, with the chmod that closes it. */
export function poolPermissionWarnings(directory: string, drivePaths: readonly string[]): string[] {
  const warnings: string[] = [];
  const check = (path: string, what: string): void => {
    let info: Stats;
    try {
      info = statSync(path);
    } catch {
      return; // a missing drive is reported as failed elsewhere
    }
    const device = info.isBlockDevice() || info.isCharacterDevice();
    const opened = info.mode & (device ? 0o007 : 0o077);
    if (opened === 0) return;
    const mode = `0${(info.mode & 0o777).toString(8)}`;
    warnings.push(
      `${what} ${path} can be ${accessWords(opened, info.isDirectory())} by ${device ? 'other users' : 'its group or other users'} (mode ${mode}): chmod ${device ? 'o-rwx' : 'go-rwx'} ${path}`,
    );
  };
  check(directory, 'pool directory');
  check(poolFilePath(directory), 'pool file');
  for (const path of drivePaths) check(path, 'drive');
  return warnings;
}

function accessWords(bits: number, directory: boolean): string {
  const words: string[] = [];
  if (bits & 0o044) words.push(directory ? 'listed' : 'read');
  if (bits & 0o022) words.push(directory ? 'changed' : 'written');
  if (bits & 0o011) words.push(directory ? 'entered' : 'executed');
  return words.join(' and ').replace(/ and (?=.* and )/, ', ');
}
