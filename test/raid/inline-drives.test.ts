// RAID-5 on drive files on tmpfs, where a ChecksumDrive over a FileDrive serves whole-block
// requests at once with sync calls (no lock, no promise) and a random 4 KiB write's
// read-modify-write does its four member I/Os that way. The memory drives of the other RAID tests
// never take that path; here it is checked against a model, with one member's data silently
// damaged so that the inline reads fail their checksums and the writes go the reconstruct way.

import { openSync, readSync, closeSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileDrive } from '../../src/drive/file-drive.js';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import { patternBytes } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import { formatPoolOn } from '../support/memory-pool.js';

const folders: string[] = [];
afterAll(async () =>
  Promise.all(folders.map((folder) => rm(folder, { recursive: true, force: true }))),
);

const lunBytes = 2 * MiB;

/** Flips one byte in every 4 KiB block of the file's range, behind lunfs's back. */
function damageEveryBlock(path: string, fromBytes: number, toBytes: number): void {
  const fd = openSync(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    for (let offset = fromBytes + 100; offset < toBytes; offset += 4 * KiB) {
      readSync(fd, byte, 0, 1, offset);
      byte[0] = byte[0]! ^ 0x5a;
      writeSync(fd, byte, 0, 1, offset);
    }
  } finally {
    closeSync(fd);
  }
}

describe('RAID-5 on drive files on tmpfs (member I/O served inline)', () => {
  it('random 4 KiB writes read back as the model, also with one member damaged throughout', async () => {
    const folder = await mkdtemp('/dev/shm/lunfs-inline-raid5-');
    folders.push(folder);
    const paths = [0, 1, 2, 3].map((index) => join(folder, `drive-${index}.img`));
    const drives = await Promise.all(paths.map((path) => FileDrive.createSparse(path, 8 * MiB)));
    expect(drives.every((drive) => drive.inline)).toBe(true);
    const clock = new FakeClock();
    const pool = await formatPoolOn(drives, { raidLevel: 5, clock });
    const controller = new Controller(pool, {
      cacheBytes: MiB,
      clock,
      log: silentLogger(),
      random: () => 0.5,
    });
    await controller.createLun('db', lunBytes);
    const model = patternBytes(lunBytes, 1);
    const stack = controller.stack('db');
    await stack.cache.write(0, model);
    await controller.flushAll();

    const random = new SeededRandom(2026);
    const writeRandomBlocks = async (count: number, seed: number): Promise<void> => {
      for (let index = 0; index < count; index += 1) {
        const offset = random.integer(lunBytes / (4 * KiB)) * 4 * KiB;
        const data = patternBytes(4 * KiB, seed + index);
        data.copy(model, offset);
        await stack.cache.write(offset, data);
        if (index % 50 === 49) await controller.flushAll();
      }
      await controller.flushAll();
    };
    const readBelowCache = async (): Promise<Buffer> => {
      const target = Buffer.alloc(lunBytes);
      await stack.thin.read(0, target);
      return target;
    };

    await writeRandomBlocks(300, 1000);
    expect((await readBelowCache()).equals(model)).toBe(true);
    expect(pool.health.integrity.checksumMismatches).toBe(0);

    // Drive 1's PSEG area: every block now fails its checksum (read or read-modify-write).
    const { psegAreaOffsetBytes } = pool.layoutHeader;
    damageEveryBlock(paths[1]!, psegAreaOffsetBytes, 8 * MiB);
    await writeRandomBlocks(300, 5000);
    expect(pool.health.integrity.checksumMismatches).toBeGreaterThan(0);
    expect((await readBelowCache()).equals(model)).toBe(true);
    await pool.close();
  });
});
