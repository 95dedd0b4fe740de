// End to end, no mocks: a pool of 4 sparse file drives, a LUN served by a real `lunfs mount`
// process through FUSE, a loop device on the LUN file, ext4 on the loop device. For RAID-0 and
// RAID-1 it proves:
//   1. a clean stop (SIGTERM) and a mount in a NEW process keep every file byte for byte, and the
//      ext4 checks clean (fsck -fn) without any journal replay;
//   2. after `kill -9` of the server, everything written before a completed `sync` is there after
//      the next mount, ext4 replays its journal and then checks clean;
//   3. the next `lunfs mount` cleans a stale FUSE mount left by the killed server by itself (RAID-0
//      leaves it in place on purpose; RAID-1 goes through the fusermount -uz cleanup path);
//   4. a raw LUN written, fsync'ed, then overwritten without fsync before kill -9 reads back, per
//      4 KiB block, either the fsync'ed data or the overwrite: never anything else.

import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  MiB,
  lunfsOk,
  mountEntriesAt,
  runOk,
  sha256File,
  statusJson,
  useSandbox,
  writeRandomFile,
  type LoopDevice,
  type MountServer,
  type Sandbox,
} from './support.js';

const driveSize = 256 * MiB;
const lunSize = 192 * MiB;
const rawLunSize = 8 * MiB;

/** Files written before the clean restart, and more written before the kill -9. Sizes in bytes. */
const firstFiles: Record<string, number> = {
  'small.bin': MiB + 37,
  'medium.bin': 3 * MiB,
  'dir/large.bin': 8 * MiB,
  'huge.bin': 20 * MiB,
};
const secondFiles: Record<string, number> = {
  'after-restart.bin': 6 * MiB,
  'dir/before-kill.bin': 10 * MiB + 4095,
};

async function writeFiles(
  root: string,
  files: Record<string, number>,
  sums: Map<string, string>,
): Promise<void> {
  for (const [name, size] of Object.entries(files)) {
    await mkdir(join(root, name, '..'), { recursive: true });
    sums.set(name, await writeRandomFile(join(root, name), size));
  }
}

async function verifyFiles(root: string, sums: Map<string, string>): Promise<void> {
  for (const [name, sum] of sums) {
    expect(await sha256File(join(root, name)), `checksum of ${name}`).toBe(sum);
  }
}

/** Loop device + ext4 mount of a LUN file. */
async function openExt4(box: Sandbox, lunFile: string, data: string): Promise<LoopDevice> {
  const loop = await box.attachLoop(lunFile);
  await box.mountExt4(loop, data);
  return loop;
}

async function closeExt4(box: Sandbox, loop: LoopDevice, data: string): Promise<void> {
  await box.umount(data);
  await box.detachLoop(loop);
}

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
  expect(server.stdout).toContain('unmounted cleanly');
  expect(await mountEntriesAt(server.mountpoint)).toEqual([]);
}

// The default front (auto: the native one where it is built) on RAID-0, fuse-native named on
// RAID-1: both fronts keep the contract in every run (LUNFS_TEST_FRONT runs all of the suite on
// one).
describe.each([
  { raid: 0 as const, leaveStaleMount: true, frontArgs: [] as string[] },
  { raid: 1 as const, leaveStaleMount: false, frontArgs: ['--front', 'fuse-native'] },
])('ext4 on a RAID-$raid LUN (front: $frontArgs)', ({ raid, leaveStaleMount, frontArgs }) => {
  const sandbox = useSandbox(`ext4-raid${raid}`);

  it(`keeps every file across a clean restart and, for synced data, across kill -9 (stale FUSE mount ${leaveStaleMount ? 'left for lunfs mount to clean' : 'removed with fusermount -uz'})`, async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', {
      drives: 4,
      driveSize: `${driveSize / MiB}M`,
      raid,
    });
    for (let index = 0; index < 4; index += 1) {
      const drive = await stat(join(pool, `drive-${index}.img`));
      expect(drive.size).toBe(driveSize);
      expect(drive.blocks * 512, `drive-${index}.img is sparse`).toBeLessThan(driveSize / 4);
    }
    await lunfsOk('lun', 'create', pool, 'db', '--size', `${lunSize / MiB}M`);
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const lunFile = join(mountpoint, 'luns', 'db');
    const sums = new Map<string, string>();

    // ---- first server: mkfs, write, clean stop
    const first = await box.mount(pool, mountpoint, frontArgs);
    expect((await stat(lunFile)).size).toBe(lunSize);
    let loop = await box.attachLoop(lunFile);
    await box.mkfsExt4(loop);
    await box.mountExt4(loop, data);
    await writeFiles(data, firstFiles, sums);
    await closeExt4(box, loop, data);
    await expectCleanStop(first);

    const offline = await statusJson(pool);
    expect(offline.pool.raid).toBe(`raid${raid}`);
    expect(
      offline.drives.filter((drive) => drive.holdsMetadataCopy).map((drive) => drive.metadataCopy),
    ).toEqual(['good', 'good', 'good']);
    expect(offline.luns.find((lun) => lun.name === 'db')!.allocatedBytes).toBeGreaterThanOrEqual(
      32 * MiB,
    );

    // ---- second server (a new process): fsck clean, every checksum; then write more, sync, kill
    // -9
    const second = await box.mount(pool, mountpoint, frontArgs);
    expect(second.pid).not.toBe(first.pid);
    loop = await box.attachLoop(lunFile);
    const fsckAfterCleanStop = await box.fsckExt4(loop);
    expect(
      fsckAfterCleanStop.code,
      `fsck.ext4 -fn after a clean stop:\n${fsckAfterCleanStop.stdout}${fsckAfterCleanStop.stderr}`,
    ).toBe(0);
    await box.mountExt4(loop, data);
    await verifyFiles(data, sums);
    await writeFiles(data, secondFiles, sums);
    await runOk('sync', ['-f', data]);

    // A raw LUN, created through the control socket: A written and fsync'ed, then B without fsync.
    await lunfsOk('lun', 'create', pool, 'raw', '--size', `${rawLunSize / MiB}M`);
    const patternA = randomBytes(rawLunSize);
    const patternB = randomBytes(rawLunSize);
    const raw = await open(join(mountpoint, 'luns', 'raw'), 'r+');
    try {
      await raw.write(patternA, 0, rawLunSize, 0);
      await raw.datasync();
      await raw.write(patternB, 0, rawLunSize, 0); // acknowledged into the write-back cache only
      await second.kill({ leaveStaleMount });
    } finally {
      await raw.close().catch(() => undefined); // the FUSE connection is gone
    }
    // The ext4 above the dead server: lazily unmount it before detaching its loop device.
    await box.umount(data, { lazy: true });
    await box.detachLoop(loop);
    expect((await mountEntriesAt(mountpoint)).length, 'stale FUSE mount of the killed server').toBe(
      leaveStaleMount ? 1 : 0,
    );

    // ---- third server: it must replace a stale mount itself; synced files intact; fsck clean
    const third = await box.mount(pool, mountpoint, frontArgs);
    const entries = await mountEntriesAt(mountpoint);
    expect(
      entries.map((entry) => entry.type),
      'exactly one live lunfs mount at the mountpoint',
    ).toEqual(['fuse.lunfs']);
    const status = JSON.parse(await readFile(join(mountpoint, 'control', 'status'), 'utf8')) as {
      luns: Array<{ name: string }>;
    };
    expect(status.luns.map((lun) => lun.name).sort()).toEqual(['db', 'raw']);

    const rawAfter = await readFile(join(mountpoint, 'luns', 'raw'));
    expect(rawAfter.length).toBe(rawLunSize);
    const block = 4096;
    const torn: number[] = [];
    for (let offset = 0; offset < rawLunSize; offset += block) {
      const got = rawAfter.subarray(offset, offset + block);
      if (
        !got.equals(patternA.subarray(offset, offset + block)) &&
        !got.equals(patternB.subarray(offset, offset + block))
      )
        torn.push(offset);
    }
    expect(
      torn,
      "raw LUN blocks that are neither the fsync'ed data nor the later overwrite",
    ).toEqual([]);

    loop = await openExt4(box, lunFile, data); // mounting replays the ext4 journal
    await verifyFiles(data, sums);
    await box.umount(data);
    const fsckAfterKill = await box.fsckExt4(loop);
    expect(
      fsckAfterKill.code,
      `fsck.ext4 -fn after kill -9 and journal replay:\n${fsckAfterKill.stdout}${fsckAfterKill.stderr}`,
    ).toBe(0);
    await box.detachLoop(loop);
    await expectCleanStop(third);
  }, 240_000);
});
