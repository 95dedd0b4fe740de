// Bad input, end to end through the real CLI, control socket and FUSE mount. Each refusal must
// print a clear `lunfs: ...` message on stderr, exit non-zero and change nothing: the pool's
// `status --json` and the pool directory (every file's name, size and mtime) are compared before
// and after. Also covered: writes past the end of a LUN, a full pool (ENOSPC to the writer, data
// written before intact after a remount), a second mount of a mounted pool, drives in the wrong
// order or missing, and LUN creation/removal through the mountpoint and through the socket.

import { rename, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  MiB,
  directoryFingerprint,
  lunfs,
  lunfsOk,
  mountEntriesAt,
  run,
  runOk,
  sha256,
  sha256File,
  sleep,
  statusJson,
  useSandbox,
  type MountServer,
  type RunResult,
  type Sandbox,
} from './support.js';

const sandbox = useSandbox('bad-input', 'file');

/** A small pool: 2 x 64 MiB drives, RAID-0, 1 MiB PSEGs and allocation units (about 122 MiB). */
async function smallPool(box: Sandbox, name: string): Promise<string> {
  return box.createPool(name, {
    drives: 2,
    driveSize: '64M',
    raid: 0,
    extra: ['--pseg-size', '1M', '--allocation-unit', '1M'],
  });
}

let poolCounter = 0;
/** A fresh small pool with a 16 MiB LUN `db`. */
async function poolWithLun(box: Sandbox): Promise<string> {
  poolCounter += 1;
  const pool = await smallPool(box, `pool${poolCounter}`);
  await lunfsOk('lun', 'create', pool, 'db', '--size', '16M');
  return pool;
}

interface PoolState {
  status: unknown;
  files: string;
}

/**
 * The pool as `status --json` reports it (cache counters left out), the files of its directory
 * (names and sizes; pool.json by content) and, when strict, every file's mtime too. Not strict:
 * a refused CLI command on an unmounted pool still opens it for writing and rewrites its metadata
 * checkpoints (the same logical state), which changes the drives' mtimes.
 */
async function poolState(pool: string, options: { strict?: boolean } = {}): Promise<PoolState> {
  const status = await statusJson(pool);
  const { cache: _cache, ...rest } = status;
  const fingerprint = await directoryFingerprint(pool);
  const files = options.strict
    ? fingerprint
    : fingerprint
        .split('\n')
        .map((line) => line.split(' ').slice(0, 2).join(' '))
        .join('\n');
  return {
    status: rest,
    files: `${files}\npool.json ${sha256(await readFile(join(pool, 'pool.json')))}`,
  };
}

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/**
 * The command must fail with exit code 2 (bad input) and a one-line `lunfs: ...` message matching
 * `message`.
 */
function expectBadInput(result: RunResult, message: RegExp, exitCode = 2): void {
  expect(result.code, describeRun(result)).toBe(exitCode);
  expect(result.stderr, describeRun(result)).toMatch(/^lunfs: /);
  expect(result.stderr, describeRun(result)).toMatch(message);
  expect(result.stderr, 'no stack trace for bad input').not.toMatch(/\n\s+at /);
  expect(result.stdout, describeRun(result)).toBe('');
}

/** Runs `lunfs ARGS`, expects a bad-input refusal, and checks that the pool did not change. */
async function expectRefused(
  pool: string,
  args: string[],
  message: RegExp,
  exitCode = 2,
): Promise<void> {
  const before = await poolState(pool);
  expectBadInput(await lunfs(...args), message, exitCode);
  expect(await poolState(pool), `pool changed by \`lunfs ${args.join(' ')}\``).toEqual(before);
}

/** Starts `lunfs mount` and expects it to exit non-zero with `message`, mounting nothing. */
async function expectMountRefused(
  box: Sandbox,
  pool: string,
  mountpoint: string,
  args: string[],
  message: RegExp,
): Promise<MountServer> {
  const mountsBefore = await mountEntriesAt(mountpoint);
  const server = box.spawnMount(pool, mountpoint, args);
  const exit = await Promise.race([server.exited, sleep(20_000).then(() => undefined)]);
  expect(
    exit,
    `lunfs mount ${args.join(' ')} should have been refused; stdout: ${server.stdout}`,
  ).toBeDefined();
  expect(exit!.code, server.stderr).not.toBe(0);
  expect(server.stderr).toMatch(/^lunfs: /);
  expect(server.stderr).toMatch(message);
  expect(server.stdout).not.toMatch(/mounted at/);
  expect(await mountEntriesAt(mountpoint)).toEqual(mountsBefore);
  return server;
}

/** dd as a child process; returns its result (the summary and errors are on stderr). */
function dd(...operands: string[]): Promise<RunResult> {
  return run('dd', operands, { timeoutMs: 60_000 });
}

/** Polls `probe` for up to 3 s until it returns `expected`; returns the last value. */
async function eventually<T>(probe: () => Promise<T>, expected: T): Promise<T> {
  let value = await probe();
  for (let attempt = 0; attempt < 30 && value !== expected; attempt += 1) {
    await sleep(100);
    value = await probe();
  }
  return value;
}

function bytesCopied(result: RunResult): number {
  const match = /(\d+) bytes/.exec(result.stderr);
  if (!match) throw new Error(`no byte count in dd output: ${result.stderr}`);
  return Number(match[1]);
}

describe('bad input to the CLI, pool not mounted', () => {
  it('an unknown pool directory is refused by every command and nothing is created', async () => {
    const box = sandbox();
    const nowhere = box.path('no-such-pool');
    const empty = await box.mkdir('empty-dir');
    for (const directory of [nowhere, empty]) {
      for (const args of [
        ['status', directory],
        ['status', directory, '--json'],
        ['lun', 'ls', directory],
        ['lun', 'create', directory, 'x', '--size', '1M'],
        ['lun', 'rm', directory, 'x'],
        ['lun', 'resize', directory, 'x', '--size', '2M'],
        ['mount', directory, box.path('mnt-nowhere')],
      ]) {
        expectBadInput(await lunfs(...args), new RegExp(`no lunfs pool at ${directory}`));
      }
    }
    await expect(stat(nowhere)).rejects.toThrow(/ENOENT/);
    expect(await readdir(empty)).toEqual([]);
    await expect(stat(box.path('mnt-nowhere'))).rejects.toThrow(/ENOENT/);
  });

  it('an unknown LUN is refused by rm and resize', async () => {
    const pool = await poolWithLun(sandbox());
    await expectRefused(pool, ['lun', 'rm', pool, 'ghost'], /no LUN named 'ghost'/);
    await expectRefused(
      pool,
      ['lun', 'resize', pool, 'ghost', '--size', '32M'],
      /no LUN named 'ghost'/,
    );
  });

  it('a size that is not a whole number of 512-byte sectors, zero, or not a size is refused', async () => {
    const pool = await poolWithLun(sandbox());
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'odd', '--size', '1000'],
      /LUN size 1000 is not a whole number of 512-byte sectors/,
    );
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'odd', '--size', '1.0001M'],
      /not a whole number of 512-byte sectors/,
    );
    await expectRefused(
      pool,
      ['lun', 'resize', pool, 'db', '--size', String(16 * MiB + 100)],
      /not a whole number of 512-byte sectors/,
    );
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'zero', '--size', '0'],
      /must be larger than 0/,
    );
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'junk', '--size', '12Q'],
      /invalid LUN size '12Q'/,
    );
    await expectRefused(pool, ['lun', 'create', pool, 'junk', '--size', '-5M'], /invalid LUN size/);
  });

  it('a LUN larger than the pool can ever map is refused, on create and on resize', async () => {
    const pool = await poolWithLun(sandbox());
    const capacity = (await statusJson(pool)).pool.totalBytes;
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'huge', '--size', '1G'],
      new RegExp(`larger than the pool can ever map \\(${capacity} bytes\\)`),
    );
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'huge', '--size', `${capacity + 512}`],
      /larger than the pool can ever map/,
    );
    await expectRefused(
      pool,
      ['lun', 'resize', pool, 'db', '--size', '1G'],
      /larger than the pool can ever map/,
    );
    // Thin provisioning: exactly the capacity is fine (and is removed again).
    await lunfsOk('lun', 'create', pool, 'max', '--size', String(capacity));
    await lunfsOk('lun', 'rm', pool, 'max');
  });

  it('a duplicate LUN name is refused', async () => {
    const pool = await poolWithLun(sandbox());
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'db', '--size', '1M'],
      /a LUN named 'db' exists already/,
    );
    await expectRefused(
      pool,
      ['lun', 'create', pool, 'db', '--size', '16M'],
      /a LUN named 'db' exists already/,
    );
  });

  it('an invalid LUN name is refused', async () => {
    const pool = await poolWithLun(sandbox());
    for (const name of [
      'bad/name',
      '.hidden',
      '_under',
      'with space',
      'x'.repeat(64),
      'caf\u00e9',
      '..',
    ]) {
      await expectRefused(
        pool,
        ['lun', 'create', pool, name, '--size', '1M'],
        /invalid LUN name .*use 1-63 letters, digits/,
      );
    }
  });

  it('an invalid RAID level, or RAID-5 on two drives, is refused and no pool directory is created', async () => {
    const box = sandbox();
    for (const [level, message, code] of [
      ['7', /invalid RAID level '7': use 0, 1 or 5/, 2],
      ['x', /invalid RAID level 'x'/, 2],
      ['5', /RAID-5 needs at least 3 drives, got 2/, 2],
    ] as const) {
      const directory = box.path(`raid-${level}`);
      expectBadInput(
        await lunfs(
          'pool',
          'create',
          directory,
          '--drives',
          '2',
          '--drive-size',
          '64M',
          '--raid',
          level,
        ),
        message,
        code,
      );
      await expect(stat(directory)).rejects.toThrow(/ENOENT/);
    }
  });

  it('a shrinking resize is refused', async () => {
    const pool = await poolWithLun(sandbox());
    await expectRefused(
      pool,
      ['lun', 'resize', pool, 'db', '--size', '8M'],
      /LUN 'db' is 16777216 bytes; shrinking to 8388608 is not supported/,
    );
    await expectRefused(pool, ['lun', 'resize', pool, 'db', '--size', '512'], /shrinking/);
  });

  it('creating a pool over an existing pool directory is refused', async () => {
    const pool = await poolWithLun(sandbox());
    await expectRefused(
      pool,
      ['pool', 'create', pool, '--drives', '2', '--drive-size', '64M', '--raid', '0'],
      /already exists/,
    );
  });

  // A `pool create` that fails validation after creating its drive files (drives too small, bad
  // geometry, RAID-1 with one drive) removes them again, so a retry with good arguments works.
  it('a pool create refused for too-small drives leaves nothing behind', async () => {
    const box = sandbox();
    const directory = box.path('too-small');
    expectBadInput(
      await lunfs(
        'pool',
        'create',
        directory,
        '--drives',
        '2',
        '--drive-size',
        '1M',
        '--raid',
        '0',
      ),
      /too small/,
    );
    await expect(stat(directory)).rejects.toThrow(/ENOENT/);
  });

  // `pool create --drive PATH` must never format a drive that belongs to an existing pool.
  it('pool create refuses a drive of an existing pool and changes nothing', async () => {
    const box = sandbox();
    const victim = await poolWithLun(box);
    const before = await poolState(victim);
    const result = await lunfs(
      'pool',
      'create',
      box.path('thief'),
      '--drive',
      join(victim, 'drive-0.img'),
      '--raid',
      '0',
    );
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/already belongs to lunfs pool/);
    expect(await poolState(victim)).toEqual(before);
  });
});

describe('bad input through the control socket of a mounted pool', () => {
  it('is refused with the same messages, and the mounted pool does not change', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt-socket');
    const server = await box.mount(pool, mountpoint);
    const before = await statusJson(pool); // through the socket
    const check = async (args: string[], message: RegExp): Promise<void> => {
      expectBadInput(await lunfs(...args), message);
      const { cache: _a, ...now } = await statusJson(pool);
      const { cache: _b, ...then } = before;
      expect(now).toEqual(then);
      expect((await readdir(join(mountpoint, 'luns'))).sort()).toEqual(['db']);
    };
    await check(['lun', 'create', pool, 'db', '--size', '1M'], /a LUN named 'db' exists already/);
    await check(['lun', 'create', pool, 'bad/name', '--size', '1M'], /invalid LUN name/);
    await check(
      ['lun', 'create', pool, 'odd', '--size', '1000'],
      /not a whole number of 512-byte sectors/,
    );
    await check(
      ['lun', 'create', pool, 'huge', '--size', '1G'],
      /larger than the pool can ever map/,
    );
    await check(['lun', 'rm', pool, 'ghost'], /no LUN named 'ghost'/);
    await check(['lun', 'resize', pool, 'ghost', '--size', '32M'], /no LUN named 'ghost'/);
    await check(
      ['lun', 'resize', pool, 'db', '--size', '8M'],
      /shrinking to 8388608 is not supported/,
    );
    await check(['lun', 'resize', pool, 'db', '--size', '1G'], /larger than the pool can ever map/);
    expect(server.running).toBe(true);
  });
});

describe('bad input through FUSE and to lunfs mount', () => {
  it('a write past the end of a LUN fails (EFBIG) and leaves the LUN intact; so does a shrinking truncate', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt-past-end');
    const lun = join(mountpoint, 'luns', 'db');
    const content = randomBytes(16 * MiB);
    const source = box.path('db-content.bin');
    await writeFile(source, content);
    let server = await box.mount(pool, mountpoint);
    await runOk('dd', [`if=${source}`, `of=${lun}`, 'bs=1M', 'conv=notrunc,fsync', 'status=none']);
    expect(await sha256File(lun)).toBe(sha256(content));

    // Wholly past the end.
    const past = await dd(
      'if=/dev/urandom',
      `of=${lun}`,
      'bs=1M',
      'count=1',
      'seek=16',
      'conv=notrunc',
    );
    expect(past.code, past.stderr).not.toBe(0);
    expect(past.stderr).toMatch(/File too large/);
    // Straddling the end: the in-range half rewrites the bytes the LUN holds, the rest must be
    // refused.
    const straddle = box.path('straddle.bin');
    await writeFile(
      straddle,
      Buffer.concat([content.subarray(16 * MiB - 512 * 1024), randomBytes(512 * 1024)]),
    );
    const across = await dd(`if=${straddle}`, `of=${lun}`, 'bs=512K', 'seek=31', 'conv=notrunc');
    expect(across.code, across.stderr).not.toBe(0);
    expect(across.stderr).toMatch(/File too large/);
    // A truncate to shrink the LUN file.
    const shrink = await run('truncate', ['-s', '8M', lun]);
    expect(shrink.code).not.toBe(0);
    expect(shrink.stderr).toMatch(/Invalid argument/);

    expect((await stat(lun)).size).toBe(16 * MiB);
    expect(await sha256File(lun)).toBe(sha256(content));
    await expectCleanExit(server);
    server = await box.mount(pool, mountpoint);
    expect(await sha256File(lun)).toBe(sha256(content));
    expect((await statusJson(pool)).luns.map((entry) => [entry.name, entry.sizeBytes])).toEqual([
      ['db', 16 * MiB],
    ]);
    await expectCleanExit(server);
  });

  it('rm of a LUN that is open (a loop device holds it) is refused with EBUSY', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt-busy');
    const server = await box.mount(pool, mountpoint);
    const loop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
    const result = await run('rm', [join(mountpoint, 'luns', 'db')]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/Device or resource busy/);
    await box.detachLoop(loop);
    expect((await statusJson(pool)).luns.map((entry) => entry.name)).toEqual(['db']);
    await expectCleanExit(server);
  });

  it('a second mount of a mounted pool fails with a message naming the process', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt-first');
    const first = await box.mount(pool, mountpoint);
    await expectMountRefused(
      box,
      pool,
      box.path('mnt-second'),
      [],
      new RegExp(`pool ${pool} is in use by process ${first.pid} \\(mounted at ${mountpoint}\\)`),
    );
    await expectMountRefused(
      box,
      pool,
      mountpoint,
      [],
      new RegExp(`in use by process ${first.pid}`),
    );
    // The first mount still serves.
    expect(first.running).toBe(true);
    const status = JSON.parse(await readFile(join(mountpoint, 'control', 'status'), 'utf8')) as {
      luns: Array<{ name: string }>;
    };
    expect(status.luns.map((lun) => lun.name)).toEqual(['db']);
    expect((await first.stop()).code).toBe(0);
  });

  it('drives in the wrong order or missing are refused and the pool does not change', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const drive0 = join(pool, 'drive-0.img');
    const drive1 = join(pool, 'drive-1.img');
    const mountpoint = box.path('mnt-drives');
    // a refused mount must not even open a drive for writing
    const before = await poolState(pool, { strict: true });

    await expectMountRefused(
      box,
      pool,
      mountpoint,
      ['--drive', drive1, '--drive', drive0],
      new RegExp(
        `drives given in the wrong order: ${drive1} is drive 1 of the pool but was given as drive 0`,
      ),
    );
    await expectMountRefused(
      box,
      pool,
      mountpoint,
      ['--drive', drive0],
      /the pool has 2 drives but 1 were given; missing drive index 1/,
    );
    await expectMountRefused(
      box,
      pool,
      mountpoint,
      ['--drive', drive0, '--drive', drive0],
      /the same drive is given twice/,
    );
    expect(await poolState(pool, { strict: true })).toEqual(before);

    const moved = box.path('drive-1.moved');
    await rename(drive1, moved);
    try {
      await expectMountRefused(
        box,
        pool,
        mountpoint,
        [],
        new RegExp(`drive ${drive1} does not exist`),
      );
      expectBadInput(
        await lunfs('lun', 'create', pool, 'x', '--size', '1M'),
        new RegExp(`drive ${drive1} does not exist`),
      );
    } finally {
      await rename(moved, drive1);
    }
    expect(await poolState(pool, { strict: true })).toEqual(before);
    // With the drive back, the pool mounts.
    const server = await box.mount(pool, mountpoint);
    await expectCleanExit(server);
  });

  it('a full pool gives ENOSPC to the writer; data written before is intact after a remount', async () => {
    const box = sandbox();
    const pool = await smallPool(box, 'full');
    const capacity = (await statusJson(pool)).pool.totalBytes;
    await lunfsOk('lun', 'create', pool, 'keep', '--size', '48M');
    // more than is left once keep is written
    await lunfsOk('lun', 'create', pool, 'big', '--size', '100M');
    expect(48 * MiB + 100 * MiB).toBeGreaterThan(capacity);
    const mountpoint = box.path('mnt-full');
    const keep = join(mountpoint, 'luns', 'keep');
    const big = join(mountpoint, 'luns', 'big');
    const keepContent = randomBytes(48 * MiB);
    const bigContent = randomBytes(100 * MiB);
    await writeFile(box.path('keep.bin'), keepContent);
    await writeFile(box.path('big.bin'), bigContent);

    let server = await box.mount(pool, mountpoint);
    await runOk('dd', [
      `if=${box.path('keep.bin')}`,
      `of=${keep}`,
      'bs=1M',
      'conv=notrunc,fsync',
      'status=none',
    ]);
    const full = await dd(`if=${box.path('big.bin')}`, `of=${big}`, 'bs=1M', 'conv=notrunc,fsync');
    expect(full.code, full.stderr).not.toBe(0);
    expect(full.stderr).toMatch(/No space left on device/);
    const written = bytesCopied(full);
    expect(written).toBeGreaterThan(0);
    expect(written).toBeLessThan(100 * MiB);
    const status = await statusJson(pool);
    expect(status.pool.freeBytes).toBeLessThan(status.pool.allocationUnitBytes);
    expect(await sha256File(big, written)).toBe(sha256(bigContent.subarray(0, written)));
    expect(await sha256File(keep)).toBe(sha256(keepContent));

    // Overwriting data that is already mapped still works on a full pool.
    const patch = randomBytes(MiB);
    await writeFile(box.path('patch.bin'), patch);
    await runOk('dd', [
      `if=${box.path('patch.bin')}`,
      `of=${keep}`,
      'bs=1M',
      'seek=3',
      'conv=notrunc,fsync',
      'status=none',
    ]);
    patch.copy(keepContent, 3 * MiB);

    const exit = await server.stop();
    expect(exit, server.stderr).toEqual({ code: 0, signal: null });
    server = await box.mount(pool, mountpoint);
    expect(await sha256File(keep)).toBe(sha256(keepContent));
    expect(await sha256File(big, written)).toBe(sha256(bigContent.subarray(0, written)));
    await expectCleanExit(server);
  });
});

describe('LUNs through the mountpoint and the control socket', () => {
  it('truncate -s creates a LUN, rm removes it, and lun create/rm while mounted go through the socket', async () => {
    const box = sandbox();
    const pool = await poolWithLun(box);
    const mountpoint = box.path('mnt-luns');
    const server = await box.mount(pool, mountpoint);
    const luns = join(mountpoint, 'luns');
    const lunList = async (): Promise<Array<[string, number]>> =>
      (
        JSON.parse((await lunfsOk('lun', 'ls', pool, '--json')).stdout) as Array<{
          name: string;
          sizeBytes: number;
        }>
      ).map((lun) => [lun.name, lun.sizeBytes]);

    await runOk('truncate', ['-s', '4M', join(luns, 'new')]);
    expect(await lunList()).toEqual([
      ['db', 16 * MiB],
      ['new', 4 * MiB],
    ]);
    expect((await stat(join(luns, 'new'))).size).toBe(4 * MiB);
    await runOk('truncate', ['-s', '6M', join(luns, 'new')]); // grows
    expect(await lunList()).toEqual([
      ['db', 16 * MiB],
      ['new', 6 * MiB],
    ]);
    await runOk('rm', [join(luns, 'new')]);
    expect(await lunList()).toEqual([['db', 16 * MiB]]);
    expect((await readdir(luns)).sort()).toEqual(['db']);

    // The CLI talks to the mount's process: the pool is locked by it and its socket is there.
    const lock = JSON.parse(await readFile(join(pool, 'lunfs.lock'), 'utf8')) as { pid: number };
    expect(lock.pid).toBe(server.pid);
    expect((await stat(join(pool, 'lunfs.sock'))).isSocket()).toBe(true);
    await lunfsOk('lun', 'create', pool, 'sock', '--size', '2M');
    expect((await readdir(luns)).sort()).toEqual(['db', 'sock']);
    expect((await stat(join(luns, 'sock'))).size).toBe(2 * MiB);
    await lunfsOk('lun', 'resize', pool, 'sock', '--size', '3M');
    // The kernel caches FUSE attributes for 1 s (libfuse's default attr_timeout): poll for the new
    // size.
    expect(await eventually(async () => (await stat(join(luns, 'sock'))).size, 3 * MiB)).toBe(
      3 * MiB,
    );
    await lunfsOk('lun', 'rm', pool, 'sock');
    expect((await readdir(luns)).sort()).toEqual(['db']);
    await expectCleanExit(server);
    expect((await statusJson(pool)).luns.map((lun) => lun.name)).toEqual(['db']);
  });
});

/**
 * SIGTERM stops the mount with exit code 0; otherwise the exit status and the server's output say
 * why. Two fresh-clone runs of the suite saw { code: null, signal: 'SIGTERM' } with an empty
 * stderr here (the default action of SIGTERM: no handler ran, or a second SIGTERM came after the
 * once-handler): its stdout ('unmounted cleanly', or not) says whether the shutdown had finished.
 */
async function expectCleanExit(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(
    exit,
    `lunfs mount exit after SIGTERM; stderr:\n${server.stderr}\nstdout:\n${server.stdout}`,
  ).toEqual({ code: 0, signal: null });
}
