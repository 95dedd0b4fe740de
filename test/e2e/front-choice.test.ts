// End to end, no mocks: which FUSE front `lunfs mount` picks (issue 12). By default (auto) it is
// lunfs's own native front wherever its addon (native/fuse) is built; `--front fuse-native` names
// the other one; and a build without the native front's addon (macOS, or no libfuse3-dev when it
// was built) mounts through fuse-native, saying why on stderr, and serves the same files.
//
// The build without the addon is a copy of this checkout's dist/ and package.json in the sandbox
// (node_modules linked), with no native/fuse beside it: exactly what such a machine has.

import { cp, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MiB,
  lunfsOk,
  repoRoot,
  runOk,
  sha256File,
  testFront,
  useSandbox,
  type MountServer,
} from './support.js';

const nativeLine = /lunfs: native front served \d+ requests/;

async function stopCleanly(server: MountServer): Promise<void> {
  const exit = await server.stop();
  expect(exit, `lunfs mount exit; stderr:\n${server.stderr}`).toEqual({ code: 0, signal: null });
  expect(server.stdout).toContain('unmounted cleanly');
}

/**
 * Writes 4 MiB of random bytes to the LUN file through the mount and returns their sha256 read
 * back.
 */
async function writeAndReadBack(
  mountpoint: string,
  box: { path(name: string): string },
): Promise<{ written: string; read: string }> {
  const source = box.path('source.bin');
  await runOk('dd', ['if=/dev/urandom', `of=${source}`, 'bs=1M', 'count=4', 'status=none']);
  const lunFile = join(mountpoint, 'luns', 'db');
  await runOk('dd', [
    `if=${source}`,
    `of=${lunFile}`,
    'bs=1M',
    'conv=notrunc,fsync',
    'status=none',
  ]);
  return { written: await sha256File(source), read: await sha256File(lunFile, 4 * MiB) };
}

describe('the FUSE front lunfs mount picks', () => {
  const sandbox = useSandbox('front-choice');

  it.skipIf(testFront !== undefined)(
    'is the native front by default, and fuse-native when named',
    async () => {
      const box = sandbox();
      const pool = await box.createPool('pool', { drives: 2, driveSize: '64M', raid: 1 });
      await lunfsOk('lun', 'create', pool, 'db', '--size', '16M');
      const mountpoint = box.path('mnt');

      const byDefault = await box.mount(pool, mountpoint);
      const first = await writeAndReadBack(mountpoint, box);
      expect(first.read).toBe(first.written);
      await stopCleanly(byDefault);
      expect(byDefault.stdout, 'the native front reports its requests at stop').toMatch(nativeLine);

      const named = await box.mount(pool, mountpoint, ['--front', 'fuse-native']);
      const second = await writeAndReadBack(mountpoint, box);
      expect(second.read).toBe(second.written);
      await stopCleanly(named);
      expect(named.stdout).not.toMatch(nativeLine);
    },
  );

  it('falls back to fuse-native, saying why, where the native front is not built', async () => {
    const box = sandbox();
    const build = await box.mkdir('build-without-native-front');
    await cp(join(repoRoot, 'dist'), join(build, 'dist'), { recursive: true });
    await cp(join(repoRoot, 'package.json'), join(build, 'package.json'));
    await symlink(join(repoRoot, 'node_modules'), join(build, 'node_modules'));
    const bin = join(build, 'lunfs.mjs');
    await writeFile(bin, "import('./dist/bin.js');\n");

    const pool = await box.createPool('pool', { drives: 2, driveSize: '64M', raid: 1 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '16M');
    const mountpoint = box.path('mnt');
    const server = await box.mount(pool, mountpoint, ['--front', 'auto'], bin);
    expect(server.stderr).toMatch(
      /the native FUSE front cannot be used \(.*lunfs_fuse\.node does not exist.*\); serving through fuse-native/,
    );
    const served = await writeAndReadBack(mountpoint, box);
    expect(served.read).toBe(served.written);
    await stopCleanly(server);
    expect(server.stdout).not.toMatch(nativeLine);
  });
});
