// Stopping a mount while its LUNs are in use (lunfs issue 17). SIGINT/SIGTERM or `lunfs unmount`
// used to unmount at once and print "unmounted cleanly" while an ext4 on a loop device over a LUN
// got EIO and lost what it had not written back. Now the stop flushes, and while LUN or snapshot
// files are open through the mount it is refused and the mount keeps serving; another signal, or
// `lunfs unmount --force`, stops anyway. Each test failed against the code before the fix.

import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MiB,
  lunfs,
  lunfsOk,
  sleep,
  treeChecksums,
  useSandbox,
  writeRandomFile,
  type MountServer,
  type RunResult,
  type Sandbox,
} from './support.js';

const sandbox = useSandbox('mount-stop', 'test');

/** A RAID-1 pool of 2 x 256 MiB drives with a 128 MiB LUN `db`. */
async function poolWithLun(box: Sandbox): Promise<string> {
  const pool = await box.createPool('pool', { drives: 2, driveSize: '256M', raid: 1 });
  await lunfsOk('lun', 'create', pool, 'db', '--size', '128M');
  return pool;
}

/** Waits up to 15 s for the server's stderr to match (the stop is decided after a flush). */
async function stderrMatches(server: MountServer, pattern: RegExp): Promise<void> {
  for (let waited = 0; waited < 15_000 && !pattern.test(server.stderr); waited += 50) {
    if (!server.running) break;
    await sleep(50);
  }
  expect(server.stderr, `lunfs mount stdout:\n${server.stdout}`).toMatch(pattern);
}

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

async function controlStatusLuns(mountpoint: string): Promise<string[]> {
  const status = JSON.parse(await readFile(join(mountpoint, 'control', 'status'), 'utf8')) as {
    luns: Array<{ name: string }>;
  };
  return status.luns.map((lun) => lun.name);
}

describe('stopping a mount whose LUN holds a mounted ext4', () => {
  it('SIGTERM is refused and the mount keeps serving; after umount and losetup -d a second SIGTERM stops cleanly and nothing is lost', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    let server = await box.mount(pool, mountpoint);
    let loop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
    await box.mkfsExt4(loop);
    await box.mountExt4(loop, data);
    const before = await writeRandomFile(join(data, 'before-signal.bin'), 8 * MiB);

    server.child.kill('SIGTERM');
    await stderrMatches(
      server,
      /lunfs: SIGTERM refused: 1 file is open through the mount: luns\/db \(1 handle\)\. The cache is flushed and the pool keeps serving/,
    );
    expect(server.running).toBe(true);
    expect(server.stdout).not.toMatch(/unmounted/);
    expect(await controlStatusLuns(mountpoint)).toEqual(['db']);

    // Written after the signal: one file synced, one left to the umount of ext4 to write back.
    const synced = await writeRandomFile(join(data, 'after-signal-synced.bin'), 8 * MiB);
    const unsynced = randomBytes(4 * MiB);
    const handle = await open(join(data, 'after-signal-unsynced.bin'), 'w');
    await handle.write(unsynced);
    await handle.close();
    const expected = await treeChecksums(data);
    expect(expected['before-signal.bin']).toBe(before);
    expect(expected['after-signal-synced.bin']).toBe(synced);

    await box.umount(data);
    await box.detachLoop(loop);
    const exit = await server.stop();
    expect(exit, `stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
    expect(server.stdout).toContain('unmounted cleanly');

    // A new process: the LUN holds every file, fsck finds nothing.
    server = await box.mount(pool, mountpoint);
    loop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
    const fsck = await box.fsckExt4(loop);
    expect(fsck.code, describeRun(fsck)).toBe(0);
    await box.mountExt4(loop, data);
    expect(await treeChecksums(data)).toEqual(expected);
    await box.umount(data);
    await box.detachLoop(loop);
    expect(await server.stop()).toEqual({ code: 0, signal: null });
  });
});

describe('lunfs unmount', () => {
  it('refuses while a LUN is open (EBUSY, exit 1), stops with --force, and stops cleanly when nothing is open', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt');

    const notMounted = await lunfs('unmount', pool);
    expect(notMounted.code, describeRun(notMounted)).toBe(2);
    expect(notMounted.stderr).toBe(`lunfs: pool ${pool} is not mounted\n`);

    let server = await box.mount(pool, mountpoint);
    const wrongPath = await lunfs('unmount', mountpoint);
    expect(wrongPath.code, describeRun(wrongPath)).toBe(2);
    expect(wrongPath.stderr).toMatch(/is where a pool is mounted: give the pool's directory/);

    const lun = await open(join(mountpoint, 'luns', 'db'), 'r+');
    try {
      const refused = await lunfs('unmount', pool);
      expect(refused.code, describeRun(refused)).toBe(1);
      expect(refused.stderr).toMatch(
        /^lunfs: not unmounted: 1 file is open through the mount: luns\/db \(1 handle\)\. Close them .* or use --force/,
      );
      expect(server.running).toBe(true);
      await lun.write(Buffer.alloc(4096, 7), 0, 4096, 0); // the mount still serves the open file
      await lun.datasync();

      const forced = await lunfs('unmount', pool, '--force');
      expect(forced.code, describeRun(forced)).toBe(0);
      expect(forced.stdout).toBe(
        `lunfs: pool ${pool} unmounted from ${mountpoint} with files open (forced): luns/db (1 handle)\n`,
      );
      expect(await server.exited).toEqual({ code: 0, signal: null });
      expect(server.stdout).not.toContain('unmounted cleanly');
      expect(server.stdout).toContain('unmounted with files open (forced): luns/db (1 handle)');
      await expect(
        lun.read(Buffer.alloc(4096), 0, 4096, 100 * MiB),
        'a read the page cache cannot answer',
      ).rejects.toThrow(/ENOTCONN|EIO/);
    } finally {
      await lun.close().catch(() => undefined);
    }

    // Nothing open: a clean stop, and the block written before is there.
    server = await box.mount(pool, mountpoint);
    const block = Buffer.alloc(4096);
    const reader = await open(join(mountpoint, 'luns', 'db'), 'r');
    await reader.read(block, 0, 4096, 0);
    await reader.close();
    expect(block.equals(Buffer.alloc(4096, 7))).toBe(true);
    // the kernel's release of the reader reaches the server a moment after close()
    await sleep(200);
    const clean = await lunfs('unmount', pool);
    expect(clean.code, describeRun(clean)).toBe(0);
    expect(clean.stdout).toBe(`lunfs: pool ${pool} unmounted from ${mountpoint}\n`);
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(server.stdout).toContain('unmounted cleanly');
  });
});

describe('signals with files open', () => {
  it('a second signal while the same files stay open forces the stop; one after they were all closed is refused again', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    await lunfsOk('snapshot', pool, 'db@s');
    const mountpoint = box.path('mnt');
    const server = await box.mount(pool, mountpoint);

    const first = await open(join(mountpoint, 'snapshots', 'db@s'), 'r');
    server.child.kill('SIGINT');
    await stderrMatches(
      server,
      /SIGINT refused: 1 file is open through the mount: snapshots\/db@s \(1 handle\)/,
    );
    await first.close();
    await sleep(200);

    // All closed since that refusal: a new open and a signal are a fresh request, refused again.
    const lun = await open(join(mountpoint, 'luns', 'db'), 'r');
    const lunAgain = await open(join(mountpoint, 'luns', 'db'), 'r');
    server.child.kill('SIGTERM');
    await stderrMatches(
      server,
      /SIGTERM refused: 1 file is open through the mount: luns\/db \(2 handles\)/,
    );
    expect(server.running).toBe(true);
    expect(await controlStatusLuns(mountpoint)).toEqual(['db']);

    server.child.kill('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(server.stdout).toContain('unmounted with files open (forced): luns/db (2 handles)');
    expect(server.stdout).not.toContain('unmounted cleanly');
    await lun.close().catch(() => undefined);
    await lunAgain.close().catch(() => undefined);
  });
});

describe('SIGHUP (the terminal of a foreground mount closes)', () => {
  it('stops cleanly like SIGTERM when nothing is open, and is refused while a LUN is open', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt');
    let server = await box.mount(pool, mountpoint);
    const lun = await open(join(mountpoint, 'luns', 'db'), 'r');
    server.child.kill('SIGHUP');
    await stderrMatches(
      server,
      /SIGHUP refused: 1 file is open through the mount: luns\/db \(1 handle\)/,
    );
    expect(server.running).toBe(true);
    await lun.close();
    await sleep(200);
    server.child.kill('SIGHUP');
    expect(await server.exited, `stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
    expect(server.stdout).toContain('unmounted cleanly');
    // and the pool was shut down cleanly: no replay warning
    server = await box.mount(pool, mountpoint);
    expect(server.stderr).not.toMatch(/not shut down cleanly/);
    expect(await server.stop()).toEqual({ code: 0, signal: null });
  });
});
