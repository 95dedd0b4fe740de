// The OS calls of the native addon: flock between two open files of one process (flock locks
// belong to the open file description, so two opens conflict like two processes do), and
// SO_PEERCRED on a connected Unix socket pair.

import { mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { osCallsAvailable, peerCredentials, tryFlock, unflock } from '../../src/native/os-calls.js';
import { nativeUnavailableReason } from '../../src/native/native-kernels.js';

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
    expect(peerCredentials(fd)).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    client.destroy();
    socket.destroy();
  });
});
