// `lunfs mount`: takes the pool lock, opens the pool, serves the control socket and the FUSE
// mountpoint in the foreground. SIGINT/SIGTERM flush every LUN, unmount, write a clean-shutdown
// checkpoint and release the lock; when the flush cannot complete (writes for a RAID-0 drive out
// of service) they still unmount and close, and fail naming the writes lost. A stale mount left by
// a killed process is unmounted first.

import { realpath, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { DriveIoMode } from '../drive/file-drive.js';
import { FuseFront } from '../fuse/fuse-front.js';
import { systemClock } from '../util/clock.js';
import { LunfsError } from '../util/errors.js';
import { layerLogger } from '../util/logger.js';
import { Controller } from '../volume/controller.js';
import { prepareSocketDirectory, readPoolFile, socketPath } from '../volume/pool-directory.js';
import { acquirePoolLock } from '../volume/pool-lock.js';
import { poolPermissionWarnings } from '../volume/pool-permissions.js';
import { serveControlSocket } from './control-socket.js';
import { openPool, recordDrivePaths } from './pool-access.js';

/** How often the mount checks that its drive files are still there (a deleted one fails at once). */
const driveWatchIntervalMs = 500;

export interface MountRequest {
  directory: string;
  mountpoint: string;
  cacheBytes: number;
  drivePaths: string[];
  ioMode: DriveIoMode;
  /** Open a pool that refuses to open dirty and degraded (Pool.refuseIfDirtyDegraded). */
  forceDegraded?: boolean;
}

export async function runMount(request: MountRequest): Promise<void> {
  const directory = resolve(request.directory);
  const mountpoint = resolve(request.mountpoint);
  const log = layerLogger('mount', { pool: directory, mountpoint });
  await readPoolFile(directory);
  const socket = socketPath(directory); // before the lock: it can fail (no short place for it)
  const lock = await acquirePoolLock(directory, { pid: process.pid, mountpoint });
  const releaseLock = (): Promise<void> => lock.release();
  let controller: Controller | undefined;
  let front: FuseFront | undefined;
  let server: Awaited<ReturnType<typeof serveControlSocket>> | undefined;
  try {
    const pool = await openPool(directory, { drivePaths: request.drivePaths, ioMode: request.ioMode, forceDegraded: request.forceDegraded });
    const realMountpoint = await realPathBeforeMount(mountpoint);
    controller = new Controller(pool, { cacheBytes: request.cacheBytes, clock: systemClock, log: layerLogger('controller'), driveSettings: { onDrivePathsChanged: (paths) => recordDrivePaths(directory, paths), mountpoint: realMountpoint }, warnings: (drivePaths) => poolPermissionWarnings(directory, drivePaths) });
    await controller.openSnapshots();
    await controller.drives.start({ watchIntervalMs: driveWatchIntervalMs });
    prepareSocketDirectory(socket, directory);
    server = await serveControlSocket(socket, controller, log);
    lock.record({ pid: process.pid, mountpoint, socket }); // CLI commands now go to the socket
    front = new FuseFront({ mountpoint, controller, log: layerLogger('fuse'), mountedAt: new Date(systemClock.nowMs()) });
    await front.mount();
  } catch (error) {
    server?.close();
    if (server) await rm(socket, { force: true });
    if (controller) await controller.close().catch(() => undefined);
    await releaseLock();
    throw error;
  }
  log.info('mounted');

  // A failed stop becomes the command's error (message and exit code from the CLI).
  let stopError: unknown;
  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping: flushing and unmounting');
      void shutdown().then(resolveStop, (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        stopError = error;
        resolveStop();
      });
    };
    const shutdown = async (): Promise<void> => {
      // A flush that fails (RAID-0 with a drive out: writes that no drive can take) does not keep
      // the pool mounted for ever: the stop goes on, and the writes lost are named.
      const flushFailure = await controller!.flushAll().then(() => undefined, (error: unknown) => error as Error);
      if (flushFailure) log.error({ err: flushFailure }, 'flush before unmount failed');
      await front!.unmount().catch((error: unknown) => log.warn({ err: error }, 'unmount failed'));
      lock.record({ pid: process.pid, mountpoint }); // no socket: CLI commands wait for the lock instead
      server!.close();
      await rm(socket, { force: true });
      const lost = await controller!.close({ dropUnwritable: flushFailure !== undefined });
      await releaseLock();
      if (lost.length > 0) {
        const what = lost.map(({ lun, bytes, reason }) => `${bytes} bytes of writes to LUN ${lun} acknowledged but not yet flushed could not be written and are lost: ${reason}`).join('; ');
        throw new LunfsError('EIO', `pool ${directory} unmounted, but ${what}`);
      }
      console.log(`lunfs: pool ${directory} unmounted cleanly`);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    // The ready line comes only once the handlers are in place: whoever waits for it may signal at
    // once, and a SIGTERM before them would kill the process with no flush (seen under load).
    console.log(`lunfs: pool ${directory} mounted at ${mountpoint} (pid ${process.pid})`);
  });
  if (stopError !== undefined) throw stopError;
}

/**
 * The real path the mount will serve, taken before it is mounted (afterwards, resolving it would
 * ask this very process). A stale mount left by a killed server does not answer: then the real
 * path of its parent and its name.
 */
async function realPathBeforeMount(mountpoint: string): Promise<string> {
  try {
    return await realpath(mountpoint);
  } catch {
    return join(await realpath(dirname(mountpoint)).catch(() => dirname(mountpoint)), basename(mountpoint));
  }
}
