// A pool written by an older build opens in this one, with everything it held. The fixture
// (test/fixtures/format5-raid5-pool.tar.xz, 20 KiB) is a format-5 pool made by lunfs at 0eda693:
// RAID-5 on three sparse 48 MiB drives, 1 MiB PSEGs and allocation units, LUN db of 4 MiB. Its
// metadata spells the RStore fields the old way (nextRstoreId) and its snapshot records name
// their LUN as predecessorId. It was made by: 4 MiB written (each 4 KiB block filled with
// u32 (block * 2654435761)), fsync, snapshot db@s1, the first 1 MiB overwritten (0x5a, each
// block starting with its offset), fsync, snapshot db@s2, then kill -9 of the mount. So it also
// holds journal records not yet in a checkpoint, and opening it runs crash recovery.

import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MiB, lunfsOk, repoRoot, runOk, sha256, statusJson, useSandbox } from './support.js';

const fixture = join(repoRoot, 'test', 'fixtures', 'format5-raid5-pool.tar.xz');

/** The LUN's content at each instant, rebuilt the way the fixture was written. */
function expectedContents(): { s1: Buffer; s2: Buffer } {
  const s1 = Buffer.alloc(4 * MiB);
  for (let offset = 0; offset < s1.length; offset += 4) {
    s1.writeUInt32LE(Math.imul(offset >> 12, 2654435761) >>> 0, offset);
  }
  const s2 = Buffer.from(s1);
  s2.fill(0x5a, 0, MiB);
  for (let offset = 0; offset < MiB; offset += 4096) s2.writeUInt32LE(offset, offset);
  return { s1, s2 };
}

describe('a format-5 pool', () => {
  const sandbox = useSandbox('old-format');

  it('opens after its crash with LUN and snapshots exact, in the new field names', async () => {
    const box = sandbox();
    await runOk('tar', ['-xJf', fixture, '-C', box.root]);
    const pool = box.path('pool');
    const { s1, s2 } = expectedContents();

    const mountpoint = box.path('mnt');
    let server = await box.mount(pool, mountpoint);
    expect(sha256(await readFile(join(mountpoint, 'luns', 'db')))).toBe(sha256(s2));
    expect(sha256(await readFile(join(mountpoint, 'snapshots', 'db@s1')))).toBe(sha256(s1));
    expect(sha256(await readFile(join(mountpoint, 'snapshots', 'db@s2')))).toBe(sha256(s2));

    // Seed 004's direction: a snapshot is the predecessor of the volume it was taken of.
    let status = await statusJson(pool);
    expect(status.pool.formatVersion).toBe(5);
    expect(status.luns).toEqual([
      expect.objectContaining({
        name: 'db',
        snapshotNames: ['db@s1', 'db@s2'],
        predecessor: 'db@s2',
      }),
    ]);
    const neighbours = status.snapshots.map(({ name, source, predecessor, successor }) => ({
      name,
      source,
      predecessor,
      successor,
    }));
    expect(neighbours).toEqual([
      { name: 'db@s1', source: 'lun:db', predecessor: null, successor: 'db@s2' },
      { name: 'db@s2', source: 'lun:db', predecessor: 'db@s1', successor: 'lun:db' },
    ]);

    // New RStores and snapshots get ids after the old ones: the old nextRstoreId was read.
    const written = Buffer.alloc(MiB, 0xc3);
    const handle = await open(join(mountpoint, 'luns', 'db'), 'r+');
    await handle.write(written, 0, MiB, 3 * MiB);
    await handle.datasync();
    await handle.close();
    await lunfsOk('snapshot', 'create', pool, 'db@s3');
    await lunfsOk('lun', 'create', pool, 'fresh', '--size', '8M');
    const fresh = Buffer.alloc(8 * MiB, 0x3c);
    const freshHandle = await open(join(mountpoint, 'luns', 'fresh'), 'r+');
    await freshHandle.write(fresh, 0, fresh.length, 0);
    await freshHandle.datasync();
    await freshHandle.close();
    expect((await server.stop()).code).toBe(0);

    server = await box.mount(pool, mountpoint);
    const now = Buffer.concat([s2.subarray(0, 3 * MiB), written]);
    expect(sha256(await readFile(join(mountpoint, 'luns', 'db')))).toBe(sha256(now));
    expect(sha256(await readFile(join(mountpoint, 'snapshots', 'db@s1')))).toBe(sha256(s1));
    expect(sha256(await readFile(join(mountpoint, 'snapshots', 'db@s2')))).toBe(sha256(s2));
    expect(sha256(await readFile(join(mountpoint, 'snapshots', 'db@s3')))).toBe(sha256(now));
    expect(sha256(await readFile(join(mountpoint, 'luns', 'fresh')))).toBe(sha256(fresh));
    status = await statusJson(pool);
    expect(status.luns[0]).toMatchObject({ predecessor: 'db@s3' });
    expect(status.snapshots.map((snapshot) => snapshot.successor)).toEqual([
      'db@s2',
      'db@s3',
      'lun:db',
    ]);
    expect((await server.stop()).code).toBe(0);
  });
});
