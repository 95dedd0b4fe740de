// Issue 11 end to end, no mocks: real `lunfs mount` processes and FUSE, a pool of sparse file
// drives in the sandbox's tmp directory. The report: a RAID-5 pool of four drives, 128 MiB written
// and synced, cleanly unmounted, one drive file damaged (random bytes in one 512-byte sector of
// every MiB, the first MiB included) was refused whole ("drive header checksum mismatch"). It
// proves:
//   1. the same damage (the drive's head label among it, its tail label spared): the pool mounts
//      with every drive in service, the head label rewritten from the tail one (status counts it),
//      and the LUN and its snapshot read back byte for byte (sha256), the damaged data blocks
//      rebuilt from redundancy (repairs counted, nothing unrepairable);
//   2. the damage again, now with both labels of the drive hit: it mounts degraded, status names
//      the drive and why, every byte reads back; `lunfs drive replace` rebuilds onto a new file,
//      status is online and clean, and after a stop and a new mount too.

import { randomBytes } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tailLabelOffsetBytes } from '../../src/meta/drive-header.js';
import { MiB, lunfsOk, sha256File, statusJson, useSandbox, type MountServer } from './support.js';

const sandbox = useSandbox('labels');

function driveFile(pool: string, index: number): string {
  return join(pool, `drive-${index}.img`);
}

/**
 * Random bytes into one 512-byte sector of every MiB of the file (sector 0 of the first MiB),
 * durably; the tail label too if asked.
 */
async function damageEveryMiB(file: string, options: { tailLabel: boolean }): Promise<number> {
  const sizeBytes = (await stat(file)).size;
  const tail = tailLabelOffsetBytes(sizeBytes);
  const handle = await open(file, 'r+');
  let sectors = 0;
  try {
    for (let mib = 0; mib * MiB < sizeBytes; mib += 1) {
      let offset = mib * MiB + (mib === 0 ? 0 : randomBytes(2).readUInt16LE(0) % 2048) * 512;
      if (offset >= tail) offset = options.tailLabel ? tail + 512 : tail - 512;
      await handle.write(randomBytes(512), 0, 512, offset);
      sectors += 1;
    }
    // the tail label itself, whatever the last MiB drew
    if (options.tailLabel) await handle.write(randomBytes(512), 0, 512, tail);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  return sectors;
}

async function writeSynced(file: string, data: Buffer): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.write(data, 0, data.length, 0);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

async function stopCleanly(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
}

describe('a damaged drive file does not take a RAID-5 pool down (issue 11)', () => {
  it('one sector of every MiB damaged: mounts, reads every byte; with both labels gone: degraded, replaced, clean', async () => {
    const box = sandbox();
    const pool = box.path('pool');
    await lunfsOk('pool', 'create', pool, '--drives', '4', '--drive-size', '128M', '--raid', '5');
    await lunfsOk('lun', 'create', pool, 'db', '--size', '160M');
    const mountpoint = box.path('mnt');
    const lunFile = join(mountpoint, 'luns', 'db');
    const snapshotFile = join(mountpoint, 'snapshots', 'db@before');
    let server = await box.mount(pool, mountpoint);
    await writeSynced(lunFile, randomBytes(128 * MiB));
    await lunfsOk('snapshot', 'create', pool, 'db@before');
    const snapshotSum = await sha256File(snapshotFile);
    // the LUN moves on: the snapshot keeps the old bytes
    await writeSynced(lunFile, randomBytes(16 * MiB));
    const lunSum = await sha256File(lunFile);
    await stopCleanly(server);

    // ---- 1. the report's damage, the tail label spared
    const sectors = await damageEveryMiB(driveFile(pool, 1), { tailLabel: false });
    expect(sectors).toBe(128);
    server = await box.mount(pool, mountpoint);
    let status = await statusJson(pool);
    expect(status.pool.state).toBe('online');
    expect(status.drives[1]!.labelsDamagedAtOpen, JSON.stringify(status.drives[1])).toEqual([
      expect.stringMatching(/^head: /),
    ]);
    expect(status.integrity.labelRepairs).toBe(1);
    expect(await sha256File(lunFile), 'the LUN, every byte').toBe(lunSum);
    expect(await sha256File(snapshotFile), 'the snapshot, every byte').toBe(snapshotSum);
    status = await statusJson(pool);
    expect(status.integrity.repairs, JSON.stringify(status.integrity)).toBeGreaterThan(0);
    expect(status.integrity.unrepairable, JSON.stringify(status.integrity)).toBe(0);
    await stopCleanly(server);

    // ---- 2. again, both labels hit: the drive is failed, the pool mounts degraded
    await damageEveryMiB(driveFile(pool, 1), { tailLabel: true });
    server = await box.mount(pool, mountpoint);
    status = await statusJson(pool);
    expect(status.pool.state).toBe('degraded');
    expect(status.drives[1], JSON.stringify(status.drives[1])).toMatchObject({
      state: 'failed',
      io: 'missing',
      failedReason: expect.stringMatching(
        /unusable when the pool was opened: no good lunfs label \(head: .*; tail: .*\)/,
      ),
    });
    const text = (await lunfsOk('status', pool)).stdout;
    expect(text).toContain(driveFile(pool, 1));
    expect(text).toMatch(/no good lunfs label/);
    expect(await sha256File(lunFile), 'the LUN, degraded').toBe(lunSum);
    expect(await sha256File(snapshotFile), 'the snapshot, degraded').toBe(snapshotSum);
    const newDrive = join(pool, 'drive-1-new.img');
    await lunfsOk('drive', 'replace', pool, '1', newDrive);
    status = await statusJson(pool);
    expect(status.pool.state).toBe('online');
    expect(status.drives[1]).toMatchObject({ state: 'online', path: newDrive, labelCopies: 2 });
    expect(await sha256File(lunFile), 'the LUN, rebuilt').toBe(lunSum);
    await stopCleanly(server);

    server = await box.mount(pool, mountpoint);
    status = await statusJson(pool);
    expect(status.pool.state).toBe('online');
    expect(status.drives.map((drive) => [drive.state, drive.labelsDamagedAtOpen])).toEqual([
      ['online', undefined],
      ['online', undefined],
      ['online', undefined],
      ['online', undefined],
    ]);
    expect(
      status.drives.filter((drive) => drive.holdsMetadataCopy).map((drive) => drive.metadataCopy),
    ).toEqual(['good', 'good', 'good']);
    expect(await sha256File(lunFile), 'the LUN, after a new mount').toBe(lunSum);
    expect(await sha256File(snapshotFile), 'the snapshot, after a new mount').toBe(snapshotSum);
    await stopCleanly(server);
  }, 300_000);
});
