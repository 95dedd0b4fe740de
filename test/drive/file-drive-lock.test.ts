// Drive ownership (issue 17): a FileDrive holds an exclusive flock(2) on its file while open.
// flock locks belong to the open file description, so a second open in this process conflicts
// exactly as another process would (the e2e test drive-ownership.test.ts covers two processes).

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { FileDrive } from '../../src/drive/file-drive.js';
import { encodeDriveHeader } from '../../src/meta/drive-header.js';
import { formatVersion } from '../../src/meta/checksum.js';
import { isLunfsError } from '../../src/util/errors.js';
import { MiB } from '../../src/util/sizes.js';

const folders: string[] = [];
afterAll(async () =>
  Promise.all(folders.map((folder) => rm(folder, { recursive: true, force: true }))),
);

async function folder(): Promise<string> {
  const path = await mkdtemp(join(tmpdir(), 'lunfs-drive-lock-'));
  folders.push(path);
  return path;
}

describe('FileDrive lock', () => {
  it('a second open of an open drive is EBUSY naming the drive and its pool; closing releases it', async () => {
    const path = join(await folder(), 'drive.img');
    const first = await FileDrive.createSparse(path, MiB);
    const header = encodeDriveHeader({
      formatVersion,
      poolUuid: '11111111-2222-3333-4444-555555555555',
      driveUuid: '66666666-7777-8888-9999-000000000000',
      driveIndex: 1,
      driveCount: 2,
      driveSizeBytes: MiB,
      psegSizeBytes: 64 * 1024,
      psegCount: 1,
      quorumOffsetBytes: 4096,
      checkpointSlotBytes: 4096,
      journalBytes: 4096,
      psegAreaOffsetBytes: 512 * 1024,
      holdsQuorumCopy: false,
      createdAtMs: 0,
      checksumTableOffsetBytes: 16384,
      checksumTableBytes: 4096,
      rowLogOffsetBytes: 20480,
      rowLogBytes: 4096,
    });
    await first.write(0, header);
    const refused = await FileDrive.open(path).then(
      () => 'opened',
      (error: unknown) => error,
    );
    expect(isLunfsError(refused, 'EBUSY'), String(refused)).toBe(true);
    expect((refused as Error).message).toBe(
      `drive ${path} belongs to pool 11111111-2222-3333-4444-555555555555 and is in use by another process`,
    );
    await first.close();
    const second = await FileDrive.open(path);
    expect(second.sizeBytes).toBe(MiB);
    await second.close();
  });

  it('a drive with no lunfs label is EBUSY naming the path alone', async () => {
    const path = join(await folder(), 'plain.img');
    const first = await FileDrive.createSparse(path, MiB);
    const refused = await FileDrive.open(path).then(
      () => 'opened',
      (error: unknown) => error,
    );
    expect((refused as Error).message).toBe(`drive ${path} is in use by another process`);
    await first.close();
  });
});

describe('FileDrive without the native addon', () => {
  // The addon is chosen once, when the module loads: a child process with LUNFS_NO_NATIVE=1 runs
  // the built FileDrive (dist/, as the e2e tests do).
  it('opens a drive twice (no lock) and warns once', async () => {
    const built = fileURLToPath(new URL('../../dist/drive/file-drive.js', import.meta.url));
    expect(existsSync(built), `${built} is missing: build with npx tsc -p tsconfig.json`).toBe(
      true,
    );
    const path = join(await folder(), 'unlocked.img');
    const script = `
      const { FileDrive } = await import(${JSON.stringify(built)});
      const first = await FileDrive.createSparse(${JSON.stringify(path)}, 1048576);
      const second = await FileDrive.open(${JSON.stringify(path)});
      const third = await FileDrive.open(${JSON.stringify(path)});
      await Promise.all([first.close(), second.close(), third.close()]);
      console.log('opened three times');`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, LUNFS_NO_NATIVE: '1', LUNFS_LOG_LEVEL: 'warn' },
      encoding: 'utf8',
    });
    expect(child.status, child.stderr).toBe(0);
    expect(child.stdout).toContain('opened three times');
    const warnings = child.stderr
      .split('\n')
      .filter((line) => line.includes('drives are not locked'));
    expect(warnings, child.stderr).toHaveLength(1);
  });
});
