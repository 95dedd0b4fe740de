// A CLI command that opens a crashed pool itself (no mount serves it) must run the crash recovery
// before it reads the snapshot target volumes. Found by the crash soak (test/soak): after a
// SIGKILL of `lunfs mount` during copy-on-write, an offline `lunfs snapshot create` (or `rm`) read
// the target before recovery, when RSEGs written since the last checkpoint were still flagged
// fresh (read as zeros), and wrote that view back: an older snapshot then read zeros in every
// chunk preserved for it since (soak seeds 20261205 cycle 80, 20261206 cycle 68).

import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MiB, lunfsOk, runOk, sha256, sleep, useSandbox } from './support.js';

const chunkBytes = 128 * 1024;
const rounds = 4;

describe('an offline command after a crash', () => {
  const sandbox = useSandbox('offline-after-crash');

  it('lunfs snapshot create on a pool killed during copy-on-write leaves older snapshots exact', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', { drives: 3, driveSize: '256M', raid: 5 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '64M');
    const mountpoint = box.path('mnt');
    let server = await box.mount(pool, mountpoint);
    const lun = join(mountpoint, 'luns', 'db');
    let handle = await open(lun, 'r+');
    await handle.write(randomBytes(48 * MiB), 0, 48 * MiB, 0);
    await handle.datasync();
    await handle.close();
    await runOk('touch', [join(mountpoint, 'control', 'snapshot', 'db@s1')]);
    const original = await readFile(join(mountpoint, 'snapshots', 'db@s1'));
    const originalSha = sha256(original);
    let written = 0;
    for (let round = 0; round < rounds; round += 1) {
      // 4 KiB synced writes spread over many chunks, so that each one is preserved for s1; the
      // kill lands while they go on.
      handle = await open(lun, 'r+');
      let stop = false;
      const writer = (async () => {
        while (!stop) {
          const chunk = (written * 37) % 384;
          written += 1;
          await handle.write(
            randomBytes(4096),
            0,
            4096,
            chunk * chunkBytes + 4096 * (written % 32),
          );
          await handle.datasync();
        }
      })().catch(() => undefined);
      const target = written + 11;
      while (written < target) await sleep(2);
      await server.kill();
      stop = true;
      await writer;
      await handle.close().catch(() => undefined);
      // opens the crashed pool itself
      await lunfsOk('snapshot', 'create', pool, `db@offline${round}`);
      server = await box.mount(pool, mountpoint);
      const after = await readFile(join(mountpoint, 'snapshots', 'db@s1'));
      const changed: string[] = [];
      for (let chunk = 0; chunk < original.length / chunkBytes; chunk += 1) {
        const got = after.subarray(chunk * chunkBytes, (chunk + 1) * chunkBytes);
        if (!got.equals(original.subarray(chunk * chunkBytes, (chunk + 1) * chunkBytes)))
          changed.push(`${chunk}${got.every((byte) => byte === 0) ? ' (zeros)' : ''}`);
      }
      expect(changed, `round ${round}: chunks of db@s1 that changed`).toEqual([]);
      expect(sha256(after)).toBe(originalSha);
    }
    await server.stop();
  }, 600_000);
});
