// Migration by a copier that reads the drives itself (issue 16, seed 003), in one process: a
// controller over file drives on /dev/shm serving its control socket (the server), and the copier
// (runCopier) opening the same drive files read-only, as `lunfs copier` does in its own process.
// What it proves:
// - with random writes going on during every pass, the target ends equal to the LUN at the
//   cut-over (the snapshot the final pass takes), on RAID-5 and on RAID-5 with a failed drive;
// - a copier stopped part-way (before it acknowledged a pass) and a server stopped and reopened
//   mid-migration resume, and the result is exact;
// - the server's maps go when the migration ends; bad targets are refused and change nothing.

import { statSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCopier } from '../../src/cli/copier.js';
import { serveControlSocket } from '../../src/cli/control-socket.js';
import { createPool, openPool } from '../../src/cli/pool-access.js';
import { SeededRandom, systemClock } from '../../src/util/clock.js';
import { isLunfsError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import { firstDifference, patternBytes, readAll } from '../support/bytes.js';

const directories: string[] = [];

afterEach(async () => {
  for (const directory of directories.splice(0))
    await rm(directory, { recursive: true, force: true });
});

interface Server {
  controller: Controller;
  socket: string;
  stop(clean: boolean): Promise<void>;
}

async function serve(directory: string): Promise<Server> {
  const pool = await openPool(directory, { deferSession: true });
  const controller = new Controller(pool, {
    cacheBytes: 4 * MiB,
    clock: systemClock,
    log: silentLogger(),
  });
  await controller.openSnapshots();
  await controller.drives.start();
  const socket = join(directory, 'test.sock');
  const server = await serveControlSocket(socket, controller, silentLogger());
  return {
    controller,
    socket,
    async stop(clean: boolean): Promise<void> {
      await new Promise<void>((done) => server.close(() => done()));
      if (clean) await controller.close();
      else await controller.pool.abandonSession(); // the process dies: nothing more is written
    },
  };
}

async function poolWithLun(raidLevel: 0 | 1 | 5): Promise<{ directory: string; server: Server }> {
  const root = await mkdtemp(join(existsShm() ? '/dev/shm' : tmpdir(), 'lunfs-migrate-'));
  directories.push(root);
  const directory = join(root, 'pool');
  await createPool({
    directory,
    driveCount: 3,
    driveSizeBytes: 64 * MiB,
    drivePaths: [],
    raidLevel,
  });
  const server = await serve(directory);
  await server.controller.createLun('db', 16 * MiB);
  await server.controller.stack('db').cache.write(0, patternBytes(12 * MiB, 1));
  await server.controller.stack('db').cache.flush();
  return { directory, server };
}

function existsShm(): boolean {
  try {
    return statSync('/dev/shm').isDirectory();
  } catch {
    return false;
  }
}

/** Random writes and discards to db until stopped, each entered as the mount enters them. */
function writer(controller: () => Controller, seed: number): { stop: () => Promise<void> } {
  const random = new SeededRandom(seed);
  let going = true;
  const done = (async () => {
    for (let step = 0; going; step += 1) {
      const current = controller();
      const offset = random.integer(16 * MiB - 256 * KiB);
      // as the mount does: between enterWrite and its release
      const release = await current.enterWrite('db');
      try {
        if (step % 7 === 6) await current.stack('db').cache.discard(offset, 64 * KiB);
        else
          await current
            .stack('db')
            .cache.write(offset, patternBytes(1 + random.integer(200 * KiB), seed * 1000 + step));
      } catch (error) {
        if (!isLunfsError(error)) throw error; // a server stopped under it
      } finally {
        release();
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  })();
  return {
    stop: async () => {
      going = false;
      await done;
    },
  };
}

async function expectTargetIsCut(
  controller: Controller,
  target: string,
  cut: string,
): Promise<void> {
  const image = await readAll(controller.snapshotVolume(`db@${cut}`));
  const copied = await readFile(target);
  const difference = firstDifference(copied, image);
  expect(difference, `target against db@${cut}: ${difference}`).toBeUndefined();
}

describe('migration by a copier reading the drives', () => {
  const cases: Array<[0 | 1 | 5, boolean]> = [
    [5, false],
    [5, true],
    [1, false],
    [1, true],
    [0, false],
  ];
  for (const [raidLevel, degraded] of cases)
    it(`copies a RAID-${raidLevel} LUN written all along${degraded ? ', with a drive failed' : ''}`, async () => {
      const { directory, server } = await poolWithLun(raidLevel);
      if (degraded) {
        server.controller.pool.health.fail(1, new Error('test: drive 1 out of service'));
        await server.controller.pool.commit();
      }
      const load = writer(() => server.controller, degraded ? 2 : 1);
      const target = join(directory, '..', 'target.img');
      const report = await runCopier({
        directory,
        lun: 'db',
        target: { kind: 'path', path: target, force: false },
        socket: server.socket,
        snapshot: 'cut',
        smallBytes: 256 * KiB,
      });
      await load.stop();
      expect(report.passes.length).toBeGreaterThanOrEqual(2);
      expect(report.passes.at(-1)!.final).toBe(true);
      await expectTargetIsCut(server.controller, target, 'cut');
      // the migration's maps are gone
      expect([...server.controller.pool.metadata.snapPoints.values()]).toEqual([]);
      expect((await stat(target)).size).toBe(16 * MiB);
      await server.stop(true);
    });

  it('resumes after the copier stops part-way and after the server stops', async () => {
    const { directory, server: first } = await poolWithLun(5);
    let server = first;
    let load = writer(() => server.controller, 3);
    const target = join(directory, '..', 'target.img');
    const options = {
      directory,
      lun: 'db',
      target: { kind: 'path' as const, path: target, force: false },
      snapshot: 'cut',
      smallBytes: 256 * KiB,
    };
    // the copier dies in its second pass (after the full one was acknowledged)
    const killed = await runCopier({
      ...options,
      socket: server.socket,
      progress: (event) => {
        if (event.pass === 2 && event.doneBytes > 0) throw new Error('copier killed');
      },
    }).catch((error: Error) => error.message);
    expect(killed).toBe('copier killed');
    expect(JSON.parse(await readFile(join(directory, 'migrate-db.json'), 'utf8')).fullDone).toBe(
      true,
    );
    // The server dies too (no clean close: the next open recovers) and a new one opens the pool:
    // its maps are still there. Its writes stop and settle first: in one process, a write of the
    // old server still on its way could land through a reused descriptor in the new one's drive
    // (a kill -9 of a real mount is in test/e2e/migrate.test.ts).
    await load.stop();
    await server.controller.flushAll();
    await server.stop(false);
    server = await serve(directory);
    load = writer(() => server.controller, 4);
    expect(server.controller.migrations.maps(server.controller.pool.lunByName('db')).length).toBe(
      2,
    );
    const report = await runCopier({ ...options, socket: server.socket });
    await load.stop();
    expect(report.resumed).toBe(true);
    expect(report.passes[0]!.bytes).toBeLessThan(16 * MiB); // no full copy again
    await expectTargetIsCut(server.controller, target, 'cut');
    await server.stop(true);
  });

  it('refuses a target that would be overwritten, and changes nothing', async () => {
    const { directory, server } = await poolWithLun(0);
    const target = join(directory, '..', 'precious.img');
    await writeFile(target, 'keep me');
    const refused = await runCopier({
      directory,
      lun: 'db',
      target: { kind: 'path', path: target, force: false },
      socket: server.socket,
    }).catch((error: unknown) => (isLunfsError(error) ? error.code : String(error)));
    expect(refused).toBe('EEXIST');
    expect(await readFile(target, 'utf8')).toBe('keep me');
    const missing = await runCopier({
      directory,
      lun: 'nolun',
      target: { kind: 'path', path: join(directory, '..', 'x.img'), force: false },
      socket: server.socket,
    }).catch((error: unknown) => (isLunfsError(error) ? error.code : String(error)));
    expect(missing).toBe('ENOENT');
    expect([...server.controller.pool.metadata.snapPoints.values()]).toEqual([]);
    await server.stop(true);
  });
});
