// When a `lunfs mount` may stop. A request to stop (SIGINT, SIGTERM, SIGHUP, or `lunfs unmount`
// through
// the control socket) first flushes every LUN. If LUN or snapshot files are still open through
// the mount (a loop device, an ext4 on it, a VM), unmounting would give their users EIO and lose
// what they have not written yet, so the request is refused: the mount logs which files are open
// and keeps serving. The hard way stays available: another signal while files that were open at a
// refusal are still open, or `lunfs unmount --force`, stops anyway. Requests run one at a time.
//
// The kernel tells a FUSE server that a file was closed a moment after close(2) returns (a loop
// device detached with losetup -d, say), so files still open at a request get a short grace.

import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { Mutex } from '../util/mutex.js';
import type { Controller } from '../volume/controller.js';

/** How long a request waits for files closed just before it to be released by the kernel. */
const releaseGraceMs = 2000;
const releasePollMs = 50;

/** What the mount's FUSE front tells about the files open through it (see FuseFront). */
export interface OpenFileTracker {
  openFiles(): string[];
  readonly idleGeneration: number;
  refuseNewOpens(): void;
}

export interface StopDecision {
  /** The shutdown started (false: refused, files are open). */
  stopping: boolean;
  /** Files open when the stop was forced ([] for a clean stop). */
  forcedOpenFiles: string[];
  pid: number;
}

export type StopSource = 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'unmount';

export class MountStop {
  private readonly queue = new Mutex();
  private stopping = false;
  /** idleGeneration at the last refusal of a signal: another signal while still open forces. */
  private refusedAtGeneration: number | undefined;

  constructor(
    private readonly settings: {
      files: OpenFileTracker;
      controller: Controller;
      log: Logger;
      /** What the stop tells its user: the pool directory, for `lunfs unmount POOL --force`. */
      poolDirectory: string;
      /** Unmounts and closes; forcedOpenFiles is empty for a clean stop. Runs once. */
      shutdown: (forcedOpenFiles: string[]) => void;
    },
  ) {}

  /**
   * Decides on one request: stops (a clean stop when nothing is open, a forced one when `force`
   * or a repeated signal says so) or refuses. A refusal of `lunfs unmount` is an EBUSY error; a
   * refused signal is written to stderr.
   */
  request(source: StopSource, options: { force?: boolean } = {}): Promise<StopDecision> {
    return this.queue.run(async () => {
      if (this.stopping) return { stopping: true, forcedOpenFiles: [], pid: process.pid };
      const { files, controller, log } = this.settings;
      log.info({ source, force: options.force === true }, 'stop requested: flushing');
      // A flush that cannot complete (writes for a RAID-0 drive out of service) does not block the
      // stop: the shutdown flushes again, drops what no drive can take and names it.
      await controller
        .flushAll()
        .catch((error: unknown) =>
          log.error({ err: error, source }, 'flush before the stop failed; the stop goes on'),
        );
      let open = files.openFiles();
      const repeated =
        source !== 'unmount' &&
        open.length > 0 &&
        this.refusedAtGeneration === files.idleGeneration;
      const force = options.force === true || repeated;
      for (
        let waitedMs = 0;
        open.length > 0 && !force && waitedMs < releaseGraceMs;
        waitedMs += releasePollMs
      ) {
        await new Promise((resolve) => setTimeout(resolve, releasePollMs));
        open = files.openFiles();
      }
      if (open.length > 0 && !force) return this.refuse(source, open);
      this.stopping = true;
      files.refuseNewOpens();
      if (open.length > 0)
        log.warn(
          { source, openFiles: open },
          'forced stop with files open: their users get I/O errors',
        );
      else log.info({ source }, 'stopping: nothing is open');
      // after the answer to `lunfs unmount` is on its way
      setImmediate(() => this.settings.shutdown(open));
      return { stopping: true, forcedOpenFiles: open, pid: process.pid };
    });
  }

  private refuse(source: StopSource, open: string[]): StopDecision {
    const { files, log, poolDirectory } = this.settings;
    const list = `${open.length} file${open.length === 1 ? ' is' : 's are'} open through the mount: ${open.join(', ')}`;
    log.info({ source, openFiles: open }, 'stop refused: files are open');
    if (source === 'unmount') {
      throw new LunfsError(
        'EBUSY',
        `not unmounted: ${list}. Close them (umount the file system on them, losetup -d) first, or use --force (their users get I/O errors)`,
      );
    }
    this.refusedAtGeneration = files.idleGeneration;
    console.error(
      `lunfs: ${source} refused: ${list}. The cache is flushed and the pool keeps serving. Close them (umount the file system on them, losetup -d) and signal again to stop; another signal while they are open, or lunfs unmount ${poolDirectory} --force, stops anyway (their users get I/O errors).`,
    );
    return { stopping: false, forcedOpenFiles: [], pid: process.pid };
  }
}

/** The MountStop of each controller served by a mount in this process, for the control socket. */
const stops = new WeakMap<Controller, MountStop>();

export function registerMountStop(controller: Controller, stop: MountStop): void {
  stops.set(controller, stop);
}

/** The `unmount` control request: EINVAL where the pool is not served by a mount (a local open). */
export function requestUnmount(controller: Controller, force: boolean): Promise<StopDecision> {
  const stop = stops.get(controller);
  if (!stop) return Promise.reject(new LunfsError('EINVAL', 'the pool is not mounted'));
  return stop.request('unmount', { force });
}
