// Snapshots end to end, no mocks: a pool of 4 sparse 1 GiB file drives, a 512 MiB LUN served by a
// real `lunfs mount` process through FUSE, a loop device on the LUN file, ext4 on the loop device.
// It proves:
//   1. a snapshot taken with `touch MNT/control/snapshot/LUN@NAME` while ext4 is mounted holds,
//      file by file (sha256), the tree as it was synced before the snapshot, however much the LUN
//      changes afterwards (files rewritten in place, appended, deleted, added): the snapshot file
//      attached read-only (`losetup -r`) mounts with `-o ro,noload`; the live LUN has the new tree;
//   2. the snapshot is writable: attached read-write, its ext4 replays its journal, takes new files
//      and deletions, unmounts and checks clean (fsck -fn), and keeps them, while the LUN does not
//      change by a single byte (sha256 of the whole LUN file before and after) and checks clean;
//   3. after `kill -9` of the server and a mount in a new process, a snapshot (taken through the
//      CLI and the control socket) reads byte for byte as before, its ext4 holds the tree of the
//      snapshot instant, and the LUN's synced files are intact (journal replay, fsck -fn clean);
//      a raw LUN written WITHOUT fsync right before a snapshot, then overwritten and killed at
//      once,
//      holds those writes in the snapshot after the kill -9 (creating a snapshot makes what it
//      holds durable), and the LUN holds them or the overwrite, block by block;
//   4. `lunfs snapshot ls --json` (mounted and not), `status --json` and control/status report the
//      snapshots with the right epochs, states and byte counts (exclusive/shared preserved data);
//      `rm MNT/snapshots/LUN@NAME` and `lunfs snapshot rm` delete them, and deleting every one
//      gives the pool back exactly the free space it had before the first; a snapshot taken
//      offline (CLI, pool not mounted) holds the LUN as it was;
//   5. bad input is refused with the right exit code / errno and a message, and changes nothing
//      (the snapshot list and the pool status compared before and after): snapshot of an unknown
//      LUN, malformed name, duplicate name, `lun rm` and `rm luns/LUN` of a LUN with snapshots
//      (EBUSY), rm of a snapshot that does not exist (ENOENT) or is open (EBUSY), writes past the
//      end of a snapshot file (EFBIG), truncate of a snapshot file.

import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SnapshotStatus, StatusJson } from '../../src/volume/controller.js';
import {
  MiB,
  lunfs,
  lunfsOk,
  run,
  runOk,
  sha256,
  sha256File,
  statusJson,
  treeChecksums,
  useSandbox,
  writeRandomFile,
  type LoopDevice,
  type MountServer,
  type RunResult,
  type Sandbox,
} from './support.js';

const driveSize = '1G';
const lunSize = 512 * MiB; // >= 512 MiB: mkfs.ext4 uses 4 KiB blocks (the 'default' type)

/** The tree written before the snapshot (sizes in bytes). */
const initialFiles: Record<string, number> = {
  'small.bin': MiB + 37,
  'medium.bin': 3 * MiB,
  'empty.bin': 0,
  'dir/large.bin': 12 * MiB + 4095,
  'dir/sub/a.txt': 4097,
  'dir/sub/deeper/b.bin': 700 * 1024,
  'will-change.bin': 5 * MiB,
  'will-delete.bin': 2 * MiB,
  'dir/will-delete-too.bin': 300 * 1024,
  ...Object.fromEntries(
    Array.from({ length: 24 }, (_, index) => [
      `tree/d${index % 4}/f${index}.bin`,
      1000 + index * 7919,
    ]),
  ),
};

async function writeFiles(root: string, files: Record<string, number>): Promise<void> {
  for (const [name, size] of Object.entries(files)) {
    await mkdir(join(root, name, '..'), { recursive: true });
    await writeRandomFile(join(root, name), size);
  }
}

/** Rewrites `length` bytes at `offset` of an existing file in place (no truncation), fsync'ed. */
async function patchFile(path: string, offset: number, length: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(randomBytes(length), 0, length, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Appends random bytes to a file, fsync'ed. */
async function appendFile(path: string, length: number): Promise<void> {
  const handle = await open(path, 'a');
  try {
    await handle.write(randomBytes(length));
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Every kind of change to the tree after the snapshot; the caller syncs. */
async function changeTree(root: string): Promise<void> {
  await patchFile(join(root, 'medium.bin'), MiB + 4096, 64 * 1024); // in place, inside the file
  await appendFile(join(root, 'small.bin'), 200 * 1024);
  await writeRandomFile(join(root, 'will-change.bin'), 5 * MiB); // same name, same size, new blocks
  await rm(join(root, 'will-delete.bin'));
  await rm(join(root, 'dir', 'will-delete-too.bin'));
  await rm(join(root, 'tree', 'd3'), { recursive: true });
  await writeFiles(root, {
    'new/after.bin': 8 * MiB,
    'dir/sub/c.txt': 12345,
    'tree/d0/added.bin': 64 * 1024,
  });
}

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

async function snapshotList(pool: string): Promise<SnapshotStatus[]> {
  return JSON.parse((await lunfsOk('snapshot', 'ls', pool, '--json')).stdout) as SnapshotStatus[];
}

function fsckOutput(result: RunResult): string {
  return `${result.stdout}${result.stderr}`;
}

/** What names a snapshot and its instant (not its byte counts, which change with the LUN). */
function identity(entry: SnapshotStatus): unknown {
  const {
    name,
    lun,
    snapshot,
    sizeBytes,
    createdAt,
    state,
    invalidReason,
    reserved,
    reservedBytes,
    epoch,
  } = entry;
  return {
    name,
    lun,
    snapshot,
    sizeBytes,
    createdAt,
    state,
    invalidReason,
    reserved,
    reservedBytes,
    epoch,
  };
}

async function expectFsckClean(box: Sandbox, loop: LoopDevice, what: string): Promise<void> {
  const result = await box.fsckExt4(loop);
  expect(result.code, `fsck.ext4 -fn of ${what}:\n${fsckOutput(result)}`).toBe(0);
}

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
}

/**
 * Mounts the snapshot file read-only (losetup -r, mount -o ro,noload), returns its tree, releases
 * it.
 */
async function snapshotTree(
  box: Sandbox,
  snapshotFile: string,
  directory: string,
): Promise<Record<string, string>> {
  const loop = await box.attachLoopReadOnly(snapshotFile);
  await box.mountExt4With(loop, directory, ['ro', 'noload']);
  try {
    return await treeChecksums(directory);
  } finally {
    await box.umount(directory);
    await box.detachLoop(loop);
  }
}

/**
 * ext4 on a loop device over the LUN file, mounted at data, the initial tree written and synced,
 * and its checksums.
 */
async function ext4WithFiles(
  box: Sandbox,
  lunFile: string,
  data: string,
): Promise<{ lunLoop: LoopDevice; atSnapshot: Record<string, string> }> {
  const lunLoop = await box.attachLoop(lunFile);
  await box.mkfsExt4(lunLoop);
  await box.mountExt4(lunLoop, data);
  await writeFiles(data, initialFiles);
  await runOk('sync', ['-f', data]);
  return { lunLoop, atSnapshot: await treeChecksums(data) };
}

describe('snapshots of a mounted ext4', () => {
  const sandbox = useSandbox('snap-ext4');

  it('a snapshot taken with touch control/snapshot/LUN@NAME holds the synced tree file by file; it is writable without touching the LUN', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 4, driveSize, raid: 1 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', `${lunSize / MiB}M`);
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const snapshotMount = box.path('snap');
    const lunFile = join(mountpoint, 'luns', 'db');
    const snapshotFile = join(mountpoint, 'snapshots', 'db@s1');

    const server = await box.mount(pool, mountpoint);
    const ext4 = await ext4WithFiles(box, lunFile, data);
    let lunLoop = ext4.lunLoop;
    const atSnapshot = ext4.atSnapshot;
    expect(Object.keys(atSnapshot)).toContain('tree/d3/f23.bin');

    await expect(stat(snapshotFile), 'no snapshot before the touch').rejects.toThrow(/ENOENT/);
    await runOk('touch', [join(mountpoint, 'control', 'snapshot', 'db@s1')]);
    expect((await stat(snapshotFile)).size, 'snapshot file size = LUN size at the snapshot').toBe(
      lunSize,
    );
    const listed = await snapshotList(pool);
    expect(
      listed.map((entry) => [entry.name, entry.lun, entry.snapshot, entry.state, entry.sizeBytes]),
    ).toEqual([['db@s1', 'db', 's1', 'valid', lunSize]]);

    await changeTree(data);
    await runOk('sync', ['-f', data]);
    const afterChange = await treeChecksums(data);
    expect(afterChange, 'the changes really changed the tree').not.toEqual(atSnapshot);
    for (const name of ['medium.bin', 'small.bin', 'will-change.bin'])
      expect(afterChange[name], `${name} changed`).not.toBe(atSnapshot[name]);

    // The snapshot, read-only: exactly the tree at the snapshot instant.
    expect(
      await snapshotTree(box, snapshotFile, snapshotMount),
      "the snapshot's ext4 (ro,noload), file by file, against the tree at the snapshot",
    ).toEqual(atSnapshot);
    // The live LUN: the new tree, and its ext4 checks clean once unmounted.
    expect(await treeChecksums(data), 'the live LUN after reading the snapshot').toEqual(
      afterChange,
    );
    await box.umount(data);
    await expectFsckClean(box, lunLoop, 'the LUN after the changes');
    await box.detachLoop(lunLoop);
    const lunBytes = await sha256File(lunFile);

    // The snapshot, writable: journal replay at mount, new data, clean unmount.
    const writableLoop = await box.attachLoop(snapshotFile);
    await box.mountExt4(writableLoop, snapshotMount);
    expect(
      await treeChecksums(snapshotMount),
      'the snapshot mounted read-write (journal replayed)',
    ).toEqual(atSnapshot);
    await writeFiles(snapshotMount, {
      'written-in-snapshot.bin': 6 * MiB,
      'dir/sub/snap-note.txt': 999,
    });
    await rm(join(snapshotMount, 'medium.bin'));
    await patchFile(join(snapshotMount, 'dir', 'large.bin'), 4 * MiB, 128 * 1024);
    await runOk('sync', ['-f', snapshotMount]);
    const snapshotWritten = await treeChecksums(snapshotMount);
    await box.umount(snapshotMount);
    await expectFsckClean(box, writableLoop, 'the snapshot after writing into it');
    await box.detachLoop(writableLoop);
    const usage = (await snapshotList(pool)).find((entry) => entry.name === 'db@s1')!;
    expect(usage.state).toBe('valid');
    expect(
      usage.exclusiveBytes,
      'the snapshot holds at least the 6 MiB file written into it',
    ).toBeGreaterThanOrEqual(6 * MiB);
    expect(usage.sharedBytes, 'a lone snapshot shares nothing').toBe(0);

    expect(
      await sha256File(lunFile),
      'the LUN, byte for byte, after writing into its snapshot',
    ).toBe(lunBytes);
    lunLoop = await box.attachLoop(lunFile);
    await expectFsckClean(box, lunLoop, 'the LUN after writing into its snapshot');
    await box.mountExt4(lunLoop, data);
    expect(await treeChecksums(data), "the LUN's tree after writing into its snapshot").toEqual(
      afterChange,
    );
    await box.umount(data); // mounting wrote to the LUN (mount count, times): take its sum again
    await box.detachLoop(lunLoop);
    const lunBytesAtStop = await sha256File(lunFile);

    // What was written into the snapshot stays there, also across a clean restart.
    await expectCleanStop(server);
    const second = await box.mount(pool, mountpoint);
    expect(
      await snapshotTree(box, snapshotFile, snapshotMount),
      'the written snapshot after a restart',
    ).toEqual(snapshotWritten);
    expect(await sha256File(lunFile), 'the LUN after a restart').toBe(lunBytesAtStop);
    await expectCleanStop(second);
  }, 240_000);

  it('after kill -9 and a mount in a new process the snapshot reads exactly as before; the LUN keeps its synced files', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 4, driveSize, raid: 0 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', `${lunSize / MiB}M`);
    await lunfsOk('lun', 'create', pool, 'raw', '--size', '16M');
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const snapshotMount = box.path('snap');
    const lunFile = join(mountpoint, 'luns', 'db');
    const rawFile = join(mountpoint, 'luns', 'raw');
    const snapshotFile = join(mountpoint, 'snapshots', 'db@s1');

    const first = await box.mount(pool, mountpoint);
    const ext4 = await ext4WithFiles(box, lunFile, data);
    let lunLoop = ext4.lunLoop;
    const atSnapshot = ext4.atSnapshot;

    // The ext4 LUN's snapshot, through the CLI and the control socket this time.
    const created = await lunfsOk('snapshot', pool, 'db@s1');
    expect(created.stdout).toMatch(/snapshot db@s1 created/);
    const snapshotBytes = await sha256File(snapshotFile);
    await changeTree(data);
    await runOk('sync', ['-f', data]);
    const afterChange = await treeChecksums(data);
    expect(afterChange).not.toEqual(atSnapshot);
    await writeFiles(data, { 'not-synced.bin': 4 * MiB }); // may or may not survive: not checked

    // A raw LUN, right before the kill: A fsync'ed; B only acknowledged (in the write-back cache)
    // when its snapshot is taken; C written after the snapshot and never flushed; then kill -9 at
    // once. The snapshot must hold B (its creation made B durable), the LUN B or C in every block.
    const patternA = randomBytes(16 * MiB);
    const patternB = randomBytes(16 * MiB);
    const patternC = randomBytes(16 * MiB);
    const raw = await open(rawFile, 'r+');
    await raw.write(patternA, 0, patternA.length, 0);
    await raw.datasync();
    await raw.write(patternB, 0, patternB.length, 0);
    await lunfsOk('snapshot', pool, 'raw@before-kill');
    const beforeKill = await snapshotList(pool);
    await raw.write(patternC, 0, patternC.length, 0);
    await first.kill();
    await raw.close().catch(() => undefined); // the FUSE connection is gone
    await box.umount(data, { lazy: true });
    await box.detachLoop(lunLoop);

    const second = await box.mount(pool, mountpoint);
    expect(second.pid).not.toBe(first.pid);
    const afterKill = await snapshotList(pool);
    // Byte counts may differ: a copy-on-write cut short by the kill is done again later.
    expect(afterKill.map(identity), 'snapshot list after kill -9').toEqual(
      beforeKill.map(identity),
    );
    expect(afterKill.map((entry) => entry.state)).toEqual(['valid', 'valid']);
    expect(await sha256File(snapshotFile), 'db@s1, byte for byte, after kill -9').toBe(
      snapshotBytes,
    );
    const rawSnapshot = await readFile(join(mountpoint, 'snapshots', 'raw@before-kill'));
    expect(
      rawSnapshot.equals(patternB),
      'raw@before-kill holds B, written without fsync right before the snapshot',
    ).toBe(true);
    const rawAfter = await readFile(rawFile);
    const badBlocks: number[] = [];
    for (let offset = 0; offset < rawAfter.length; offset += 4096) {
      const block = rawAfter.subarray(offset, offset + 4096);
      if (
        !block.equals(patternB.subarray(offset, offset + 4096)) &&
        !block.equals(patternC.subarray(offset, offset + 4096))
      )
        badBlocks.push(offset);
    }
    expect(
      badBlocks,
      'raw LUN 4 KiB blocks that are neither B (made durable by the snapshot) nor C (never flushed) after kill -9',
    ).toEqual([]);

    expect(
      await snapshotTree(box, snapshotFile, snapshotMount),
      "the snapshot's ext4 after kill -9, file by file",
    ).toEqual(atSnapshot);
    lunLoop = await box.attachLoop(lunFile);
    await box.mountExt4(lunLoop, data); // replays the LUN's journal
    const lunTree = await treeChecksums(data);
    delete lunTree['not-synced.bin'];
    expect(lunTree, "the LUN's synced tree after kill -9").toEqual(afterChange);
    await box.umount(data);
    await expectFsckClean(box, lunLoop, 'the LUN after kill -9 and journal replay');
    await box.detachLoop(lunLoop);
    // The snapshot's own journal replays too, and its ext4 then checks clean.
    const snapshotLoop = await box.attachLoop(snapshotFile);
    await box.mountExt4(snapshotLoop, snapshotMount);
    expect(
      await treeChecksums(snapshotMount),
      'the snapshot mounted read-write after kill -9',
    ).toEqual(atSnapshot);
    await box.umount(snapshotMount);
    await expectFsckClean(box, snapshotLoop, 'the snapshot after kill -9 and journal replay');
    await box.detachLoop(snapshotLoop);
    await expectCleanStop(second);
  }, 240_000);
});

describe('snapshot management and bad input', () => {
  const sandbox = useSandbox('snap-manage');

  /**
   * The pool as status --json reports it, less what the mount changes on its own: cache counters,
   * open counts, and the write intent (a commit in the background marks RStores idle for 5 s
   * clean, which also moves the journal).
   */
  async function poolState(pool: string): Promise<unknown> {
    const {
      cache: _cache,
      writeIntent: _writeIntent,
      metadata: _metadata,
      ...status
    } = await statusJson(pool);
    return {
      ...status,
      luns: status.luns.map(({ open: _open, ...rest }) => rest),
      snapshots: status.snapshots.map(({ open: _open, ...rest }) => rest),
    };
  }

  /** A refused command: exit code, a one-line `lunfs: ...` message, and no change to the pool. */
  async function expectRefused(
    pool: string,
    args: string[],
    exitCode: number,
    message: RegExp,
  ): Promise<void> {
    const before = await poolState(pool);
    const result = await lunfs(...args);
    expect(result.code, describeRun(result)).toBe(exitCode);
    expect(result.stderr, describeRun(result)).toMatch(/^lunfs: /);
    expect(result.stderr, describeRun(result)).toMatch(message);
    expect(result.stderr, 'no stack trace for bad input').not.toMatch(/\n\s+at /);
    expect(await poolState(pool), `pool changed by \`lunfs ${args.join(' ')}\``).toEqual(before);
  }

  /** Runs `action` (which checks its own failure) and checks that the pool did not change. */
  async function expectUnchanged(
    pool: string,
    what: string,
    action: () => Promise<void>,
  ): Promise<void> {
    const before = await poolState(pool);
    await action();
    expect(await poolState(pool), `pool changed by ${what}`).toEqual(before);
  }

  /**
   * A refused shell command on the mountpoint: non-zero exit, the errno's text, and no change to
   * the pool.
   */
  async function expectShellRefused(
    pool: string,
    command: string,
    args: string[],
    message: RegExp,
  ): Promise<void> {
    const before = await poolState(pool);
    const result = await run(command, args);
    expect(result.code, describeRun(result)).not.toBe(0);
    expect(result.stderr, describeRun(result)).toMatch(message);
    expect(await poolState(pool), `pool changed by \`${command} ${args.join(' ')}\``).toEqual(
      before,
    );
  }

  it('ls reports epochs, states and preserved bytes; rm and snapshot rm delete; deleting every snapshot frees what the snapshots took; bad input changes nothing', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 4, driveSize, raid: 1 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '256M');
    await lunfsOk('lun', 'create', pool, 'other', '--size', '64M');
    const mountpoint = box.path('mnt');
    const lunFile = join(mountpoint, 'luns', 'db');
    const server = await box.mount(pool, mountpoint);

    // 48 MiB of data: regions R1 = [0, 16M), R2 = [16M, 24M), R3 = [24M, 48M). MiB-aligned, so they
    // are whole copy-on-write chunks, and random, so no preserved chunk is all zeros.
    const initial = randomBytes(48 * MiB);
    const lun = await open(lunFile, 'r+');
    const overwrite = async (offset: number, length: number): Promise<void> => {
      await lun.write(randomBytes(length), 0, length, offset);
      await lun.datasync(); // destaged: the copy-on-write has happened
    };
    try {
      await lun.write(initial, 0, initial.length, 0);
      await lun.datasync();
      const freeBefore = (await statusJson(pool)).pool.freeBytes;
      expect((await lunfsOk('snapshot', 'ls', pool)).stdout).toMatch(/no snapshots/);

      const t0 = Date.now();
      await lunfsOk('snapshot', pool, 'db@s1');
      const t1 = Date.now();
      await overwrite(0, 16 * MiB); // R1 after s1: its originals are s1's alone
      await runOk('touch', [join(mountpoint, 'control', 'snapshot', 'db@s2')]);
      await overwrite(0, 16 * MiB); // R1 again after s2: the s1-era data of R1 is s2's alone
      await overwrite(16 * MiB, 8 * MiB); // R2 after both: one preserved copy shared by s1 and s2
      const reserved = await lunfsOk('snapshot', pool, 'db@s3', '--reserve');
      expect(reserved.stdout).toMatch(/space reserved/);
      const s3Content = await sha256File(lunFile);

      let list = await snapshotList(pool);
      expect(list.map((entry) => entry.name)).toEqual(['db@s1', 'db@s2', 'db@s3']);
      for (const entry of list) {
        expect(entry, entry.name).toMatchObject({
          lun: 'db',
          snapshot: entry.name.slice(3),
          sizeBytes: 256 * MiB,
          state: 'valid',
          open: 0,
        });
        expect(entry.invalidReason, entry.name).toBeUndefined();
      }
      expect(
        list.map((entry) => entry.epoch),
        'epochs rise with each snapshot',
      ).toEqual([...list.map((entry) => entry.epoch)].sort((a, b) => a - b));
      expect(new Set(list.map((entry) => entry.epoch)).size).toBe(3);
      const createdAt = Date.parse(list[0]!.createdAt);
      expect(
        createdAt,
        `s1 createdAt ${list[0]!.createdAt} within the command's run`,
      ).toBeGreaterThanOrEqual(t0 - 1000);
      expect(createdAt).toBeLessThanOrEqual(t1 + 1000);
      expect(
        list.map((entry) => [entry.name, entry.exclusiveBytes, entry.sharedBytes]),
        'exclusive and shared preserved bytes',
      ).toEqual([
        ['db@s1', 16 * MiB, 8 * MiB],
        ['db@s2', 16 * MiB, 8 * MiB],
        ['db@s3', 0, 0],
      ]);
      expect(list.map((entry) => [entry.name, entry.reserved, entry.reservedBytes])).toEqual([
        ['db@s1', false, 0],
        ['db@s2', false, 0],
        ['db@s3', true, 256 * MiB],
      ]);
      // status --json, control/status and the text listing agree.
      const status = await statusJson(pool);
      expect(status.snapshots).toEqual(list);
      expect(status.luns.find((entry) => entry.name === 'db')).toMatchObject({ snapshots: 3 });
      const controlStatus = JSON.parse(
        await readFile(join(mountpoint, 'control', 'status'), 'utf8'),
      ) as StatusJson;
      expect(controlStatus.snapshots).toEqual(list);
      const text = (await lunfsOk('snapshot', 'ls', pool)).stdout;
      for (const name of ['db@s1', 'db@s2', 'db@s3']) expect(text).toContain(name);

      // ---- bad input: each one refused, nothing changes
      await expectRefused(pool, ['snapshot', pool, 'nosuch@x'], 2, /nosuch/);
      await expectRefused(pool, ['snapshot', pool, 'db@s1'], 2, /db@s1.*exists|exists.*db@s1/);
      await expectRefused(pool, ['snapshot', pool, 'db@s2', '--reserve'], 2, /exists/);
      await expectRefused(pool, ['snapshot', pool, 'db'], 2, /LUN@NAME/);
      await expectRefused(pool, ['snapshot', pool, 'db@'], 2, /LUN@NAME/);
      await expectRefused(pool, ['snapshot', pool, 'db@bad name'], 2, /invalid snapshot name/);
      await expectRefused(pool, ['snapshot', 'rm', pool, 'db@nosuch'], 2, /nosuch/);
      await expectRefused(pool, ['snapshot', 'rm', pool, 'nosuch@s1'], 2, /nosuch/);
      await expectRefused(pool, ['lun', 'rm', pool, 'db'], 1, /snapshot/);
      await expectShellRefused(pool, 'rm', [lunFile], /Device or resource busy/);
      await expectShellRefused(
        pool,
        'touch',
        [join(mountpoint, 'control', 'snapshot', 'nosuch@x')],
        /No such file or directory/,
      );
      await expectShellRefused(
        pool,
        'rm',
        [join(mountpoint, 'snapshots', 'db@nosuch')],
        /No such file or directory/,
      );
      await expectShellRefused(
        pool,
        'rm',
        [join(mountpoint, 'snapshots', 'nosuch@s1')],
        /No such file or directory/,
      );
      const snapshotFile = join(mountpoint, 'snapshots', 'db@s3');
      const tailBefore = await readFile(snapshotFile).then((bytes) =>
        sha256(bytes.subarray(bytes.length - MiB)),
      );
      await expectShellRefused(
        pool,
        'dd',
        [
          'if=/dev/urandom',
          `of=${snapshotFile}`,
          'bs=1M',
          'count=1',
          `seek=${256}`,
          'conv=notrunc',
        ],
        /File too large/,
      );
      // Straddling the end in one request: refused whole (a longer write would be split by the
      // kernel into 128 KiB requests, and the ones inside the file would be written).
      await expectUnchanged(pool, 'an 8 KiB write across the end of db@s3', async () => {
        const handle = await open(snapshotFile, 'r+');
        try {
          await expect(handle.write(randomBytes(8192), 0, 8192, 256 * MiB - 4096)).rejects.toThrow(
            /EFBIG/,
          );
          await expect(handle.write(randomBytes(1), 0, 1, 256 * MiB)).rejects.toThrow(/EFBIG/);
        } finally {
          await handle.close();
        }
      });
      await expectShellRefused(pool, 'truncate', ['-s', '128M', snapshotFile], /Invalid argument/);
      await expectShellRefused(pool, 'truncate', ['-s', '512M', snapshotFile], /Invalid argument/);
      expect((await stat(snapshotFile)).size).toBe(256 * MiB);
      expect(
        await readFile(snapshotFile).then((bytes) => sha256(bytes.subarray(bytes.length - MiB))),
        'last MiB of db@s3 after the refused writes',
      ).toBe(tailBefore);
      expect(await sha256File(snapshotFile), 'db@s3 = the LUN at its instant').toBe(s3Content);
      // An open snapshot (a loop device holds it) cannot be deleted.
      const loop = await box.attachLoopReadOnly(snapshotFile);
      expect(
        (await snapshotList(pool)).find((entry) => entry.name === 'db@s3')!.open,
        'db@s3 open by the loop device',
      ).toBeGreaterThan(0);
      await expectRefused(pool, ['snapshot', 'rm', pool, 'db@s3'], 1, /open/);
      await expectShellRefused(pool, 'rm', [snapshotFile], /Device or resource busy/);
      await box.detachLoop(loop);

      // ---- deletion: rm of the file, and the CLI
      await runOk('rm', [join(mountpoint, 'snapshots', 'db@s1')]);
      list = await snapshotList(pool);
      expect(list.map((entry) => entry.name)).toEqual(['db@s2', 'db@s3']);
      await expect(stat(join(mountpoint, 'snapshots', 'db@s1'))).rejects.toThrow(/ENOENT/);
      expect((await lunfsOk('snapshot', 'rm', pool, 'db@s2')).stdout).toMatch(
        /snapshot db@s2 removed/,
      );
      expect((await snapshotList(pool)).map((entry) => entry.name)).toEqual(['db@s3']);
      await lunfsOk('snapshot', 'rm', pool, 'db@s3');
      expect(await snapshotList(pool)).toEqual([]);
      expect(
        (await statusJson(pool)).pool.freeBytes,
        'free space once every snapshot is deleted = before the first',
      ).toBe(freeBefore);
      expect((await statusJson(pool)).luns.find((entry) => entry.name === 'db')).toMatchObject({
        snapshots: 0,
      });
      // the LUN goes on without snapshots: nothing is preserved any more
      await overwrite(0, 48 * MiB);
      expect(
        (await statusJson(pool)).pool.freeBytes,
        'free space after writes with no snapshot left',
      ).toBe(freeBefore);
    } finally {
      await lun.close();
    }

    // ---- not mounted: the CLI opens the pool itself
    const lunContent = await sha256File(lunFile);
    await expectCleanStop(server);
    const offlineCreate = await lunfsOk('snapshot', pool, 'db@offline');
    expect(offlineCreate.stdout).toMatch(/snapshot db@offline created/);
    const offlineList = await snapshotList(pool);
    expect(offlineList.map((entry) => [entry.name, entry.state, entry.sizeBytes])).toEqual([
      ['db@offline', 'valid', 256 * MiB],
    ]);
    await expectRefused(pool, ['snapshot', pool, 'db@offline'], 2, /exists/);
    await expectRefused(pool, ['lun', 'rm', pool, 'db'], 1, /snapshot/);
    const again = await box.mount(pool, mountpoint);
    expect(
      await sha256File(join(mountpoint, 'snapshots', 'db@offline')),
      'a snapshot taken offline = the LUN',
    ).toBe(lunContent);
    await lunfsOk('snapshot', 'rm', pool, 'db@offline');
    await lunfsOk('lun', 'rm', pool, 'db'); // no snapshot left: the LUN can go
    expect((await statusJson(pool)).luns.map((entry) => entry.name)).toEqual(['other']);
    await expectCleanStop(again);
  }, 240_000);
});
