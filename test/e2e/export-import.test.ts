// Snap-point maps, export and import end to end (issue 16), no mocks: real `lunfs mount`
// processes, FUSE, loop devices and ext4. It proves:
//   1. ext4 on a LUN of a RAID-5 pool, exported as a full stream of snapshot db@s1 and an
//      incremental one of db@s2 --since s1 (to files, and through a pipe), imported into a LUN of
//      a RAID-1 pool (the first import with that pool not mounted, the next through its mount):
//      each imported state equals the source snapshot byte for byte, and its ext4 checks clean and
//      holds the source's files (sha256). A stream of the live LUN --since a snap-point map taken
//      before s1 applies on top of the imported s2 and reproduces the LUN; on a LUN that holds only
//      a state older than the map it is refused with the documented message;
//   2. a snap-point map survives kill -9 of the mount: after a remount it marks every 64 KiB grain
//      whose content differs from the LUN's content at the map's creation, synced or not, and
//      nothing the test did not write;
//   3. bad input is refused with exit code 2, one line, and nothing changed: a file that is not a
//      stream, an export of a missing snapshot or from a missing base, a full stream onto an
//      existing LUN, an incremental stream onto a LUN without its base or written since it.

import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SnapshotStatus } from '../../src/volume/controller.js';
import type { ExportHeader } from '../../src/volume/export-stream.js';
import {
  MiB,
  lunfs,
  lunfsBin,
  lunfsOk,
  run,
  runOk,
  sleep,
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
import { snapPointIntentBytes } from '../../src/volume/snap-points.js';

const driveSize = '256M';
const grainBytes = 64 * 1024;

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

async function writeFiles(root: string, files: Record<string, number>): Promise<void> {
  for (const [name, size] of Object.entries(files)) {
    await mkdir(join(root, name, '..'), { recursive: true });
    await writeRandomFile(join(root, name), size);
  }
}

/** The 64 KiB grains a byte range touches. */
function grainsOf(offsetBytes: number, lengthBytes: number): number[] {
  const found: number[] = [];
  const last = Math.floor((offsetBytes + lengthBytes - 1) / grainBytes);
  for (let grain = Math.floor(offsetBytes / grainBytes); grain <= last; grain += 1)
    found.push(grain);
  return found;
}

/**
 * A snapshot of the LUN under the ext4 at directory, taken while the file system is frozen
 * (fsfreeze flushes its journal and marks it clean), so that the snapshot checks clean.
 */
async function frozenSnapshot(directory: string, request: string): Promise<void> {
  await runOk('fsfreeze', ['-f', directory]);
  try {
    await runOk('touch', [request]);
  } finally {
    await runOk('fsfreeze', ['-u', directory]);
  }
}

async function expectFsckClean(box: Sandbox, loop: LoopDevice, what: string): Promise<void> {
  const result = await box.fsckExt4(loop);
  expect(result.code, `fsck.ext4 -fn of ${what}:\n${result.stdout}${result.stderr}`).toBe(0);
}

async function expectCleanStop(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
}

/** The header of a stream file (export-stream.ts: magic, version, JSON length, JSON). */
async function streamHeader(file: string): Promise<ExportHeader> {
  const bytes = await readFile(file);
  expect(bytes.toString('latin1', 0, 8)).toBe('LUNFSEXP');
  const jsonBytes = bytes.readUInt32LE(12);
  return JSON.parse(bytes.toString('utf8', 16, 16 + jsonBytes)) as ExportHeader;
}

/** The position of the last byte of the last data record's data in a stream. */
function lastDataByte(bytes: Buffer): number {
  let position = 16 + bytes.readUInt32LE(12) + 4;
  let last = -1;
  for (;;) {
    const kind = bytes.readUInt8(position);
    if (kind === 255) break;
    const length = bytes.readUInt32LE(position + 12);
    position += 20;
    if (kind === 1) {
      position += length;
      last = position - 1;
    }
  }
  expect(last, 'the stream holds a data record').toBeGreaterThan(0);
  return last;
}

/** `lunfs export ... -o - | lunfs import ... -`, both steps required to succeed. */
async function pipeExportImport(exportArgs: string[], importArgs: string[]): Promise<RunResult> {
  const quote = (args: string[]): string =>
    [process.execPath, lunfsBin, ...args].map((arg) => `'${arg}'`).join(' ');
  return runOk('bash', [
    '-c',
    `set -o pipefail; ${quote(['export', ...exportArgs, '-o', '-'])} | ${quote(['import', ...importArgs, '-'])}`,
  ]);
}

/** The tree of an ext4 image file, mounted read-only (losetup -r, ro,noload), fsck'ed first. */
async function imageTree(
  box: Sandbox,
  file: string,
  directory: string,
  what: string,
): Promise<Record<string, string>> {
  const loop = await box.attachLoopReadOnly(file);
  try {
    await expectFsckClean(box, loop, what);
    await box.mountExt4With(loop, directory, ['ro', 'noload']);
    try {
      return await treeChecksums(directory);
    } finally {
      await box.umount(directory);
    }
  } finally {
    await box.detachLoop(loop);
  }
}

describe('export and import through real mounts', () => {
  const sandbox = useSandbox('export-import');

  it('a RAID-5 LUN holding ext4 goes to a RAID-1 pool: full, incremental, piped and --since a snap-point map', async () => {
    const box = sandbox();
    const poolA = await box.createPool('A', { drives: 3, driveSize, raid: 5 });
    const poolB = await box.createPool('B', { drives: 2, driveSize, raid: 1 });
    await lunfsOk('lun', 'create', poolA, 'db', '--size', '128M');
    const mountA = box.path('mntA');
    const mountB = box.path('mntB');
    const data = box.path('data');
    const check = box.path('check');
    const streams = await box.mkdir('streams');
    const stream = (name: string): string => join(streams, name);
    const serverA = await box.mount(poolA, mountA);

    // ---- db: ext4 and files, snapshot s0, then map p, then snapshot s1
    const lunLoop = await box.attachLoop(join(mountA, 'luns', 'db'));
    await box.mkfsExt4(lunLoop);
    await box.mountExt4(lunLoop, data);
    await writeFiles(data, {
      'a.bin': 3 * MiB + 17,
      'dir/b.bin': 700 * 1024,
      'dir/sub/c.txt': 4097,
      'will-change.bin': 2 * MiB,
      'will-delete.bin': MiB,
      'empty.bin': 0,
    });
    await runOk('sync', ['-f', data]);
    await frozenSnapshot(data, join(mountA, 'control', 'snapshot', 'db@s0'));
    await runOk('touch', [join(mountA, 'control', 'snappoint', 'db@p')]);
    expect(await readdir(join(mountA, 'control', 'snappoint'))).toContain('db@p');
    expect((await lunfsOk('snappoint', 'ls', poolA)).stdout).toMatch(/^db@p {2}created .*grain/m);
    await writeFiles(data, { 'after-p.bin': MiB });
    await runOk('sync', ['-f', data]);
    await frozenSnapshot(data, join(mountA, 'control', 'snapshot', 'db@s1'));
    const treeS1 = await treeChecksums(data);
    await lunfsOk('export', poolA, 'db@s0', '-o', stream('f0'));
    const exported = await lunfsOk('export', poolA, 'db@s1', '-o', stream('f1'));
    expect(exported.stderr).toMatch(/^exported db@s1 \(full\): \d+ records/);
    expect(await streamHeader(stream('f1'))).toMatchObject({ snapshot: 's1', from: null });

    // ---- more files, one changed, one deleted; snapshot s2; the increment since s1
    await writeFiles(data, { 'new/d.bin': 5 * MiB, 'will-change.bin': 2 * MiB });
    await rm(join(data, 'will-delete.bin'));
    await runOk('sync', ['-f', data]);
    await frozenSnapshot(data, join(mountA, 'control', 'snapshot', 'db@s2'));
    const treeS2 = await treeChecksums(data);
    expect(treeS2).not.toEqual(treeS1);
    const incremental = await lunfsOk(
      'export',
      poolA,
      'db@s2',
      '--since',
      's1',
      '-o',
      stream('f2'),
    );
    expect(incremental.stderr).toMatch(/^exported db@s2 since db@s1: /);
    const f2Header = await streamHeader(stream('f2'));
    expect(f2Header.from).toMatchObject({ kind: 'snapshot', guid: expect.any(String) });
    // an increment holds about the 7 MiB written, not the volume
    expect((await stat(stream('f2'))).size).toBeLessThan((await stat(stream('f1'))).size);

    // ---- pool B not mounted: the full streams; then mounted: the increment, and both piped
    const made = await lunfsOk('import', poolB, 'copy', stream('f1'));
    expect(made.stdout).toMatch(/^LUN copy made from the stream: .*snapshot copy@s1\n$/);
    await lunfsOk('import', poolB, 'early', stream('f0'));
    const serverB = await box.mount(poolB, mountB);
    const updated = await lunfsOk('import', poolB, 'copy', stream('f2'));
    expect(updated.stdout).toMatch(/^LUN copy updated from the stream: .*snapshot copy@s2\n$/);
    await pipeExportImport([poolA, 'db@s1'], [poolB, 'piped']);
    await pipeExportImport([poolA, 'db@s2', '--since', 's1'], [poolB, 'piped']);

    // ---- every imported state equals its source byte for byte; ext4 clean, same files
    const sourceS1 = await sha256File(join(mountA, 'snapshots', 'db@s1'));
    const sourceS2 = await sha256File(join(mountA, 'snapshots', 'db@s2'));
    expect(sourceS1).not.toBe(sourceS2);
    expect(await sha256File(join(mountB, 'snapshots', 'copy@s1')), 'copy@s1').toBe(sourceS1);
    expect(await sha256File(join(mountB, 'snapshots', 'copy@s2')), 'copy@s2').toBe(sourceS2);
    expect(await sha256File(join(mountB, 'luns', 'copy')), 'luns/copy').toBe(sourceS2);
    expect(await sha256File(join(mountB, 'luns', 'piped')), 'luns/piped').toBe(sourceS2);
    expect(await imageTree(box, join(mountB, 'luns', 'copy'), check, 'copy at s2')).toEqual(treeS2);
    expect(await imageTree(box, join(mountB, 'snapshots', 'copy@s1'), check, 'copy@s1')).toEqual(
      treeS1,
    );

    // ---- the live LUN --since map p (taken after s0, before s1): it needs an imported state of
    // db later than the map (volume-export.ts), so it applies on copy (at s2), not on early (s0)
    await writeFiles(data, { 'live/e.bin': 3 * MiB });
    await rm(join(data, 'a.bin'));
    await box.umount(data);
    await box.detachLoop(lunLoop);
    const liveBytes = await sha256File(join(mountA, 'luns', 'db'));
    const live = await lunfsOk('export', poolA, 'db', '--since', 'p', '-o', stream('f3'));
    expect(live.stderr).toMatch(/^exported db since db@p: /);
    expect((await streamHeader(stream('f3'))).from).toMatchObject({
      kind: 'snap-point',
      name: 'p',
    });
    const earlyBytes = await sha256File(join(mountB, 'luns', 'early'));
    const refused = await lunfs('import', poolB, 'early', stream('f3'));
    expect(refused.code, describeRun(refused)).toBe(2);
    expect(refused.stderr).toMatch(
      /^lunfs: LUN 'early' holds no snapshot imported from a state of the source LUN taken after snap-point map p was started[^\n]*\n$/,
    );
    expect(await sha256File(join(mountB, 'luns', 'early')), 'early unchanged').toBe(earlyBytes);
    const applied = await lunfsOk('import', poolB, 'copy', stream('f3'));
    expect(applied.stdout).toMatch(/^LUN copy updated from the stream: .*snapshot copy@at-\d+T/);
    expect(await sha256File(join(mountB, 'luns', 'copy')), 'copy after f3 = live db').toBe(
      liveBytes,
    );
    const copyTree = await imageTree(box, join(mountB, 'luns', 'copy'), check, 'copy after f3');
    expect(copyTree['live/e.bin']).toBeDefined();
    expect(copyTree['a.bin']).toBeUndefined();
    const names = (await statusJson(poolB)).snapshots.map((entry) => entry.name);
    expect(names).toEqual(expect.arrayContaining(['copy@s1', 'copy@s2', 'early@s0']));
    expect(names.filter((name) => name.startsWith('copy@at-'))).toHaveLength(1);

    await expectCleanStop(serverB);
    await expectCleanStop(serverA);
  }, 180_000);

  it('a snap-point map marks every grain changed, synced or not, after kill -9 and a remount', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 3, driveSize: '128M', raid: 5 });
    const lunBytes = 64 * MiB;
    await lunfsOk('lun', 'create', pool, 'raw', '--size', '64M');
    const mountpoint = box.path('mnt');
    const lunFile = join(mountpoint, 'luns', 'raw');
    const first = await box.mount(pool, mountpoint);

    // some data before the map, which the map must not mark
    const before = await open(lunFile, 'r+');
    await before.write(randomBytes(8 * MiB), 0, 8 * MiB, 4 * MiB);
    await before.sync();
    await before.close();
    await lunfsOk('snappoint', 'create', pool, 'raw@p');
    const atCreation = await readFile(lunFile);
    expect((await lunfsOk('snappoint', 'ls', pool, 'raw@p')).stdout, 'empty at creation').toBe('');

    // writes through a loop device, O_DIRECT, at known offsets (some across grain edges)
    const loop = await box.attachLoop(lunFile);
    const dd = async (offsetBytes: number, countBlocks: number, fsync: boolean): Promise<void> => {
      await runOk('dd', [
        'if=/dev/urandom',
        `of=${loop.device}`,
        'bs=4096',
        `seek=${offsetBytes / 4096}`,
        `count=${countBlocks}`,
        'oflag=direct',
        ...(fsync ? ['conv=fsync,notrunc'] : ['conv=notrunc']),
      ]);
    };
    const synced: Array<[number, number]> = [
      [5 * grainBytes + 8192, 1], // inside one grain
      [10 * MiB + 12 * 1024, 256], // 1 MiB across 17 grains
      [6 * MiB - 4096, 2], // across a grain edge, over the data written before the map
      [lunBytes - 4096, 1], // the last block
    ];
    // not synced: destaged by age (the cache's 1 s expiry) before the kill, or lost with it
    const aged: Array<[number, number]> = [[40 * MiB, 64]];
    const fresh: Array<[number, number]> = [[50 * MiB + 4096, 1]];
    const unsynced = [...aged, ...fresh];
    for (const [offset, count] of synced) await dd(offset, count, true);
    await runOk('sync', []);
    for (const [offset, count] of aged) await dd(offset, count, false);
    await sleep(1500);
    for (const [offset, count] of fresh) await dd(offset, count, false);
    await first.kill();
    await box.detachLoop(loop);

    const second = await box.mount(pool, mountpoint);
    const after = await readFile(lunFile);
    const extents = (await lunfsOk('snappoint', 'ls', pool, 'raw@p')).stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(' ').map(Number) as [number, number]);
    const marked = new Set<number>();
    for (const [offset, length] of extents) {
      expect(offset % grainBytes, `extent ${offset} ${length} on grain edges`).toBe(0);
      for (let grain = offset / grainBytes; grain * grainBytes < offset + length; grain += 1)
        marked.add(grain);
    }
    const written = new Set<number>();
    for (const [offset, count] of [...synced, ...unsynced])
      for (const grain of grainsOf(offset, count * 4096)) written.add(grain);
    const changed: number[] = [];
    for (let grain = 0; grain < lunBytes / grainBytes; grain += 1) {
      const range = [grain * grainBytes, (grain + 1) * grainBytes] as const;
      if (!after.subarray(...range).equals(atCreation.subarray(...range))) changed.push(grain);
    }
    console.info(
      `snap-point after kill -9: ${changed.length} grains changed, ${marked.size} marked, ${written.size} written`,
    );
    // every synced write is there after the kill, so the test cannot pass on an empty map
    for (const [offset, count] of synced)
      for (const grain of grainsOf(offset, count * 4096))
        expect(changed, `synced write at ${offset}: grain ${grain} after kill -9`).toContain(grain);
    for (const grain of changed) expect(marked.has(grain), `grain ${grain} changed`).toBe(true);
    // More is allowed after a crash, but only where the map's intents (snap-point-intents.ts)
    // were: a region of 1/256 of the LUN (256 KiB here) holding a grain written.
    const regionGrains = snapPointIntentBytes(lunBytes) / grainBytes;
    expect(regionGrains).toBe(4);
    const writtenRegions = new Set([...written].map((grain) => Math.floor(grain / regionGrains)));
    for (const grain of marked)
      expect(
        writtenRegions.has(Math.floor(grain / regionGrains)),
        `grain ${grain} in no region written`,
      ).toBe(true);
    const listed = JSON.parse((await lunfsOk('snappoint', 'ls', pool, '--json')).stdout) as Array<{
      name: string;
      changedBytes: number;
    }>;
    expect(listed).toMatchObject([{ name: 'raw@p', changedBytes: marked.size * grainBytes }]);
    await expectCleanStop(second);
  }, 180_000);

  it('bad input is refused with one line and exit code 2, and changes nothing', async () => {
    const box = sandbox();
    const poolA = await box.createPool('A', { drives: 3, driveSize: '128M', raid: 5 });
    const poolB = await box.createPool('B', { drives: 2, driveSize: '128M', raid: 1 });
    await lunfsOk('lun', 'create', poolA, 'db', '--size', '32M');
    const mountA = box.path('mntA');
    const mountB = box.path('mntB');
    const streams = await box.mkdir('streams');
    const stream = (name: string): string => join(streams, name);
    const serverA = await box.mount(poolA, mountA);
    const serverB = await box.mount(poolB, mountB);
    const writeAt = async (file: string, offsetBytes: number, length: number): Promise<void> => {
      const handle = await open(file, 'r+');
      await handle.write(randomBytes(length), 0, length, offsetBytes);
      await handle.sync();
      await handle.close();
    };
    const dbFile = join(mountA, 'luns', 'db');
    await writeAt(dbFile, 0, 4 * MiB);
    await lunfsOk('snapshot', poolA, 'db@s1');
    await writeAt(dbFile, 8 * MiB, MiB);
    await lunfsOk('snapshot', poolA, 'db@s2');
    await lunfsOk('export', poolA, 'db@s1', '-o', stream('f1'));
    await lunfsOk('export', poolA, 'db@s2', '--since', 'db@s1', '-o', stream('f2'));

    const stateB = async (): Promise<unknown> => {
      const status = await statusJson(poolB);
      return {
        luns: status.luns.map((lun) => [lun.name, lun.sizeBytes]),
        snapshots: status.snapshots.map((entry: SnapshotStatus) => entry.name),
      };
    };
    const expectRefused = async (
      args: string[],
      message: RegExp,
      state: () => Promise<unknown> = stateB,
    ): Promise<void> => {
      const before = await state();
      const result = await lunfs(...args);
      expect(result.code, describeRun(result)).toBe(2);
      expect(result.stderr, describeRun(result)).toMatch(/^lunfs: [^\n]*\n$/);
      expect(result.stderr, describeRun(result)).toMatch(message);
      expect(await state(), `changed by lunfs ${args.join(' ')}`).toEqual(before);
    };

    // ---- not a stream; an incremental stream before its base; then the base
    await expectRefused(
      ['import', poolB, 'copy2', '/etc/hostname'],
      /^lunfs: not a valid lunfs export stream: it does not start with LUNFSEXP\n$/,
    );
    await expectRefused(
      ['import', poolB, 'copy', stream('f2')],
      /no LUN 'copy': an incremental stream applies to the LUN that holds its base/,
    );
    await lunfsOk('import', poolB, 'copy', stream('f1'));
    await expectRefused(['import', poolB, 'copy', stream('f1')], /LUN 'copy' exists/);
    await lunfsOk('import', poolB, 'other', stream('f1'));
    await lunfsOk('snapshot', 'rm', poolB, 'other@s1');
    await expectRefused(
      ['import', poolB, 'other', stream('f2')],
      /LUN 'other' holds no snapshot imported from the stream's base/,
    );
    expect((await stateB()) as { luns: unknown[] }).toMatchObject({
      luns: [
        ['copy', 32 * MiB],
        ['other', 32 * MiB],
      ],
    });

    // ---- exports of what is not there: no stream file left behind
    const stateA = async (): Promise<unknown> =>
      (await statusJson(poolA)).snapshots.map((entry: SnapshotStatus) => entry.name);
    await expectRefused(
      ['export', poolA, 'db@nosuch', '-o', stream('x')],
      /^lunfs: LUN 'db' has no snapshot named 'nosuch'\n$/,
      stateA,
    );
    await expectRefused(
      ['export', poolA, 'db@s2', '--since', 'nosuch', '-o', stream('x')],
      /LUN 'db' has no snapshot and no snap-point map named 'nosuch' \(--since\)/,
      stateA,
    );
    await expectRefused(['export', poolA, 'nosuch', '-o', stream('x')], /nosuch/, stateA);
    await expect(stat(stream('x')), 'no stream file').rejects.toThrow(/ENOENT/);
    // an existing file is not overwritten; a device is written (no fsync on it)
    const before = await sha256File(stream('f1'));
    await expectRefused(
      ['export', poolA, 'db@s1', '-o', stream('f1')],
      /f1 exists: give a new/,
      stateA,
    );
    expect(await sha256File(stream('f1')), 'f1 untouched').toBe(before);
    await lunfsOk('export', poolA, 'db@s1', '-o', '/dev/null');

    // ---- a stream faulty part-way is undone through the mount: a cut full stream leaves no
    // LUN; a bad checksum in the last data record of an increment puts copy back at its base
    const cut = await run('bash', [
      '-c',
      `head -c ${(await stat(stream('f1'))).size - 5000} '${stream('f1')}' | '${process.execPath}' '${lunfsBin}' import '${poolB}' cut -`,
    ]);
    expect(cut.code, describeRun(cut)).toBe(2);
    expect(cut.stderr).toMatch(
      /^lunfs: import stopped: not a valid lunfs export stream: .*; LUN 'cut' was removed\n$/,
    );
    const flipped = await readFile(stream('f2'));
    flipped[lastDataByte(flipped)] ^= 0x40;
    await writeFile(stream('f2-flipped'), flipped);
    const copyBefore = await sha256File(join(mountB, 'luns', 'copy'));
    await expectRefused(
      ['import', poolB, 'copy', stream('f2-flipped')],
      /^lunfs: import stopped: not a valid lunfs export stream: the data at \d+ \(\d+ bytes\) fails its checksum; LUN 'copy' is back at its base\n$/,
    );
    expect(await sha256File(join(mountB, 'luns', 'copy')), 'copy back at its base').toBe(
      copyBefore,
    );

    // ---- the LUN written since its base: refused, not a byte changed; rolled back, it applies
    const copyFile = join(mountB, 'luns', 'copy');
    await writeAt(copyFile, 20 * MiB, 4096);
    const written = await sha256File(copyFile);
    await expectRefused(
      ['import', poolB, 'copy', stream('f2')],
      /LUN 'copy' does not hold the stream's base: copy@s1: the LUN was written since/,
    );
    expect(await sha256File(copyFile), 'copy after the refused import').toBe(written);
    await lunfsOk('snapshot', 'rollback', poolB, 'copy@s1');
    await lunfsOk('import', poolB, 'copy', stream('f2'));
    expect(await sha256File(copyFile)).toBe(await sha256File(join(mountA, 'snapshots', 'db@s2')));

    await expectCleanStop(serverB);
    await expectCleanStop(serverA);
  }, 180_000);
});
