// The OS calls of the native addon: flock between two open files of one process (flock locks
// belong to the open file description, so two opens conflict like two processes do), and
// SO_PEERCRED on a connected Unix socket pair.

import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  allocateIoMemory,
  osCallsAvailable,
  peerCredentials,
  tryFlock,
  unflock,
} from '../../src/native/os-calls.js';
import { nativeAddonOrNull, nativeUnavailableReason } from '../../src/native/native-kernels.js';

const folder = mkdtempSync(join(tmpdir(), 'lunfs-os-calls-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

describe('native OS calls', () => {
  it('are built (make test builds the addon)', () => {
    expect(nativeUnavailableReason).toBeNull();
    expect(osCallsAvailable).toBe(true);
  });

  it('flock: a second open file of a locked path is busy until the first unlocks or closes', () => {
    const path = join(folder, 'a.lock');
    const first = openSync(path, 'w');
    const second = openSync(path, 'r');
    expect(tryFlock(first)).toBe('locked');
    expect(tryFlock(second)).toBe('busy');
    expect(tryFlock(second, false)).toBe('busy');
    unflock(first);
    expect(tryFlock(second)).toBe('locked');
    closeSync(second);
    expect(tryFlock(first)).toBe('locked');
    closeSync(first);
  });

  it('flock: shared locks coexist, an exclusive one waits for none of them', () => {
    const path = join(folder, 'b.lock');
    const first = openSync(path, 'w');
    const second = openSync(path, 'r');
    expect(tryFlock(first, false)).toBe('locked');
    expect(tryFlock(second, false)).toBe('locked');
    const third = openSync(path, 'r');
    expect(tryFlock(third, true)).toBe('busy');
    [first, second, third].forEach((fd) => closeSync(fd));
  });

  it('flock of a closed descriptor is an error, not a lock', () => {
    const fd = openSync(join(folder, 'c.lock'), 'w');
    closeSync(fd);
    expect(() => tryFlock(fd)).toThrow(/flock/);
  });

  it('peerCredentials names this process at the other end of a Unix socket', async () => {
    const path = join(folder, 's.sock');
    const accepted = new Promise<Socket>((resolve) => {
      const server = createServer((socket) => {
        resolve(socket);
        server.close();
      });
      server.listen(path);
    });
    const client = connect(path);
    const socket = await accepted;
    const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
    expect(peerCredentials(fd)).toEqual({
      pid: process.pid,
      uid: process.getuid!(),
      gid: process.getgid!(),
    });
    client.destroy();
    socket.destroy();
  });

  it('allocateIoMemory: zeroed, writable memory of the asked length, in huge pages where THP allows them', () => {
    const anonHugeKiB = (): number =>
      Number(
        /AnonHugePages:\s+(\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? 0,
      );
    const thp = readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
    const before = anonHugeKiB();
    const memory = allocateIoMemory(8 * 1024 * 1024 + 123);
    expect(memory.length).toBe(8 * 1024 * 1024 + 123);
    expect(memory.every((byte) => byte === 0)).toBe(true);
    memory.fill(0xa5, 4096, 8192);
    expect(memory[4096]).toBe(0xa5);
    expect(memory[8191]).toBe(0xa5);
    expect(memory[8192]).toBe(0);
    // 8 MiB in 2 MiB pages: at least three of them huge (the kernel may split one under pressure).
    if (!thp.includes('[never]')) expect(anonHugeKiB() - before).toBeGreaterThanOrEqual(3 * 2048);
  });

  it('allocateIoMemory: LUNFS_NO_HUGEPAGES=1 gives ordinary, zeroed memory', () => {
    process.env['LUNFS_NO_HUGEPAGES'] = '1';
    try {
      const memory = allocateIoMemory(3 * 4096);
      expect(memory.length).toBe(3 * 4096);
      expect(memory.every((byte) => byte === 0)).toBe(true);
    } finally {
      delete process.env['LUNFS_NO_HUGEPAGES'];
    }
  });

  it('allocHugePages refuses a byte count that is not positive', () => {
    const allocHugePages = nativeAddonOrNull?.['allocHugePages'] as (bytes: unknown) => unknown;
    for (const bad of [0, -1, Number.NaN, 'x'])
      expect(() => allocHugePages(bad)).toThrow(/positive byte count/);
  });
});
