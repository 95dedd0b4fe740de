// `lunfs mount`: takes the pool lock, opens the pool, serves the control socket and the FUSE
// mountpoint in the foreground. SIGINT/SIGTERM/SIGHUP (or `lunfs unmount`) flush every LUN and, unless
// LUN or snapshot files are open through the mount (then the stop is refused: mount-stop.ts),
// unmount, write a clean-shutdown checkpoint and release the lock. A stale mount left by a killed
// process is unmounted first.

import { readdir, readFile, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { DriveIoMode } from '../drive/file-drive.js';
import { FuseFront } from '../fuse/fuse-front.js';
import { systemClock } from '../util/clock.js';
import { isLunfsError, LunfsError } from '../util/errors.js';
import { layerLogger } from '../util/logger.js';
import { Controller } from '../volume/controller.js';
import { acquirePoolLock, liveLockOwner, readPoolFile, socketPath } from '../volume/pool-directory.js';
import { sendControlRequest, serveControlSocket } from './control-socket.js';
import { MountStop, registerMountStop, type StopDecision, type StopSource } from './mount-stop.js';
import { makeDirectory, openPool, recordDrivePaths } from './pool-access.js';

/** How often the mount checks that its drive files are still there (a deleted one fails at once). */
const driveWatchIntervalMs = 500;
/** `lunfs unmount`: how often and how long it waits for the mount's process to let go of the pool. */
const unmountPollMs = 100;
const unmountWaitMsMax = 300_000;

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
  const releaseLock = await acquirePoolLock(directory, { pid: process.pid, mountpoint });
  let createdMountpoint: string | undefined;
  try {
    createdMountpoint = await prepareMountpoint(mountpoint);
  } catch (error) {
    await releaseLock();
    throw error;
  }
  let controller: Controller | undefined;
  let front: FuseFront | undefined;
  let server: Awaited<ReturnType<typeof serveControlSocket>> | undefined;
  try {
    const pool = await openPool(directory, { drivePaths: request.drivePaths, ioMode: request.ioMode, forceDegraded: request.forceDegraded });
    controller = new Controller(pool, { cacheBytes: request.cacheBytes, clock: systemClock, log: layerLogger('controller'), driveSettings: { onDrivePathsChanged: (paths) => recordDrivePaths(directory, paths) } });
    await controller.openSnapshots();
    await controller.drives.start({ watchIntervalMs: driveWatchIntervalMs });
    server = await serveControlSocket(socketPath(directory), controller, log);
    front = new FuseFront({ mountpoint, controller, log: layerLogger('fuse'), mountedAt: new Date(systemClock.nowMs()) });
    await front.mount();
  } catch (error) {
    server?.close();
    await rm(socketPath(directory), { force: true });
    if (controller) await controller.close().catch(() => undefined);
    await releaseLock();
    if (createdMountpoint) await rm(createdMountpoint, { recursive: true, force: true });
    throw error;
  }
  log.info('mounted');

  await new Promise<void>((resolveStop) => {
    const shutdown = async (forcedOpenFiles: string[]): Promise<void> => {
      await controller!.flushAll();
      await front!.unmount().catch((error: unknown) => log.warn({ err: error }, 'unmount failed'));
      server!.close();
      await rm(socketPath(directory), { force: true });
      await controller!.close();
      await releaseLock();
      if (forcedOpenFiles.length === 0) console.log(`lunfs: pool ${directory} unmounted cleanly`);
      else console.log(`lunfs: pool ${directory} unmounted with files open (forced): ${forcedOpenFiles.join(', ')}`);
    };
    const stop = new MountStop({
      files: front!,
      controller: controller!,
      log,
      poolDirectory: directory,
      shutdown: (forcedOpenFiles) => {
        void shutdown(forcedOpenFiles).then(resolveStop, (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          process.exitCode = 1;
          resolveStop();
        });
      },
    });
    registerMountStop(controller!, stop);
    const onSignal = (signal: StopSource): void => {
      stop.request(signal).catch((error: unknown) => log.error({ err: error, signal }, 'stop request failed'));
    };
    // Not once: a signal refused while files are open leaves the mount serving, and the next one decides again.
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    // The terminal of a foreground mount closing: by default it killed the process with no flush.
    process.on('SIGHUP', () => onSignal('SIGHUP'));
    // The ready line comes only once the handlers are in place: whoever waits for it may signal at
    // once, and a SIGTERM before them would kill the process with no flush (seen under load).
    console.log(`lunfs: pool ${directory} mounted at ${mountpoint} (pid ${process.pid})`);
  });
}

/**
 * Checks the mountpoint before the pool is opened, so that a bad one changes nothing: it must be
 * an empty directory (FUSE refuses a non-empty one: mounted over the pool directory or one above
 * it, the mount would hide its drives); a missing one is made (see makeDirectory). A stale mount
 * of a killed process answers ENOTCONN and is left to FuseFront, which unmounts it first.
 * Returns the topmost directory made, to remove if the mount fails.
 */
async function prepareMountpoint(mountpoint: string): Promise<string | undefined> {
  let entries: string[];
  try {
    entries = await readdir(mountpoint);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN') return undefined;
    if (code === 'ENOTDIR') throw new LunfsError('EINVAL', `mountpoint ${mountpoint} is not a directory`);
    if (code === 'ENOENT') return makeDirectory(mountpoint, 'the mountpoint');
    throw new LunfsError('EINVAL', `cannot use ${mountpoint} as the mountpoint (${(error as Error).message.split(',')[0]})`, { cause: error });
  }
  if (entries.length > 0) throw new LunfsError('EINVAL', `mountpoint ${mountpoint} is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''})`);
  return undefined;
}

/**
 * `lunfs unmount DIR [--force]`: asks the process that has the pool mounted to stop, by the rules
 * of SIGTERM (refused while LUN or snapshot files are open, unless forced), and waits until it
 * has let go of the pool.
 */
export async function runUnmount(directory: string, force: boolean): Promise<string> {
  const absolute = resolve(directory);
  try {
    await readPoolFile(absolute);
  } catch (error) {
    if (isLunfsError(error, 'ENOENT') && (await isLunfsMountpoint(absolute))) {
      throw new LunfsError('EINVAL', `${absolute} is where a pool is mounted: give the pool's directory (the DIR of lunfs mount DIR ${absolute})`);
    }
    throw error;
  }
  const owner = await liveLockOwner(absolute);
  if (!owner) throw new LunfsError('EINVAL', `pool ${absolute} is not mounted`);
  if (owner.mountpoint === undefined) throw new LunfsError('EINVAL', `pool ${absolute} is not mounted (process ${owner.pid} holds it for another lunfs command)`);
  const decision = (await sendControlRequest(socketPath(absolute), { command: 'unmount', force })) as StopDecision;
  for (let waitedMs = 0; (await liveLockOwner(absolute))?.pid === decision.pid; waitedMs += unmountPollMs) {
    if (waitedMs >= unmountWaitMsMax) throw new LunfsError('EBUSY', `the mount's process ${decision.pid} is still stopping after ${unmountWaitMsMax / 1000} s`);
    await new Promise((resolveWait) => setTimeout(resolveWait, unmountPollMs));
  }
  const forced = decision.forcedOpenFiles.length > 0 ? ` with files open (forced): ${decision.forcedOpenFiles.join(', ')}` : '';
  return `pool ${absolute} unmounted from ${owner.mountpoint}${forced}`;
}

/** Whether a lunfs FUSE mount is at this path (/proc/mounts, type fuse.lunfs). */
async function isLunfsMountpoint(path: string): Promise<boolean> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  const escaped = path.replace(/[ \t\n\\]/g, (character) => `\\${character.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return mounts.split('\n').some((line) => {
    const [, mountpoint, type] = line.split(' ');
    return mountpoint === escaped && type === 'fuse.lunfs';
  });
}
