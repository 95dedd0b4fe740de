// One owner per drive, and no silent loss (issue 17), end to end with real `lunfs` processes and
// FUSE mounts over sparse file drives in the sandbox:
//   1. a drive is locked by the pool that has it open: a second pool directory whose pool.json
//      lists a mounted pool's drives (or `--drive` paths naming them) is refused by `lunfs mount`
//      and `lunfs status` with a message naming the drive and its pool; the mounted pool still
//      serves its data byte for byte, and its fsync'd data is intact after an unmount and a mount;
//   2. `lunfs drive replace` refuses a target that carries a lunfs drive label (another pool's,
//      or this pool's own old drive) unless --force, a target that lies inside the pool's own
//      mountpoint (also through a symbolic link) and a target another pool has open; each refused
//      target file is unchanged (sha256 before and after);
//   3. RAID-0: a drive file moved away while mounted and put back is usable again at the next
//      mount; where a write was missed on it, the mount is refused naming the LUNs, and
//      --force-degraded takes the drive back accepting the loss, reported by status;
//   2b. a block device the kernel holds (a loop device with a mounted ext4, no lunfs label), and
//      the file behind that loop device, are refused by `drive replace` (even with --force) and
//      `pool create --drive` (EBUSY), and the ext4 stays clean (fsck.ext4 -fn);
//   4. RAID-0 with a drive gone while mounted: a write that needs new space fails with EIO (not
//      ENOSPC), and status says the pool failed and names the LUNs whose data is lost.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readFile, rename, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { StatusJson } from '../../src/volume/controller.js';
import {
  MiB,
  directoryFingerprint,
  lunfs,
  lunfsOk,
  mountEntriesAt,
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

const sandbox = useSandbox('drive-ownership');

/** A small pool: drives of 64 MiB, 1 MiB PSEGs and allocation units, with a 16 MiB LUN `db`. */
async function smallPool(box: Sandbox, name: string, raid: 0 | 1): Promise<string> {
  const pool = await box.createPool(name, {
    drives: 2,
    driveSize: '64M',
    raid,
    extra: ['--pseg-size', '1M', '--allocation-unit', '1M'],
  });
  await lunfsOk('lun', 'create', pool, 'db', '--size', '16M');
  return pool;
}

function driveFile(pool: string, index: number): string {
  return join(pool, `drive-${index}.img`);
}

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/**
 * Writes data at offset of a file and fdatasyncs it; returns the error code of the write, the sync
 * or the close (FUSE reports a failed flush there too), whichever came first, if any.
 */
async function writeSynced(
  file: string,
  offset: number,
  data: Buffer,
): Promise<string | undefined> {
  const handle = await open(file, 'r+');
  const codeOf = (error: unknown): string => (error as NodeJS.ErrnoException).code ?? String(error);
  let failure: string | undefined;
  try {
    for (let done = 0; done < data.length;) {
      const { bytesWritten } = await handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    await handle.datasync();
  } catch (error) {
    failure = codeOf(error);
  }
  try {
    await handle.close();
  } catch (error) {
    failure ??= codeOf(error);
  }
  return failure;
}

async function readRange(file: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
    expect(bytesRead).toBe(length);
    return buffer;
  } finally {
    await handle.close();
  }
}

/** Starts `lunfs mount` and expects it to exit non-zero with `message`, mounting nothing. */
async function expectMountRefused(
  box: Sandbox,
  pool: string,
  mountpoint: string,
  args: string[],
  message: RegExp,
): Promise<MountServer> {
  const server = box.spawnMount(pool, mountpoint, args);
  const exit = await Promise.race([server.exited, sleep(20_000).then(() => undefined)]);
  expect(
    exit,
    `lunfs mount ${args.join(' ')} should have been refused; stdout: ${server.stdout}`,
  ).toBeDefined();
  expect(exit!.code, server.stderr).not.toBe(0);
  expect(server.stderr).toMatch(message);
  expect(server.stdout).not.toMatch(/mounted at/);
  expect(await mountEntriesAt(mountpoint)).toEqual([]);
  return server;
}

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
}

/** Polls `lunfs status --json` until `ready` holds (the mount checks its drives every 500 ms). */
async function waitForStatus(
  pool: string,
  what: string,
  ready: (status: StatusJson) => boolean,
  timeoutMs = 15_000,
): Promise<StatusJson> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await statusJson(pool);
    if (ready(status)) return status;
    if (Date.now() > deadline)
      throw new Error(
        `status did not show ${what} within ${timeoutMs} ms:\n${JSON.stringify({ pool: status.pool, drives: status.drives }, null, 2)}`,
      );
    await sleep(200);
  }
}

/** sha256 of every drive file of a pool. */
/**
 * A mounted RAID-0 pool with 4 MiB written and synced to LUN db, whose drive 1 file is then moved
 * away while mounted, until the status shows the drive failed.
 */
async function mountAndMoveDriveAway(
  box: Sandbox,
  name: string,
): Promise<{
  pool: string;
  mountpoint: string;
  server: MountServer;
  lunFile: string;
  data: Buffer;
  moved: string;
}> {
  const pool = await smallPool(box, name, 0);
  const mountpoint = box.path('mnt');
  const server = await box.mount(pool, mountpoint);
  const lunFile = join(mountpoint, 'luns', 'db');
  const data = randomBytes(4 * MiB);
  expect(await writeSynced(lunFile, 0, data)).toBeUndefined();
  const moved = box.path('drive-1.away');
  await rename(driveFile(pool, 1), moved);
  await waitForStatus(pool, 'drive 1 failed', (status) => status.drives[1]!.state === 'failed');
  return { pool, mountpoint, server, lunFile, data, moved };
}

async function driveChecksums(pool: string, count = 2): Promise<string[]> {
  return Promise.all([...Array(count).keys()].map((index) => sha256File(driveFile(pool, index))));
}

describe('one owner per drive', () => {
  it("a second pool listing a mounted pool's drives is refused by mount and status; the mounted pool is unharmed", async () => {
    const box = sandbox();
    const poolA = await smallPool(box, 'a', 0);
    const uuid = (await statusJson(poolA)).pool.uuid;
    const mountA = box.path('mnt-a');
    let serverA = await box.mount(poolA, mountA);
    const lunFile = join(mountA, 'luns', 'db');
    const data = randomBytes(4 * MiB);
    expect(await writeSynced(lunFile, 0, data)).toBeUndefined();

    // Pool B: a directory whose pool.json lists A's drive files.
    const poolB = await box.mkdir('b');
    await writeFile(
      join(poolB, 'pool.json'),
      JSON.stringify({
        format: 'lunfs-pool',
        version: 1,
        drives: [driveFile(poolA, 0), driveFile(poolA, 1)],
      }),
    );
    const fingerprintB = await directoryFingerprint(poolB);
    const drivesBefore = await driveChecksums(poolA);
    const busy = new RegExp(
      `drive ${driveFile(poolA, 0)} belongs to pool ${uuid} and is in use by another process`,
    );

    await expectMountRefused(box, poolB, box.path('mnt-b'), [], busy);
    await expectMountRefused(
      box,
      poolB,
      box.path('mnt-b'),
      ['--drive', driveFile(poolA, 0), '--drive', driveFile(poolA, 1)],
      busy,
    );
    const status = await lunfs('status', poolB);
    expect(status.code, describeRun(status)).toBe(1);
    expect(status.stderr).toMatch(busy);
    expect(status.stdout).toBe('');

    expect(await directoryFingerprint(poolB)).toBe(fingerprintB);
    expect(await driveChecksums(poolA), 'the refused commands wrote to a drive of A').toEqual(
      drivesBefore,
    );
    expect(serverA.running).toBe(true);
    expect(sha256(await readRange(lunFile, 0, data.length))).toBe(sha256(data));
    await expectCleanStop(serverA);
    serverA = await box.mount(poolA, mountA);
    expect(sha256(await readRange(lunFile, 0, data.length))).toBe(sha256(data));
    await expectCleanStop(serverA);
  });
});

describe('drive replace refuses targets it must not overwrite', () => {
  it("another pool's drive, this pool's old drive, a path in its own mountpoint, a drive in use: refused, unchanged; --force overwrites", async () => {
    const box = sandbox();
    const pool = await smallPool(box, 'p', 1);
    const other = await smallPool(box, 'q', 0);
    const otherUuid = (await statusJson(other)).pool.uuid;
    const ownUuid = (await statusJson(pool)).pool.uuid;
    const mountpoint = box.path('mnt-p');
    const server = await box.mount(pool, mountpoint);
    const data = randomBytes(2 * MiB);
    expect(await writeSynced(join(mountpoint, 'luns', 'db'), 0, data)).toBeUndefined();

    // Drive 1 moved aside while mounted: it leaves service, and the moved file keeps this pool's
    // label.
    const moved = box.path('p-drive-1.old');
    await rename(driveFile(pool, 1), moved);
    await waitForStatus(pool, 'drive 1 failed', (status) => status.drives[1]!.state === 'failed');

    const refused = async (
      target: string,
      message: RegExp,
      exitCode: number,
      extra: string[] = [],
    ): Promise<void> => {
      const before = await sha256File(target).catch(() => 'absent');
      const result = await lunfs('drive', 'replace', pool, '1', target, ...extra);
      expect(result.code, describeRun(result)).toBe(exitCode);
      expect(result.stderr, describeRun(result)).toMatch(message);
      expect(await sha256File(target).catch(() => 'absent'), `${target} changed`).toBe(before);
      expect((await statusJson(pool)).drives[1]!.state).toBe('failed');
    };
    await refused(
      driveFile(other, 0),
      new RegExp(
        `${driveFile(other, 0)} carries a lunfs drive label \\(pool ${otherUuid}, drive 0 of 2, created \\d{4}-\\d\\d-\\d\\dT.*--force`,
      ),
      2,
    );
    await refused(
      moved,
      new RegExp(`carries a lunfs drive label \\(pool ${ownUuid}, drive 1 of 2, `),
      2,
    );

    // Inside the pool's own mountpoint, directly and through a symbolic link: refused without
    // touching the mount (before the fix this hung the mount in D-state).
    await refused(
      join(mountpoint, 'luns', 'db'),
      new RegExp(`lies inside the pool's own mountpoint ${mountpoint}`),
      2,
      ['--force'],
    );
    await symlink(mountpoint, box.path('link-to-mount'));
    await refused(
      join(box.path('link-to-mount'), 'luns', 'new.img'),
      /lies inside the pool's own mountpoint/,
      2,
      ['--force'],
    );
    expect(sha256(await readRange(join(mountpoint, 'luns', 'db'), 0, data.length))).toBe(
      sha256(data),
    );

    // Another pool's drive while that pool is mounted: in use, even with --force.
    const otherServer = await box.mount(other, box.path('mnt-q'));
    await refused(
      driveFile(other, 1),
      new RegExp(
        `drive ${driveFile(other, 1)} belongs to pool ${otherUuid} and is in use by another process`,
      ),
      1,
      ['--force'],
    );
    await expectCleanStop(otherServer);

    // --force takes this pool's own old drive back and rebuilds it.
    const forced = await lunfs('drive', 'replace', pool, '1', moved, '--force');
    expect(forced.code, describeRun(forced)).toBe(0);
    await waitForStatus(
      pool,
      'drive 1 online',
      (status) => status.drives[1]!.state === 'online' && status.pool.state === 'online',
    );
    expect(sha256(await readRange(join(mountpoint, 'luns', 'db'), 0, data.length))).toBe(
      sha256(data),
    );
    await expectCleanStop(server);
    // The other pool still opens: nothing of it was overwritten.
    expect((await statusJson(other)).pool.state).toBe('online');
    expect(JSON.parse(await readFile(join(pool, 'pool.json'), 'utf8')).drives[1]).toBe(moved);
  }, 180_000); // about 20 CLI runs and three mounts: 47 s seen at load average 11
});

describe('a device or file the kernel uses is never taken as a drive', () => {
  it('a loop device with a mounted ext4, and its backing file: drive replace (also --force) and pool create --drive are EBUSY; the ext4 stays clean', async () => {
    const box = sandbox();
    const pool = await smallPool(box, 'p', 1);
    const mountpoint = box.path('mnt-p');
    const server = await box.mount(pool, mountpoint);
    await rename(driveFile(pool, 1), box.path('p-drive-1.old'));
    await waitForStatus(pool, 'drive 1 failed', (status) => status.drives[1]!.state === 'failed');

    // Neither carries a lunfs label, and no lunfs process holds them: only the kernel knows they
    // are in use. Before the fix, both commands wrote labels and metadata over the mounted ext4.
    const backing = box.path('ext4.img');
    await writeFile(backing, '');
    await truncate(backing, 64 * MiB);
    const loop = await box.attachLoop(backing);
    await box.mkfsExt4(loop);
    const ext4 = box.path('ext4');
    await box.mountExt4(loop, ext4);
    const marker = randomBytes(64 * 1024);
    await writeFile(join(ext4, 'marker'), marker);
    await runOk('sync', []);
    // The device, and the file under it (a flock on the file does not see the loop device's
    // writes).
    const refusals: Array<[string, RegExp]> = [
      [loop.device, new RegExp(`drive ${loop.device} is in use: the device is mounted`)],
      [backing, new RegExp(`drive ${backing} is in use: it backs the loop device ${loop.device} `)],
    ];
    const plain = box.path('plain.img');
    await writeFile(plain, '');
    await truncate(plain, 64 * MiB);
    for (const [target, inUse] of refusals) {
      for (const extra of [[], ['--force']]) {
        const replaced = await lunfs('drive', 'replace', pool, '1', target, ...extra);
        expect(replaced.code, describeRun(replaced)).toBe(1);
        expect(replaced.stderr, describeRun(replaced)).toMatch(inUse);
      }
      const created = await lunfs(
        'pool',
        'create',
        box.path('q'),
        '--raid',
        '1',
        '--drive',
        target,
        '--drive',
        plain,
      );
      expect(created.code, describeRun(created)).toBe(1);
      expect(created.stderr, describeRun(created)).toMatch(inUse);
    }
    expect((await statusJson(pool)).drives[1]!.state).toBe('failed');
    expect(existsSync(join(box.path('q'), 'pool.json'))).toBe(false);

    expect(sha256(await readFile(join(ext4, 'marker')))).toBe(sha256(marker));
    await box.umount(ext4);
    const fsck = await box.fsckExt4(loop);
    expect(fsck.code, describeRun(fsck)).toBe(0);
    await box.detachLoop(loop);
    await expectCleanStop(server);
  }, 120_000);
});

describe('RAID-0: a drive that leaves while mounted', () => {
  it('moved away and put back: in service again at the next mount, every byte intact', async () => {
    const box = sandbox();
    const {
      pool,
      mountpoint,
      server: first,
      lunFile,
      data,
      moved,
    } = await mountAndMoveDriveAway(box, 'back');
    let server = first;
    await rename(moved, driveFile(pool, 1));
    await expectCleanStop(server);

    server = await box.mount(pool, mountpoint);
    const status = await statusJson(pool);
    expect(status.pool.state).toBe('online');
    expect(status.drives.map((drive) => drive.state)).toEqual(['online', 'online']);
    expect(sha256(await readRange(lunFile, 0, data.length))).toBe(sha256(data));
    const more = randomBytes(MiB);
    expect(await writeSynced(lunFile, 8 * MiB, more)).toBeUndefined();
    await expectCleanStop(server);
    server = await box.mount(pool, mountpoint);
    expect(sha256(await readRange(lunFile, 0, data.length))).toBe(sha256(data));
    expect(sha256(await readRange(lunFile, 8 * MiB, MiB))).toBe(sha256(more));
    await expectCleanStop(server);
  });

  it('one that missed a write is refused at the next mount, naming the LUN; --force-degraded takes it back and reports the loss', async () => {
    const box = sandbox();
    const { pool, mountpoint, server, lunFile, data, moved } = await mountAndMoveDriveAway(
      box,
      'missed',
    );
    // Half of this write's stripe units are on drive 1: they miss it, and fsync says so.
    expect(await writeSynced(lunFile, 0, randomBytes(MiB))).toBe('EIO');
    await waitForStatus(
      pool,
      'the missed write',
      (status) => status.drives[1]!.missedWriteLuns?.includes('db') === true,
    );
    // Its cache holds the write no drive can take: the stop says that it is lost, and exits 1.
    expect(await server.stop()).toEqual({ code: 1, signal: null });
    expect(server.stderr).toMatch(
      /lunfs: pool \S+ unmounted, but \d+ bytes of writes to LUN db acknowledged but not yet flushed could not be written and are lost: .*drive 1 is out of service/,
    );
    expect(await mountEntriesAt(mountpoint)).toEqual([]);
    await rename(moved, driveFile(pool, 1));

    await expectMountRefused(
      box,
      pool,
      mountpoint,
      [],
      new RegExp(
        `drive 1 \\(${driveFile(pool, 1)}\\) is back with its own label, but writes meant for it were missed while it was out of service \\(RStore\\(s\\) [0-9, ]+, data of LUN\\(s\\) db\\).*--force-degraded`,
      ),
    );
    const forced = await box.mount(pool, mountpoint, ['--force-degraded']);
    expect(forced.stderr).toMatch(
      /taken back into service with --force-degraded: writes it missed are lost; LUNs affected: db/,
    );
    const status = await statusJson(pool);
    expect(status.pool.state).toBe('online');
    expect(status.drives.map((drive) => [drive.state, drive.missedWriteLuns])).toEqual([
      ['online', undefined],
      ['online', undefined],
    ]);
    // The megabyte written while the drive was away is lost on its half; the rest of the LUN is
    // intact.
    expect(sha256(await readRange(lunFile, MiB, 3 * MiB))).toBe(sha256(data.subarray(MiB)));
    // reads (no checksum EIO), older data where the write was missed
    await readRange(lunFile, 0, MiB);
    await expectCleanStop(forced);
    const again = await box.mount(pool, mountpoint);
    expect(sha256(await readRange(lunFile, MiB, 3 * MiB))).toBe(sha256(data.subarray(MiB)));
    await expectCleanStop(again);
  });

  it('deleted: a write that needs new space fails with EIO, not ENOSPC; status says the LUN is lost, not at risk', async () => {
    const box = sandbox();
    const pool = await smallPool(box, 'gone', 0);
    const mountpoint = box.path('mnt');
    const server = await box.mount(pool, mountpoint);
    const lunFile = join(mountpoint, 'luns', 'db');
    // 2 MiB: both RSEGs of the first RStore (2 drives x 1 MiB PSEGs), so the next unit needs a new
    // RStore.
    expect(await writeSynced(lunFile, 0, randomBytes(2 * MiB))).toBeUndefined();
    await rm(driveFile(pool, 1));
    await waitForStatus(pool, 'drive 1 failed', (status) => status.drives[1]!.state === 'failed');

    expect(await writeSynced(lunFile, 8 * MiB, randomBytes(MiB))).toBe('EIO');
    const status = await statusJson(pool);
    expect(status.pool.state).toBe('failed');
    expect(status.pool.lostLuns).toEqual(['db']);
    expect(status.pool.atRiskLuns).toEqual([]);
    expect(status.luns.map((lun) => [lun.name, lun.lost, lun.atRisk])).toEqual([
      ['db', true, false],
    ]);
    const text = await lunfsOk('status', pool);
    expect(text.stdout).toMatch(
      /^lost \(drives failed beyond redundancy: their data there reads as EIO\): db$/m,
    );
    expect(text.stdout).not.toMatch(/at risk/);
    await server.stop();
  });

  it('deleted: a write to a free allocation unit of an RStore that lost a drive fails with EIO at once', async () => {
    const box = sandbox();
    const pool = await smallPool(box, 'gone-rseg', 0);
    const mountpoint = box.path('mnt');
    const server = await box.mount(pool, mountpoint);
    const lunFile = join(mountpoint, 'luns', 'db');
    // the first RStore's second RSEG stays free
    expect(await writeSynced(lunFile, 0, randomBytes(MiB))).toBeUndefined();
    await rm(driveFile(pool, 1));
    await waitForStatus(pool, 'drive 1 failed', (status) => status.drives[1]!.state === 'failed');
    expect(await writeSynced(lunFile, 8 * MiB, randomBytes(MiB))).toBe('EIO');
    // Nothing of it sits in the cache waiting for a drive that is gone: the mount stops cleanly.
    await expectCleanStop(server);
  });
});
