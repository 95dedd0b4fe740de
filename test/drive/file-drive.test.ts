// FileDrive on tmpfs: I/O up to LUNFS_INLINE_MAX_BYTES (32 KiB by default) is served inline with
// sync calls, larger I/O through the thread pool. Both paths must read back what was written,
// interleaved on one drive; a bad value of the variable refuses the open and creates nothing.

import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { FileDrive } from '../../src/drive/file-drive.js';
import { SeededRandom } from '../../src/util/clock.js';
import { KiB, MiB } from '../../src/util/sizes.js';

const folders: string[] = [];
afterAll(async () =>
  Promise.all(folders.map((folder) => rm(folder, { recursive: true, force: true }))),
);
afterEach(() => {
  vi.unstubAllEnvs();
  vi.resetModules();
});

/** A folder on tmpfs, where drives are served inline. */
async function shmFolder(): Promise<string> {
  const path = await mkdtemp('/dev/shm/lunfs-file-drive-');
  folders.push(path);
  return path;
}

describe('FileDrive on tmpfs', () => {
  it('serves small I/O inline and large I/O through the thread pool, interleaved, byte for byte', async () => {
    const path = join(await shmFolder(), 'drive.img');
    const drive = await FileDrive.createSparse(path, 8 * MiB);
    expect(drive.inline).toBe(true);
    const model = Buffer.alloc(8 * MiB);
    const random = new SeededRandom(7);
    const sizes = [4 * KiB, 32 * KiB, 32 * KiB + 4 * KiB, 128 * KiB, MiB];
    for (let round = 0; round < 20; round += 1) {
      // Several writes at once, of both kinds, to ranges that do not overlap.
      const writes: Array<Promise<void>> = [];
      for (let slot = 0; slot < 4; slot += 1) {
        const size = sizes[random.integer(sizes.length)]!;
        const offset = slot * 2 * MiB + random.integer(MiB / (4 * KiB)) * 4 * KiB;
        const data = Buffer.alloc(size, (round * 4 + slot) % 251);
        data.copy(model, offset);
        writes.push(drive.write(offset, data));
      }
      await Promise.all(writes);
      const size = sizes[random.integer(sizes.length)]!;
      const offset = random.integer((8 * MiB - size) / (4 * KiB)) * 4 * KiB;
      const target = Buffer.alloc(size);
      await drive.read(offset, target);
      expect(target.equals(model.subarray(offset, offset + size)), `round ${round}`).toBe(true);
    }
    await drive.flush();
    await drive.close();
    expect((await readFile(path)).equals(model)).toBe(true);
  });

  it('refuses a bad LUNFS_INLINE_MAX_BYTES with EINVAL naming it, and creates no drive', async () => {
    vi.stubEnv('LUNFS_INLINE_MAX_BYTES', '64k');
    vi.resetModules();
    const fresh = await import('../../src/drive/file-drive.js');
    const path = join(await shmFolder(), 'drive.img');
    const error = await fresh.FileDrive.createSparse(path, MiB).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    // a LunfsError of the freshly imported module (instanceof the test's own class fails)
    expect((error as { code?: string }).code).toBe('EINVAL');
    expect((error as Error).message).toContain('LUNFS_INLINE_MAX_BYTES');
    expect(existsSync(path)).toBe(false);
  });
});
