// `lunfs mount`: takes the pool lock, opens the pool, serves the control socket and the FUSE
// mountpoint in the foreground. SIGINT/SIGTERM/SIGHUP (or `lunfs unmount`) flush every LUN and,
// unless LUN or snapshot files are open through the mount (then the stop is refused:
// mount-stop.ts), unmount, write a clean-shutdown checkpoint and release the lock; when the flush
// cannot complete (writes for a RAID-0 drive out of service) they still unmount and close, and
// fail naming the writes lost. A stale mount left by a killed process is unmounted first.

import { readdir, readFile, realpath, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { DriveIoMode } from '../drive/file-drive.js';
import { FuseFront, type MountedFront } from '../fuse/fuse-front.js';
import { loadFuseAddon, NativeFront } from '../fuse/native-front.js';
import { systemClock } from '../util/clock.js';
import { isLunfsError, LunfsError } from '../util/errors.js';
import { layerLogger, type Logger } from '../util/logger.js';
import { Controller } from '../volume/controller.js';
import { prepareSocketDirectory, readPoolFile, socketPath } from '../volume/pool-directory.js';
import { acquirePoolLock, poolLockState } from '../volume/pool-lock.js';
import { poolPermissionWarnings } from '../volume/pool-permissions.js';
import { sendControlRequest, serveControlSocket } from './control-socket.js';
import { undoInterruptedImports } from '../volume/volume-export.js';
import { MountStop, registerMountStop, type StopDecision, type StopSource } from './mount-stop.js';
import { makeDirectory, openPool, recordDrivePaths } from './pool-access.js';

/**
 * How often the mount checks that its drive files are still there (a deleted one fails at once).
 */
const driveWatchIntervalMs = 500;
/**
 * `lunfs unmount`: how often and how long it waits for the mount's process to let go of the pool.
 */
const unmountPollMs = 100;
const unmountWaitMsMax = 300_000;

export interface MountRequest {
  directory: string;
  mountpoint: string;
  cacheBytes: number;
  drivePaths: string[];
  ioMode: DriveIoMode;
  /** Open a pool that refuses to open dirty and degraded (refuseIfDirtyDegraded, pool/). */
  forceDegraded?: boolean;
  /** Which FUSE front serves the mountpoint (default auto: native where its addon loads). */
  front?: FrontKind;
}

export type FrontKind = 'auto' | 'fuse-native' | 'native';

/**
 * The front auto picks: lunfs's own (native/fuse, libfuse3) where its addon is built and loads,
 * else fuse-native, saying why on stderr (macOS, or a machine without libfuse3-dev at build time).
 */
export function chooseFront(
  requested: FrontKind | undefined,
  log: Logger,
): 'fuse-native' | 'native' {
  if (requested === 'native' || requested === 'fuse-native') return requested;
  const { addon, reason } = loadFuseAddon();
  if (addon) return 'native';
  log.warn({ reason }, 'native FUSE front unavailable: serving through fuse-native');
  console.error(
    `lunfs: the native FUSE front cannot be used (${reason}); serving through fuse-native (128 KiB requests, no discard)`,
  );
  return 'fuse-native';
}

export async function runMount(request: MountRequest): Promise<void> {
  const directory = resolve(request.directory);
  const mountpoint = resolve(request.mountpoint);
  const log = layerLogger('mount', { pool: directory, mountpoint });
  await readPoolFile(directory);
  const socket = socketPath(directory); // before the lock: it can fail (no short place for it)
  const lock = await acquirePoolLock(directory, { pid: process.pid, mountpoint });
  const releaseLock = (): Promise<void> => lock.release();
  let createdMountpoint: string | undefined;
  try {
    createdMountpoint = await prepareMountpoint(mountpoint);
  } catch (error) {
    await releaseLock();
    throw error;
  }
  let controller: Controller | undefined;
  let front: MountedFront | undefined;
  let server: Awaited<ReturnType<typeof serveControlSocket>> | undefined;
  try {
    const pool = await openPool(directory, {
      drivePaths: request.drivePaths,
      ioMode: request.ioMode,
      forceDegraded: request.forceDegraded,
    });
    const realMountpoint = await realPathBeforeMount(mountpoint);
    controller = new Controller(pool, {
      cacheBytes: request.cacheBytes,
      clock: systemClock,
      log: layerLogger('controller'),
      driveSettings: {
        onDrivePathsChanged: (paths) => recordDrivePaths(directory, paths),
        mountpoint: realMountpoint,
      },
      warnings: (drivePaths) => poolPermissionWarnings(directory, drivePaths),
    });
    await controller.openSnapshots();
    await controller.drives.start({ watchIntervalMs: driveWatchIntervalMs });
    await controller.resumeClones(); // BGCOPYs a stop or a crash interrupted
    await undoInterruptedImports(controller);
    prepareSocketDirectory(socket, directory);
    server = await serveControlSocket(socket, controller, log);
    lock.record({ pid: process.pid, mountpoint, socket }); // CLI commands now go to the socket
    const frontOptions = {
      mountpoint,
      controller,
      log: layerLogger('fuse'),
      mountedAt: new Date(systemClock.nowMs()),
    };
    front =
      chooseFront(request.front, log) === 'native'
        ? new NativeFront(frontOptions)
        : new FuseFront(frontOptions);
    await front.mount();
  } catch (error) {
    server?.close();
    if (server) await rm(socket, { force: true });
    if (controller) await controller.close().catch(() => undefined);
    await releaseLock();
    if (createdMountpoint) await rm(createdMountpoint, { recursive: true, force: true });
    throw error;
  }
  log.info('mounted');

  // A failed stop becomes the command's error (message and exit code from the CLI).
  let stopError: unknown;
  await new Promise<void>((resolveStop) => {
    const shutdown = async (forcedOpenFiles: string[]): Promise<void> => {
      // A flush that fails (RAID-0 with a drive out: writes that no drive can take) does not keep
      // the pool mounted for ever: the stop goes on, and the writes lost are named.
      const flushFailure = await controller!.flushAll().then(
        () => undefined,
        (error: unknown) => error as Error,
      );
      if (flushFailure) log.error({ err: flushFailure }, 'flush before unmount failed');
      await front!.unmount().catch((error: unknown) => log.warn({ err: error }, 'unmount failed'));
      if (front instanceof NativeFront) {
        // A debug line (issue 12): shows that 1 MiB requests were negotiated and batches formed.
        const stats = front.stats();
        console.log(
          `lunfs: native front served ${stats.requests} requests in ${stats.batches} batches (${stats.polledBatches ?? 0} found by polling); largest write ${stats.largestWriteBytes} bytes (${stats.writesOfMaxSize} of 1 MiB), largest read ${stats.largestReadBytes} bytes`,
        );
      }
      // no socket: CLI commands wait for the lock instead
      lock.record({ pid: process.pid, mountpoint });
      server!.close();
      await rm(socket, { force: true });
      const lost = await controller!.close({ dropUnwritable: flushFailure !== undefined });
      await releaseLock();
      if (lost.length > 0) {
        const what = lost
          .map(
            ({ lun, bytes, reason }) =>
              `${bytes} bytes of writes to LUN ${lun} acknowledged but not yet flushed could not be written and are lost: ${reason}`,
          )
          .join('; ');
        throw new LunfsError('EIO', `pool ${directory} unmounted, but ${what}`);
      }
      if (forcedOpenFiles.length === 0) console.log(`lunfs: pool ${directory} unmounted cleanly`);
      else
        console.log(
          `lunfs: pool ${directory} unmounted with files open (forced): ${forcedOpenFiles.join(', ')}`,
        );
    };
    const stop = new MountStop({
      files: front!,
      controller: controller!,
      log,
      poolDirectory: directory,
      shutdown: (forcedOpenFiles) => {
        void shutdown(forcedOpenFiles).then(resolveStop, (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          stopError = error;
          resolveStop();
        });
      },
    });
    registerMountStop(controller!, stop);
    const onSignal = (signal: StopSource): void => {
      stop
        .request(signal)
        .catch((error: unknown) => log.error({ err: error, signal }, 'stop request failed'));
    };
    // Not once: a signal refused while files are open leaves the mount serving, and the next one
    // decides again.
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    // The terminal of a foreground mount closing: by default it killed the process with no flush.
    process.on('SIGHUP', () => onSignal('SIGHUP'));
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
    return join(
      await realpath(dirname(mountpoint)).catch(() => dirname(mountpoint)),
      basename(mountpoint),
    );
  }
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
    if (code === 'ENOTDIR')
      throw new LunfsError('EINVAL', `mountpoint ${mountpoint} is not a directory`);
    if (code === 'ENOENT') return makeDirectory(mountpoint, 'the mountpoint');
    throw new LunfsError(
      'EINVAL',
      `cannot use ${mountpoint} as the mountpoint (${(error as Error).message.split(',')[0]})`,
      { cause: error },
    );
  }
  if (entries.length > 0)
    throw new LunfsError(
      'EINVAL',
      `mountpoint ${mountpoint} is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''})`,
    );
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
      throw new LunfsError(
        'EINVAL',
        `${absolute} is where a pool is mounted: give the pool's directory (the DIR of lunfs mount DIR ${absolute})`,
      );
    }
    throw error;
  }
  const state = poolLockState(absolute);
  const owner = state.held ? state.owner : undefined;
  if (!state.held) throw new LunfsError('EINVAL', `pool ${absolute} is not mounted`);
  if (owner?.mountpoint === undefined || owner.socket === undefined)
    throw new LunfsError(
      'EINVAL',
      `pool ${absolute} is not mounted (${owner ? `process ${owner.pid}` : 'another process'} holds it for another lunfs command, or a mount that is starting or stopping)`,
    );
  const decision = (await sendControlRequest(owner.socket, {
    command: 'unmount',
    force,
  })) as StopDecision;
  const stillHeld = (): boolean => {
    const now = poolLockState(absolute);
    return now.held && now.owner?.pid === decision.pid;
  };
  for (let waitedMs = 0; stillHeld(); waitedMs += unmountPollMs) {
    if (waitedMs >= unmountWaitMsMax)
      throw new LunfsError(
        'EBUSY',
        `the mount's process ${decision.pid} is still stopping after ${unmountWaitMsMax / 1000} s`,
      );
    await new Promise((resolveWait) => setTimeout(resolveWait, unmountPollMs));
  }
  const forced =
    decision.forcedOpenFiles.length > 0
      ? ` with files open (forced): ${decision.forcedOpenFiles.join(', ')}`
      : '';
  return `pool ${absolute} unmounted from ${owner.mountpoint}${forced}`;
}

/** Whether a lunfs FUSE mount is at this path (/proc/mounts, type fuse.lunfs). */
async function isLunfsMountpoint(path: string): Promise<boolean> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  const escaped = path.replace(
    /[ \t\n\\]/g,
    (character) => `\\${character.charCodeAt(0).toString(8).padStart(3, '0')}`,
  );
  return mounts.split('\n').some((line) => {
    const [, mountpoint, type] = line.split(' ');
    return mountpoint === escaped && type === 'fuse.lunfs';
  });
}
