// Who can reach a pool (issues 11 and 17), end to end as root and as an unprivileged user.
// - What lunfs creates is owner-only whatever the umask: the pool is created and mounted under
//   umask 000, and the pool directory is 0700, pool.json, the drives, the lock and the socket 0600.
// - Another user (nobody, through setpriv) can neither read a drive, nor use the CLI on the pool,
//   nor see the mount's files (FUSE without allow_other refuses other users: EACCES). With the
//   socket opened up by hand, the mount still refuses it after checking its peer credentials.
// - `lunfs status` warns (human and --json `warnings`) about a pool that others can reach.
// - A pool path too long for a socket address: the socket lives in /run/lunfs under a hash of the
//   pool's path; mount, status through it, unmount and mount again (the old code bound a truncated
//   name and the second mount died with EADDRINUSE).

import { chmod, readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  lunfs,
  lunfsBin,
  lunfsOk,
  run,
  statusJson,
  useSandbox,
  type RunResult,
  type Sandbox,
} from './support.js';

const sandbox = useSandbox('pool-perm');

const nobody = 65534;

/** Runs a command as uid/gid 65534 with no supplementary groups. */
function asNobody(command: string, args: string[]): Promise<RunResult> {
  return run('setpriv', [
    `--reuid=${nobody}`,
    `--regid=${nobody}`,
    '--clear-groups',
    '--',
    command,
    ...args,
  ]);
}

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

function modeOf(info: { mode: number }): string {
  return (info.mode & 0o777).toString(8);
}

/** Runs `body` with this process's umask (and so its children's) set to `mask`. */
async function withUmask<T>(mask: number, body: () => Promise<T>): Promise<T> {
  const previous = process.umask(mask);
  try {
    return await body();
  } finally {
    process.umask(previous);
  }
}

/** A small RAID-0 pool with a LUN `db`. */
async function smallPool(box: Sandbox, name: string): Promise<string> {
  const pool = await box.createPool(name, {
    drives: 2,
    driveSize: '64M',
    raid: 0,
    extra: ['--pseg-size', '1M', '--allocation-unit', '1M'],
  });
  await lunfsOk('lun', 'create', pool, 'db', '--size', '4M');
  return pool;
}

/** A node script that sends one request to a control socket and prints the answer line. */
const socketClient = `
const socket = require('node:net').createConnection(process.argv[1]);
let text = '';
socket.setEncoding('utf8');
socket.on('connect', () => socket.write(process.argv[2] + '\\n'));
socket.on('data', (chunk) => (text += chunk));
socket.on('end', () => { process.stdout.write(text); });
socket.on('error', (error) => { console.error(error.message); process.exitCode = 3; });
`;

describe('pool permissions', () => {
  it('under umask 000 lunfs creates everything owner-only; another user can reach none of it', async () => {
    const box = sandbox();
    // nobody may walk to the pool and the mountpoint: they must protect themselves
    await chmod(box.root, 0o755);
    const mountpoint = box.path('mnt');
    const { pool, server } = await withUmask(0o000, async () => {
      const created = await smallPool(box, 'pool');
      return { pool: created, server: await box.mount(created, mountpoint) };
    });

    expect(modeOf(await stat(pool))).toBe('700');
    for (const name of ['pool.json', 'drive-0.img', 'drive-1.img', 'lunfs.lock'])
      expect(`${name} ${modeOf(await stat(join(pool, name)))}`).toBe(`${name} 600`);
    const socket = join(pool, 'lunfs.sock');
    expect((await stat(socket)).isSocket()).toBe(true);
    expect(modeOf(await stat(socket))).toBe('600');
    expect(JSON.parse(await readFile(join(pool, 'lunfs.lock'), 'utf8'))).toEqual({
      pid: server.pid,
      mountpoint,
      socket,
    });
    expect((await statusJson(pool)).warnings).toEqual([]);

    // A drive: not readable.
    const drive = await asNobody('head', ['-c', '4096', join(pool, 'drive-0.img')]);
    expect(drive.code, describeRun(drive)).not.toBe(0);
    expect(drive.stderr).toMatch(/Permission denied/);
    // The CLI: a clear message, no stack trace, nothing removed; EACCES is exit 2 (the README
    // table).
    const status = await asNobody(process.execPath, [lunfsBin, 'status', pool]);
    expect(status.code, describeRun(status)).toBe(2);
    expect(status.stderr).toMatch(
      /^lunfs: permission denied reading .*pool\.json: the pool belongs to another user/,
    );
    expect(status.stderr).not.toMatch(/\n\s+at /);
    const remove = await asNobody(process.execPath, [lunfsBin, 'lun', 'rm', pool, 'db']);
    expect(remove.code, describeRun(remove)).toBe(2);
    expect(remove.stderr).toMatch(/^lunfs: permission denied/);
    // The mount: FUSE without allow_other refuses every other user.
    const listing = await asNobody('stat', [join(mountpoint, 'luns')]);
    expect(listing.code, describeRun(listing)).not.toBe(0);
    expect(listing.stderr).toMatch(/Permission denied/);
    const lunData = await asNobody('head', ['-c', '512', join(mountpoint, 'luns', 'db')]);
    expect(lunData.stderr).toMatch(/Permission denied/);

    // Open the directory and the socket up by hand: the mount checks who connects and refuses.
    await chmod(pool, 0o711);
    await chmod(socket, 0o666);
    for (const request of [{ command: 'status' }, { command: 'lun-rm', name: 'db' }]) {
      const answer = await asNobody(process.execPath, [
        '-e',
        socketClient,
        socket,
        JSON.stringify(request),
      ]);
      expect(answer.code, describeRun(answer)).toBe(0);
      expect(JSON.parse(answer.stdout)).toEqual({
        ok: false,
        code: 'EACCES',
        message: `permission denied: the control socket ${socket} serves uid 0 (the user that mounted the pool) and root only, not uid ${nobody}`,
      });
    }
    const after = await statusJson(pool); // root, through the socket
    expect(after.luns.map((lun) => lun.name)).toEqual(['db']);
    expect(after.warnings).toEqual([
      `pool directory ${pool} can be entered by its group or other users (mode 0711): chmod go-rwx ${pool}`,
    ]);
    expect((await server.stop()).code).toBe(0);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(join(pool, 'lunfs.lock'))).toBe(false);
  });

  it('lunfs status warns about a pool directory, pool file or drive open to other users', async () => {
    const box = sandbox();
    const pool = await smallPool(box, 'pool');
    expect((await statusJson(pool)).warnings).toEqual([]);
    await chmod(pool, 0o755);
    await chmod(join(pool, 'drive-1.img'), 0o646);
    const expected = [
      `pool directory ${pool} can be listed and entered by its group or other users (mode 0755): chmod go-rwx ${pool}`,
      `drive ${join(pool, 'drive-1.img')} can be read and written by its group or other users (mode 0646): chmod go-rwx ${join(pool, 'drive-1.img')}`,
    ];
    expect((await statusJson(pool)).warnings).toEqual(expected);
    const human = await lunfsOk('status', pool);
    for (const warning of expected) expect(human.stdout).toContain(`warning: ${warning}\n`);
    // Through the mount's socket too.
    const mountpoint = box.path('mnt');
    const server = await box.mount(pool, mountpoint);
    expect((await statusJson(pool)).warnings).toEqual(expected);
    expect(
      JSON.parse(await readFile(join(mountpoint, 'control', 'status'), 'utf8')).warnings,
    ).toEqual(expected);
    expect((await server.stop()).code).toBe(0);
    // pool create in a directory the user made open says so.
    const open = await box.mkdir('open');
    await chmod(open, 0o755);
    const created = await lunfs(
      'pool',
      'create',
      open,
      '--drives',
      '2',
      '--drive-size',
      '64M',
      '--raid',
      '0',
    );
    expect(created.code, describeRun(created)).toBe(0);
    expect(created.stderr).toBe(
      `lunfs: warning: pool directory ${open} can be listed and entered by its group or other users (mode 0755): chmod go-rwx ${open}\n`,
    );
  });

  it('a pool path too long for a socket address: the socket lives in /run/lunfs; mount, status, unmount, mount again', async () => {
    const box = sandbox();
    const pool = box.path('p'.repeat(60), 'q'.repeat(60));
    expect(pool.length).toBeGreaterThan(150);
    await smallPool(box, join('p'.repeat(60), 'q'.repeat(60)));
    const mountpoint = box.path('mnt');
    for (let mount = 0; mount < 2; mount += 1) {
      const server = await box.mount(pool, mountpoint);
      // Through the socket: the mount's process creates the LUN and serves it at once.
      await lunfsOk('lun', 'create', pool, `through${mount}`, '--size', '1M');
      expect((await stat(join(mountpoint, 'luns', `through${mount}`))).size).toBe(1024 * 1024);
      expect((await statusJson(pool)).luns.map((lun) => lun.name)).toEqual([
        'db',
        'through0',
        ...(mount === 1 ? ['through1'] : []),
      ]);
      // Checked on the second mount: the first one is what the old code got through, bound under a
      // truncated name that its unmount did not remove, so the second mount died with EADDRINUSE.
      if (mount === 0) {
        expect((await server.stop()).code, server.stderr).toBe(0);
        continue;
      }
      const socket = (
        JSON.parse(await readFile(join(pool, 'lunfs.lock'), 'utf8')) as { socket: string }
      ).socket;
      expect(socket).toMatch(/^\/run\/lunfs\/[0-9a-f]{32}\.sock$/);
      expect((await stat(socket)).isSocket()).toBe(true);
      expect(modeOf(await stat(socket))).toBe('600');
      expect(modeOf(await stat('/run/lunfs'))).toBe('700');
      expect(existsSync(join(pool, 'lunfs.sock'))).toBe(false);
      const stopped = await server.stop();
      expect(stopped.code, server.stderr).toBe(0);
      expect(server.stderr).not.toMatch(/EADDRINUSE/);
      expect(existsSync(socket), 'socket removed at unmount').toBe(false);
    }
  });
});
