// The FUSE front over fuse-native (libfuse 2): translates fuse-native's path-based calls into the
// shared Namespace (namespace.ts: the tree, what each operation does, the open handles) and lunfs
// error codes into errno values. native-front.ts serves the same Namespace over lunfs's own
// libfuse3 front; `lunfs mount --front` picks one.
// Handlers answer asynchronously; fuse-native's per-request timeout is off, `big_writes` is passed
// through its fsname option so writes arrive in 128 KiB requests, not 4 KiB.

import Fuse from 'fuse-native';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { Controller } from '../volume/controller.js';
import { errnoFor } from './errno.js';
import { type Attributes, Namespace } from './namespace.js';

type Callback = (code: number, ...results: unknown[]) => void;

export interface FuseFrontOptions {
  mountpoint: string;
  controller: Controller;
  log: Logger;
  mountedAt: Date;
}

/** What `lunfs mount` needs from a front, whichever it is. */
export interface MountedFront {
  mount(): Promise<void>;
  unmount(): Promise<void>;
  openFiles(): string[];
  readonly idleGeneration: number;
  refuseNewOpens(): void;
}

export class FuseFront implements MountedFront {
  private readonly fuse: Fuse;
  private readonly namespace: Namespace;

  constructor(private readonly options: FuseFrontOptions) {
    this.namespace = new Namespace(options.controller, options.mountedAt);
    this.fuse = new Fuse(options.mountpoint, this.operations() as never, {
      force: true, // a stale mount left by a killed process is unmounted first
      mkdir: true,
      timeout: false,
      // hard_remove: rm of an open LUN is EBUSY, not ENOSYS from libfuse's hide-by-rename.
      // attr_timeout=0: control/status changes size, and a size the kernel cached from a stat a
      // moment earlier cut the text a later open read (libfuse 2 has one attribute timeout for
      // every file; fuse-native passes none for 0). A LUN file's reads and writes ask for no
      // attributes, so only stats pay a request each.
      fsname: 'lunfs,big_writes,max_read=131072,subtype=lunfs,hard_remove,attr_timeout=0',
    });
  }

  mount(): Promise<void> {
    return new Promise((resolve, reject) =>
      this.fuse.mount((error) =>
        error
          ? reject(
              new LunfsError('EIO', `mount at ${this.options.mountpoint} failed: ${error.message}`),
            )
          : resolve(),
      ),
    );
  }

  unmount(): Promise<void> {
    return new Promise((resolve, reject) =>
      this.fuse.unmount((error) => (error ? reject(error) : resolve())),
    );
  }

  /** The LUN and snapshot files open through the mount, as 'luns/db (2 handles)', sorted. */
  openFiles(): string[] {
    return this.namespace.openFiles();
  }

  /**
   * How many times every LUN and snapshot file was closed: equal counts mean none was idle in
   * between.
   */
  get idleGeneration(): number {
    return this.namespace.idleGeneration;
  }

  /** From now on, opening a LUN or snapshot file fails with EBUSY: the mount is stopping. */
  refuseNewOpens(): void {
    this.namespace.refuseNewOpens();
  }

  /** Runs an async handler and answers cb(0, ...results) or cb(errno). */
  private answer(
    cb: Callback,
    context: Record<string, unknown>,
    work: () => Promise<unknown[]> | unknown[],
  ): void {
    Promise.resolve()
      .then(work)
      .then(
        (results) => cb(0, ...results),
        (error: unknown) => cb(errnoFor(error, this.options.log, context)),
      );
  }

  /** Runs an async handler whose answer is a count (read, write): cb(count) or cb(errno). */
  private answerCount(
    cb: (result: number) => void,
    context: Record<string, unknown>,
    work: () => Promise<number>,
  ): void {
    Promise.resolve()
      .then(work)
      .then(
        (count) => cb(count),
        (error: unknown) => cb(errnoFor(error, this.options.log, context)),
      );
  }

  private operations(): Record<string, (...args: never[]) => void> {
    const names = this.namespace;
    const stat = (attributes: Attributes): Record<string, unknown> => ({
      mtime: attributes.time,
      atime: attributes.time,
      ctime: attributes.time,
      nlink: attributes.nlink,
      size: attributes.sizeBytes,
      mode: attributes.mode,
      uid: attributes.uid,
      gid: attributes.gid,
      blksize: 4096,
      blocks: Math.ceil(attributes.sizeBytes / 512),
    });
    return {
      init: (cb: Callback) => cb(0),
      getattr: (path: string, cb: Callback) =>
        this.answer(cb, { op: 'getattr', path }, () => [stat(names.existingAttributes(path))]),
      fgetattr: (path: string, _fd: number, cb: Callback) =>
        this.answer(cb, { op: 'fgetattr', path }, () => [stat(names.existingAttributes(path))]),
      readdir: (path: string, cb: Callback) =>
        this.answer(cb, { op: 'readdir', path }, () => [names.readdir(path)]),
      statfs: (_path: string, cb: Callback) =>
        this.answer(cb, { op: 'statfs' }, () => {
          const stats = names.statfs();
          return [
            {
              bsize: stats.blockBytes,
              frsize: stats.blockBytes,
              blocks: stats.blocks,
              bfree: stats.freeBlocks,
              bavail: stats.freeBlocks,
              files: stats.files,
              ffree: stats.files,
              favail: stats.files,
              fsid: 0,
              flag: 0,
              namemax: stats.nameMax,
            },
          ];
        }),
      open: (path: string, flags: number, cb: Callback) =>
        this.answer(cb, { op: 'open', path }, () => [names.open(path, flags)]),
      create: (path: string, _mode: number, cb: Callback) =>
        this.answer(cb, { op: 'create', path }, async () => [await names.create(path)]),
      release: (_path: string, fd: number, cb: Callback) => {
        names.release(fd);
        cb(0);
      },
      read: (
        path: string,
        fd: number,
        buffer: Buffer,
        length: number,
        position: number,
        cb: (result: number) => void,
      ) =>
        this.answerCount(cb, { op: 'read', path, position, length }, () =>
          names.read(fd, buffer.subarray(0, length), position),
        ),
      write: (
        path: string,
        fd: number,
        buffer: Buffer,
        length: number,
        position: number,
        cb: (result: number) => void,
      ) =>
        this.answerCount(cb, { op: 'write', path, position, length }, () =>
          names.write(fd, buffer.subarray(0, length), position),
        ),
      flush: (path: string, fd: number, cb: Callback) =>
        this.answer(cb, { op: 'flush', path }, async () => {
          await names.flush(fd, path);
          return [];
        }),
      fsync: (path: string, _datasync: boolean, fd: number, cb: Callback) =>
        this.answer(cb, { op: 'fsync', path }, async () => {
          await names.fsync(fd);
          return [];
        }),
      truncate: (path: string, size: number, cb: Callback) =>
        this.answer(cb, { op: 'truncate', path, size }, async () => {
          await names.truncate(path, size);
          return [];
        }),
      ftruncate: (path: string, _fd: number, size: number, cb: Callback) =>
        this.answer(cb, { op: 'ftruncate', path, size }, async () => {
          await names.truncate(path, size);
          return [];
        }),
      unlink: (path: string, cb: Callback) =>
        this.answer(cb, { op: 'unlink', path }, async () => {
          await names.unlink(path);
          return [];
        }),
      utimens: (_path: string, _atime: unknown, _mtime: unknown, cb: Callback) => cb(0),
      chmod: (path: string, mode: number, cb: Callback) =>
        this.answer(cb, { op: 'chmod', path, mode }, () => {
          names.chmod(path, mode);
          return [];
        }),
      chown: (path: string, uid: number, gid: number, cb: Callback) =>
        this.answer(cb, { op: 'chown', path, uid, gid }, () => {
          names.chown(path, uid, gid);
          return [];
        }),
    };
  }
}
