// The pool lock (src/volume/pool-lock.ts) on real files: flock locks belong to the open file, so
// two acquisitions in this one process conflict as two processes do; a lock held by another
// process is played by flock(1). Whether the pool is held is the flock state, never the pid
// written in the file: a stale file naming a live pid (reused) must not block anyone.

import { spawn } from 'node:child_process';
import {
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  existsSync,
  lstatSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  acquirePoolLock,
  lockPath,
  poolLockState,
  tryAcquirePoolLock,
} from '../../src/volume/pool-lock.js';
import { isLunfsError } from '../../src/util/errors.js';

const folder = mkdtempSync(join(tmpdir(), 'lunfs-pool-lock-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

let poolCounter = 0;
function poolDirectory(): string {
  poolCounter += 1;
  return mkdtempSync(join(folder, `pool${poolCounter}-`));
}

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('pool lock', () => {
  it('is exclusive, names its holder, is owner-only whatever the umask, and is removed on release', async () => {
    const directory = poolDirectory();
    const umask = process.umask(0);
    let lock;
    try {
      lock = await acquirePoolLock(directory, { pid: process.pid, mountpoint: '/mnt/x' });
    } finally {
      process.umask(umask);
    }
    expect(statSync(lockPath(directory)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(lockPath(directory), 'utf8'))).toEqual({
      pid: process.pid,
      mountpoint: '/mnt/x',
    });
    expect(poolLockState(directory)).toEqual({
      held: true,
      owner: { pid: process.pid, mountpoint: '/mnt/x' },
    });
    const second = tryAcquirePoolLock(directory, { pid: process.pid });
    expect(second).toEqual({ acquired: false, owner: { pid: process.pid, mountpoint: '/mnt/x' } });
    const refused = await acquirePoolLock(directory, { pid: 1 }).catch((error: unknown) => error);
    expect(isLunfsError(refused, 'EBUSY')).toBe(true);
    expect((refused as Error).message).toBe(
      `pool ${directory} is in use by process ${process.pid} (mounted at /mnt/x)`,
    );

    lock.record({ pid: process.pid, mountpoint: '/mnt/x', socket: '/run/x.sock' });
    expect(poolLockState(directory)).toEqual({
      held: true,
      owner: { pid: process.pid, mountpoint: '/mnt/x', socket: '/run/x.sock' },
    });
    await lock.release();
    await lock.release(); // idempotent
    expect(existsSync(lockPath(directory))).toBe(false);
    expect(poolLockState(directory)).toEqual({ held: false });
    const again = await acquirePoolLock(directory, { pid: process.pid });
    await again.release();
  });

  it('a lock file left by a dead process, or naming a live but unrelated pid, does not hold the pool', async () => {
    for (const stalePid of [999_999_999, 1, process.pid]) {
      const directory = poolDirectory();
      writeFileSync(
        lockPath(directory),
        JSON.stringify({ pid: stalePid, mountpoint: '/mnt/old' }),
        { mode: 0o644 },
      );
      expect(poolLockState(directory)).toEqual({ held: false });
      const lock = await acquirePoolLock(directory, { pid: process.pid });
      expect(JSON.parse(readFileSync(lockPath(directory), 'utf8'))).toEqual({ pid: process.pid });
      // an old world-readable file is closed up
      expect(statSync(lockPath(directory)).mode & 0o777).toBe(0o600);
      await lock.release();
    }
  });

  it('a lock held by another process is busy until that process dies (kill -9 leaves nothing to take over)', async () => {
    const directory = poolDirectory();
    writeFileSync(lockPath(directory), JSON.stringify({ pid: 424242 }));
    // flock(1) takes an exclusive flock on the file and, with --no-fork, becomes `sleep` holding
    // it.
    const holder = spawn(
      'flock',
      ['--no-fork', '--exclusive', '--nonblock', lockPath(directory), 'sleep', '60'],
      { stdio: 'ignore' },
    );
    const exited = new Promise((resolve) => holder.on('exit', resolve));
    try {
      await waitFor(() => poolLockState(directory).held);
      expect(poolLockState(directory)).toEqual({ held: true, owner: { pid: 424242 } });
      const refused = await acquirePoolLock(directory, { pid: process.pid }).catch(
        (error: unknown) => error,
      );
      expect(isLunfsError(refused, 'EBUSY')).toBe(true);
      expect(existsSync(lockPath(directory)), 'a busy lock is never deleted').toBe(true);
    } finally {
      holder.kill('SIGKILL');
      await exited;
    }
    // the kernel dropped it with the process
    expect(poolLockState(directory)).toEqual({ held: false });
    const lock = await acquirePoolLock(directory, { pid: process.pid });
    await lock.release();
  });

  it('refuses a lock file that is a symbolic link and leaves its target alone', async () => {
    const directory = poolDirectory();
    const target = join(directory, 'precious');
    writeFileSync(target, 'keep me');
    symlinkSync(target, lockPath(directory));
    const refused = await acquirePoolLock(directory, { pid: process.pid }).catch(
      (error: unknown) => error,
    );
    expect(isLunfsError(refused, 'EINVAL')).toBe(true);
    expect((refused as Error).message).toMatch(/symbolic link/);
    expect(readFileSync(target, 'utf8')).toBe('keep me');
    expect(lstatSync(lockPath(directory)).isSymbolicLink()).toBe(true);
  });
});
