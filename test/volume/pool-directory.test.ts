// The pool directory's files on a real file system: where the control socket goes (a path that
// fits in a socket address, else a hashed name in a private directory, the same for every path
// that names the pool), pool.json owner-only whatever the umask, and the refusal of a socket
// directory that others could use.

import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  poolFilePath,
  prepareSocketDirectory,
  readPoolFile,
  shortSocketDirectory,
  socketPath,
  writePoolFile,
} from '../../src/volume/pool-directory.js';
import { isLunfsError } from '../../src/util/errors.js';

const folder = mkdtempSync(join(tmpdir(), 'lunfs-pool-directory-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

describe('pool directory', () => {
  it('the control socket is POOL/lunfs.sock when it fits in 107 bytes, else a hash of the real path in a private directory', () => {
    const short = join(folder, 'short');
    expect(socketPath(short)).toBe(join(short, 'lunfs.sock'));
    // The longest pool path whose socket still fits: 107 bytes with '/lunfs.sock'.
    const fitting = join(folder, 'f'.repeat(107 - '/lunfs.sock'.length - folder.length - 1));
    expect(Buffer.byteLength(socketPath(fitting))).toBe(107);
    expect(socketPath(fitting)).toBe(join(fitting, 'lunfs.sock'));

    const long = join(folder, 'l'.repeat(70), 'm'.repeat(70));
    mkdirSync(long, { recursive: true });
    const socket = socketPath(long);
    expect(socket.startsWith(shortSocketDirectory() + '/')).toBe(true);
    expect(socket).toMatch(/\/[0-9a-f]{32}\.sock$/);
    expect(Buffer.byteLength(socket)).toBeLessThanOrEqual(107);
    // Another path to the same directory (a symbolic link, a trailing slash) finds the same socket.
    const alias = join(folder, 'a'.repeat(120));
    symlinkSync(long, alias);
    expect(socketPath(alias)).toBe(socket);
    expect(socketPath(long + '/')).toBe(socket);
    expect(socketPath(join(folder, 'l'.repeat(70), 'n'.repeat(70)))).not.toBe(socket);
  });

  it('pool.json is written 0600 whatever the umask, even over a leftover temporary file', async () => {
    const directory = join(folder, 'pool');
    const umask = process.umask(0);
    try {
      mkdirSync(directory);
      writeFileSync(poolFilePath(directory) + '.tmp', 'left by a crash', { mode: 0o666 });
      await writePoolFile(directory, ['drive-0.img', '/dev/sdz']);
    } finally {
      process.umask(umask);
    }
    expect(statSync(poolFilePath(directory)).mode & 0o777).toBe(0o600);
    expect(await readPoolFile(directory)).toEqual([join(directory, 'drive-0.img'), '/dev/sdz']);
  });

  it('a socket directory outside the pool is created 0700, and one open to others is refused', () => {
    const pool = join(folder, 'pool-s');
    const own = join(folder, 'sockets');
    const umask = process.umask(0);
    try {
      prepareSocketDirectory(join(own, 'x.sock'), pool);
    } finally {
      process.umask(umask);
    }
    expect(statSync(own).mode & 0o777).toBe(0o700);
    const shared = join(folder, 'shared');
    mkdirSync(shared, { mode: 0o777 });
    let refused: unknown;
    try {
      prepareSocketDirectory(join(shared, 'x.sock'), pool);
    } catch (error) {
      refused = error;
    }
    expect(isLunfsError(refused, 'EACCES')).toBe(true);
    expect((refused as Error).message).toMatch(/must be a directory of uid \d+ with mode 0700/);
    // the pool directory itself is not checked here
    prepareSocketDirectory(join(pool, 'lunfs.sock'), pool);
  });
});
