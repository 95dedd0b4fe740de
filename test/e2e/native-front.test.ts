// End to end, no mocks: lunfs's own FUSE front (`lunfs mount --front native`, issue 12) under ext4
// on a loop device. It proves:
//   1. ext4 files written and fsync'ed survive a clean stop and a new mount, and fsck is clean;
//   2. an O_DIRECT write of 1 MiB reaches lunfs as ONE request (the front's debug line at stop
//      counts the writes of exactly 1 MiB: fuse-native could not send more than 128 KiB);
//   3. `blkdiscard -o X -l Y` on a loop device over a LUN reaches lunfs as a FUSE fallocate
//      (punch-hole): the range reads back as zeros, its neighbours keep their data, and `lunfs
//      status` shows the space freed;
//   4. an fallocate mode lunfs does not serve (plain preallocation) fails with EOPNOTSUPP;
//   5. the JS thread's polling (it spins briefly for the next request instead of sleeping) takes
//      requests at queue depth 1 and loses none; LUNFS_FUSE_POLL_US=0 turns it off, a bad value
//      is refused before anything is mounted;
//   6. writes arrive intact whichever buffer a loop thread read them into: a slot lent to JS (no
//      copy), or, with every slot lent out (LUNFS_FUSE_SLOTS=0 and 2), the thread's own buffer,
//      copied into a slot freed meanwhile or into memory of its own.

import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MiB,
  lunfsOk,
  mountEntriesAt,
  repoRoot,
  run,
  runOk,
  sha256,
  sha256File,
  statusJson,
  useSandbox,
  writeRandomFile,
  type MountServer,
} from './support.js';

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
  expect(server.stdout).toContain('unmounted cleanly');
  expect(await mountEntriesAt(server.mountpoint)).toEqual([]);
}

/** The batches the JS thread found by polling, from the debug line printed at stop. */
function polledBatches(server: MountServer): number {
  const match =
    /native front served (\d+) requests in (\d+) batches \((\d+) found by polling\)/.exec(
      server.stdout,
    );
  expect(match, `native front debug line in:\n${server.stdout}`).not.toBeNull();
  return Number(match![3]);
}

/**
 * Runs task with the environment variable name set to value (undefined: unset), then puts it back.
 */
async function withEnv<T>(
  name: string,
  value: string | undefined,
  task: () => Promise<T>,
): Promise<T> {
  const before = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return await task();
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
}

/** Mounts through the native front with name=value in the server's environment. */
const mountWithEnv = (
  box: ReturnType<ReturnType<typeof useSandbox>>,
  pool: string,
  mountpoint: string,
  name: string,
  value: string | undefined,
): Promise<MountServer> =>
  withEnv(name, value, () => box.mount(pool, mountpoint, ['--front', 'native']));

const mountWithPoll = (
  box: ReturnType<ReturnType<typeof useSandbox>>,
  pool: string,
  mountpoint: string,
  value: string | undefined,
): Promise<MountServer> => mountWithEnv(box, pool, mountpoint, 'LUNFS_FUSE_POLL_US', value);

/** The counts in the native front's debug line printed at stop. */
function frontStats(server: MountServer): { largestWrite: number; fullWrites: number } {
  const match =
    /native front served \d+ requests in \d+ batches \(\d+ found by polling\); largest write (\d+) bytes \((\d+) of 1 MiB\)/.exec(
      server.stdout,
    );
  expect(match, `native front debug line in:\n${server.stdout}`).not.toBeNull();
  return { largestWrite: Number(match![1]), fullWrites: Number(match![2]) };
}

async function allocatedBytes(pool: string, lun: string): Promise<number> {
  return (await statusJson(pool)).luns.find((entry) => entry.name === lun)!.allocatedBytes;
}

describe('the native FUSE front', () => {
  const sandbox = useSandbox('native-front');

  it('serves ext4 across a restart, takes 1 MiB writes whole, and turns blkdiscard into freed space', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 4, driveSize: '256M', raid: 0 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '192M');
    await lunfsOk('lun', 'create', pool, 'scratch', '--size', '64M');
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const sums = new Map<string, string>();

    // ---- first server: 1 MiB O_DIRECT writes to a raw LUN, then ext4 files, clean stop
    const first = await box.mount(pool, mountpoint, ['--front', 'native']);
    await runOk('dd', [
      'if=/dev/urandom',
      `of=${join(mountpoint, 'luns', 'scratch')}`,
      'bs=1M',
      'count=8',
      'oflag=direct',
      'conv=notrunc,fsync',
      'status=none',
    ]);
    let loop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
    await box.mkfsExt4(loop);
    await box.mountExt4(loop, data);
    for (const [name, size] of Object.entries({
      'a.bin': 3 * MiB + 11,
      'b.bin': 17 * MiB,
      'c.bin': 4096,
    }))
      sums.set(name, await writeRandomFile(join(data, name), size));
    await box.umount(data);
    await box.detachLoop(loop);
    await expectCleanStop(first);
    const stats = frontStats(first);
    expect(stats.largestWrite).toBe(MiB);
    expect(
      stats.fullWrites,
      'eight O_DIRECT writes of 1 MiB, each one request',
    ).toBeGreaterThanOrEqual(8);

    // ---- second server: fsck clean, every file intact
    const second = await box.mount(pool, mountpoint, ['--front', 'native']);
    loop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
    const fsck = await box.fsckExt4(loop);
    expect(fsck.code, `fsck.ext4 -fn:\n${fsck.stdout}${fsck.stderr}`).toBe(0);
    await box.mountExt4(loop, data);
    for (const [name, sum] of sums) expect(await sha256File(join(data, name)), name).toBe(sum);
    await box.umount(data);
    await box.detachLoop(loop);

    // ---- discard: fill scratch, blkdiscard 16 MiB in its middle through a loop device
    const scratchFile = join(mountpoint, 'luns', 'scratch');
    await runOk('dd', [
      'if=/dev/urandom',
      `of=${scratchFile}`,
      'bs=1M',
      'count=64',
      'oflag=direct',
      'conv=notrunc,fsync',
      'status=none',
    ]);
    const before = await allocatedBytes(pool, 'scratch');
    expect(before).toBe(64 * MiB);
    const file = await open(scratchFile, 'r');
    const head = Buffer.alloc(MiB);
    const tail = Buffer.alloc(MiB);
    await file.read(head, 0, MiB, 23 * MiB);
    await file.read(tail, 0, MiB, 40 * MiB);
    await file.close();
    const scratchLoop = await box.attachLoop(scratchFile);
    await runOk('blkdiscard', ['-o', String(24 * MiB), '-l', String(16 * MiB), scratchLoop.device]);
    const zeros = await run('cmp', [
      '-n',
      String(16 * MiB),
      '-i',
      `${24 * MiB}:0`,
      scratchLoop.device,
      '/dev/zero',
    ]);
    expect(
      zeros.code,
      `the discarded range reads as zeros through the loop device: ${zeros.stdout}${zeros.stderr}`,
    ).toBe(0);
    await box.detachLoop(scratchLoop);
    const afterDiscard = await open(scratchFile, 'r');
    const range = Buffer.alloc(16 * MiB, 1);
    const headAgain = Buffer.alloc(MiB);
    const tailAgain = Buffer.alloc(MiB);
    await afterDiscard.read(range, 0, range.length, 24 * MiB);
    await afterDiscard.read(headAgain, 0, MiB, 23 * MiB);
    await afterDiscard.read(tailAgain, 0, MiB, 40 * MiB);
    await afterDiscard.close();
    expect(
      range.equals(Buffer.alloc(16 * MiB)),
      'the discarded range reads as zeros through the LUN file',
    ).toBe(true);
    expect(sha256(headAgain)).toBe(sha256(head));
    expect(sha256(tailAgain)).toBe(sha256(tail));
    const after = await allocatedBytes(pool, 'scratch');
    expect(
      before - after,
      `space freed by the discard (before ${before}, after ${after})`,
    ).toBeGreaterThanOrEqual(15 * MiB);

    // ---- a mode lunfs does not serve: plain preallocation
    const preallocate = await run('fallocate', ['-o', '0', '-l', String(MiB), scratchFile]);
    expect(preallocate.code).not.toBe(0);
    expect(preallocate.stderr).toMatch(/not supported/i);
    await expectCleanStop(second);
  });

  it('polls for the next request at queue depth 1 without losing one; LUNFS_FUSE_POLL_US=0 turns it off, a bad value is refused', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 2, driveSize: '64M', raid: 1 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '16M');
    const mountpoint = box.path('mnt');
    const lunFile = join(mountpoint, 'luns', 'db');
    const source = box.path('source.bin');
    await writeRandomFile(source, 8 * MiB);
    const expected = await sha256File(source);

    // 2048 writes of 4 KiB, one at a time (O_DIRECT): each next one comes right after a reply. A
    // 2 ms spin, not the default 50 us: under the full suite's load dd's next write often comes
    // later than 50 us (17 of 2048 polled in one fresh-clone run), rarely later than 2 ms.
    const polling = await mountWithPoll(box, pool, mountpoint, '2000');
    await runOk('dd', [
      `if=${source}`,
      `of=${lunFile}`,
      'bs=4k',
      'oflag=direct',
      'conv=notrunc,fsync',
      'status=none',
    ]);
    const readBack = await run('cmp', ['-n', String(8 * MiB), source, lunFile]);
    expect(
      readBack.code,
      `the LUN holds what was written: ${readBack.stdout}${readBack.stderr}`,
    ).toBe(0);
    await expectCleanStop(polling);
    expect(polledBatches(polling), 'batches the JS thread took by polling').toBeGreaterThan(200);

    // Off: no batch is polled, and the data is still all there.
    const sleeping = await mountWithPoll(box, pool, mountpoint, '0');
    await runOk('dd', [
      `if=${lunFile}`,
      `of=${box.path('back.bin')}`,
      'bs=4k',
      'count=2048',
      'iflag=direct',
      'status=none',
    ]);
    expect(await sha256File(box.path('back.bin'))).toBe(expected);
    await expectCleanStop(sleeping);
    expect(polledBatches(sleeping)).toBe(0);

    // A bad value: exit 2 with a message naming it, nothing mounted.
    const refused = await withEnv('LUNFS_FUSE_POLL_US', '20us', () =>
      run(
        process.execPath,
        [join(repoRoot, 'dist', 'bin.js'), 'mount', pool, mountpoint, '--front', 'native'],
        {
          timeoutMs: 30_000,
        },
      ),
    );
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toContain('LUNFS_FUSE_POLL_US must be a whole number of microseconds');
    expect(await mountEntriesAt(mountpoint)).toEqual([]);
  }, 120_000);

  it('takes writes intact into slots lent to JS and, when every slot is lent out, through its copying paths', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 2, driveSize: '96M', raid: 0 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '64M');
    const mountpoint = box.path('mnt');
    const lunFile = join(mountpoint, 'luns', 'db');
    const source = box.path('source.bin');
    for (const slots of [undefined, '0', '2']) {
      const expected = await writeRandomFile(source, 64 * MiB); // new data each round
      const server = await mountWithEnv(box, pool, mountpoint, 'LUNFS_FUSE_SLOTS', slots);
      // Four writers at once, 1 MiB and 4 KiB requests mixed, each on its own quarter.
      await Promise.all(
        [0, 1, 2, 3].map((quarter) =>
          runOk('dd', [
            `if=${source}`,
            `of=${lunFile}`,
            `bs=${quarter % 2 === 0 ? '1M' : '4k'}`,
            `skip=${quarter * 16}M`,
            `seek=${quarter * 16}M`,
            'count=16M',
            'iflag=skip_bytes,count_bytes',
            'oflag=direct,seek_bytes',
            'conv=notrunc',
            'status=none',
          ]),
        ),
      );
      await runOk('dd', [
        `if=${lunFile}`,
        `of=${box.path('back.bin')}`,
        'bs=1M',
        'iflag=direct',
        'status=none',
      ]);
      expect(
        await sha256File(box.path('back.bin')),
        `LUN read back, LUNFS_FUSE_SLOTS=${slots ?? '(default)'}`,
      ).toBe(expected);
      await expectCleanStop(server);
    }
  }, 180_000);
});
