// End to end, no mocks: discards from a file system reach the pool (issue 12). ext4 on a loop
// device over a LUN served by the native front (fuse-native has no fallocate, so a discard never
// reaches lunfs there). It proves:
//   1. 512 MiB of files written and synced, then deleted, then `fstrim`: the LUN's allocated
//      space, as `lunfs status` reports it, drops by at least 90% of those 512 MiB (the loop
//      device turns each discard into a punch-hole fallocate on the LUN file);
//   2. a snapshot taken before the delete still reads every file exactly afterwards (sha256): a
//      discard over a chunk a snapshot needs preserves the original first, as a write does;
//   3. `blkdiscard -o X -l Y` on the loop device reads back as zeros there, and the bytes around
//      the range are unchanged.

import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MiB,
  lunfsOk,
  run,
  runOk,
  sha256,
  sha256File,
  statusJson,
  useSandbox,
  writeRandomFile,
} from './support.js';

async function allocatedBytes(pool: string, lun: string): Promise<number> {
  return (await statusJson(pool)).luns.find((entry) => entry.name === lun)!.allocatedBytes;
}

async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, offset);
    return buffer;
  } finally {
    await handle.close();
  }
}

describe('discard from ext4 through the native front', () => {
  const sandbox = useSandbox('discard');

  it('fstrim gives the space of deleted files back; a snapshot taken before keeps them; blkdiscard reads zeros', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 2, driveSize: '800M', raid: 0 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '640M');
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const snapshotData = box.path('snap');
    const server = await box.mount(pool, mountpoint, ['--front', 'native']);
    const lunFile = join(mountpoint, 'luns', 'db');

    // ---- 512 MiB of files, synced; the snapshot is taken with the file system unmounted
    // (quiesced)
    let loop = await box.attachLoop(lunFile);
    await box.mkfsExt4(loop);
    await box.mountExt4(loop, data);
    const sums = new Map<string, string>();
    for (let index = 0; index < 8; index += 1)
      sums.set(`f${index}.bin`, await writeRandomFile(join(data, `f${index}.bin`), 64 * MiB));
    await runOk('sync', ['-f', join(data, 'f0.bin')]);
    await box.umount(data);
    const filled = await allocatedBytes(pool, 'db');
    expect(filled, 'the LUN holds the 512 MiB written').toBeGreaterThanOrEqual(512 * MiB);
    await lunfsOk('snapshot', 'create', pool, 'db@before');

    // ---- delete every file, fstrim: the LUN gives the space back
    await box.mountExt4(loop, data);
    for (const name of sums.keys()) await runOk('rm', [join(data, name)]);
    await runOk('sync', ['-f', data]);
    const trim = await runOk('fstrim', ['-v', data], { timeoutMs: 120_000 });
    const trimmed = await allocatedBytes(pool, 'db');
    console.log(
      `fstrim: LUN allocated ${filled} bytes before, ${trimmed} after: ${(((filled - trimmed) / (512 * MiB)) * 100).toFixed(1)}% of the 512 MiB deleted given back (${trim.stdout.trim()})`,
    );
    expect(
      filled - trimmed,
      `space freed by fstrim (allocated ${filled} before, ${trimmed} after; ${trim.stdout.trim()})`,
    ).toBeGreaterThanOrEqual(0.9 * 512 * MiB);
    await box.umount(data);

    // ---- the snapshot taken before the delete reads every file exactly
    const snapshotLoop = await box.attachLoopReadOnly(join(mountpoint, 'snapshots', 'db@before'));
    await box.mountExt4With(snapshotLoop, snapshotData, ['ro', 'noload']);
    for (const [name, sum] of sums)
      expect(await sha256File(join(snapshotData, name)), `${name} in the snapshot`).toBe(sum);
    await box.umount(snapshotData);
    await box.detachLoop(snapshotLoop);

    // ---- blkdiscard of 8 MiB on the loop device: zeros there, the neighbours unchanged
    await box.detachLoop(loop);
    await runOk('dd', [
      'if=/dev/urandom',
      `of=${lunFile}`,
      'bs=1M',
      'seek=100',
      'count=32',
      'oflag=direct',
      'conv=notrunc,fsync',
      'status=none',
    ]);
    const before = await readAt(lunFile, 100 * MiB, 32 * MiB);
    loop = await box.attachLoop(lunFile);
    await runOk('blkdiscard', [
      '-o',
      String(110 * MiB + 64 * 1024),
      '-l',
      String(8 * MiB),
      loop.device,
    ]);
    const zeros = await run('cmp', [
      '-n',
      String(8 * MiB),
      '-i',
      `${110 * MiB + 64 * 1024}:0`,
      loop.device,
      '/dev/zero',
    ]);
    expect(
      zeros.code,
      `the discarded range reads as zeros through the loop device: ${zeros.stdout}${zeros.stderr}`,
    ).toBe(0);
    await box.detachLoop(loop);
    const after = await readAt(lunFile, 100 * MiB, 32 * MiB);
    const start = 10 * MiB + 64 * 1024;
    expect(
      after.subarray(start, start + 8 * MiB).equals(Buffer.alloc(8 * MiB)),
      'the range reads as zeros through the LUN file',
    ).toBe(true);
    expect(sha256(after.subarray(0, start)), 'the bytes before the range').toBe(
      sha256(before.subarray(0, start)),
    );
    expect(sha256(after.subarray(start + 8 * MiB)), 'the bytes after the range').toBe(
      sha256(before.subarray(start + 8 * MiB)),
    );

    const exit = await server.stop();
    expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
  }, 300_000);
});
