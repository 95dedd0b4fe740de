// The FUSE front: maps paths under the mountpoint to volumes and actions, and lunfs error codes to
// errno values. Layout:
//   /luns/NAME        a LUN as a file (read/write; truncate -s creates one, rm removes it)
//   /snapshots/LUN@NAME  a snapshot as a file (read/write: a writable snapshot; rm deletes it)
//   /clones/          snapclones (filled by a later issue)
//   /control/status   the status JSON, the same as `lunfs status --json` (read-only: EACCES)
//   /control/snapshot/   creating LUN@NAME here (touch, echo >) takes a snapshot; lists the
//                     snapshots taken, as empty files that take (and ignore) writes
// A LUN needs a size, so a file created under luns/ is only pending until truncate gives it one:
// `truncate -s 10G luns/x` (create, then ftruncate) makes a thin LUN; `touch luns/x` fails at
// close with EINVAL and leaves nothing. Files keep the mode and owner they are served with: chmod
// and chown that would change them are EPERM. The front counts the LUN and snapshot files open
// through it, so that `lunfs mount` can refuse to stop under their users (openFiles()).
// Handlers answer asynchronously; fuse-native's per-request timeout is off, `big_writes` is passed
// through its fsname option so writes arrive in 128 KiB requests, not 4 KiB.

import Fuse from 'fuse-native';
import type { BlockDevice } from '../block/block-device.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { Controller } from '../volume/controller.js';
import { checkLunName } from '../volume/pool.js';
import { errnoFor } from './errno.js';

type Callback = (code: number, ...results: unknown[]) => void;

const directoryMode = 0o40755;
const lunFileMode = 0o100644;
const controlFileMode = 0o100444;
const requestFileMode = 0o100644;
const topDirectories = ['luns', 'snapshots', 'clones', 'control'];
/** open(2) flags: the access mode bits and the read-only value. */
const accessModeMask = 3;
const readOnlyAccess = 0;
/** chown(2)'s "leave unchanged", as fuse-native passes it (unsigned) or as a signed -1. */
const unchangedId = [0xffffffff, -1];

type Target =
  | { kind: 'directory'; entries: () => string[] }
  | { kind: 'lun'; name: string }
  | { kind: 'snapshot'; name: string }
  | { kind: 'status' }
  | { kind: 'snapshot-request'; name: string }
  | { kind: 'pending-lun'; name: string }
  | { kind: 'none' };

/** What an open handle serves. */
interface Handle {
  lun?: string;
  snapshot?: string;
  /** Created under luns/ and not yet given a size: no LUN exists yet. */
  pendingLun?: string;
  text?: Buffer;
  /** A control/snapshot request: writes are taken and ignored (`echo > control/snapshot/L@N`). */
  discardsWrites?: boolean;
}

export interface FuseFrontOptions {
  mountpoint: string;
  controller: Controller;
  log: Logger;
  mountedAt: Date;
}

export class FuseFront {
  private readonly fuse: Fuse;
  private nextHandle = 10;
  /** Per open handle: the LUN it belongs to, or the status text frozen at open. */
  private readonly handles = new Map<number, Handle>();
  /** Names created under luns/ that wait for a size, with their open handle counts. */
  private readonly pendingLuns = new Map<string, number>();
  /** Rises each time the last LUN or snapshot file open through the front is closed. */
  private idleCount = 0;
  /** Set once the mount stops: new opens of LUN and snapshot files are refused (EBUSY). */
  private closing = false;

  constructor(private readonly options: FuseFrontOptions) {
    this.fuse = new Fuse(options.mountpoint, this.operations() as never, {
      force: true, // a stale mount left by a killed process is unmounted first
      mkdir: true,
      timeout: false,
      fsname: 'lunfs,big_writes,max_read=131072,subtype=lunfs,hard_remove', // hard_remove: rm of an open LUN is EBUSY, not ENOSYS from libfuse's hide-by-rename
    });
  }

  mount(): Promise<void> {
    return new Promise((resolve, reject) => this.fuse.mount((error) => (error ? reject(new LunfsError('EIO', `mount at ${this.options.mountpoint} failed: ${error.message}`)) : resolve())));
  }

  unmount(): Promise<void> {
    return new Promise((resolve, reject) => this.fuse.unmount((error) => (error ? reject(error) : resolve())));
  }

  /** The LUN and snapshot files open through the mount, as 'luns/db (2 handles)', sorted. */
  openFiles(): string[] {
    const counts = new Map<string, number>();
    for (const handle of this.handles.values()) {
      const path = handle.lun !== undefined ? `luns/${handle.lun}` : handle.snapshot !== undefined ? `snapshots/${handle.snapshot}` : undefined;
      if (path !== undefined) counts.set(path, (counts.get(path) ?? 0) + 1);
    }
    return [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([path, count]) => `${path} (${count} handle${count === 1 ? '' : 's'})`);
  }

  /** How many times every LUN and snapshot file was closed: equal counts mean none was idle in between. */
  get idleGeneration(): number {
    return this.idleCount;
  }

  /** From now on, opening a LUN or snapshot file fails with EBUSY: the mount is stopping. */
  refuseNewOpens(): void {
    this.closing = true;
  }

  private resolve(path: string): Target {
    const controller = this.options.controller;
    if (path === '/') return { kind: 'directory', entries: () => topDirectories };
    if (path === '/luns') return { kind: 'directory', entries: () => [...new Set([...controller.pool.userLuns().map((lun) => lun.name), ...this.pendingLuns.keys()])] };
    if (path === '/snapshots' || path === '/control/snapshot') return { kind: 'directory', entries: () => controller.listSnapshots().map((snapshot) => snapshot.name) };
    if (path === '/clones') return { kind: 'directory', entries: () => [] };
    if (path === '/control') return { kind: 'directory', entries: () => ['status', 'snapshot'] };
    if (path === '/control/status') return { kind: 'status' };
    const match = /^\/luns\/([^/]+)$/.exec(path);
    if (match && controller.pool.hasLun(match[1]!)) return { kind: 'lun', name: match[1]! };
    if (match && this.pendingLuns.has(match[1]!)) return { kind: 'pending-lun', name: match[1]! };
    const snapshot = /^\/snapshots\/([^/]+)$/.exec(path);
    if (snapshot && controller.hasSnapshot(snapshot[1]!)) return { kind: 'snapshot', name: snapshot[1]! };
    // After touch created it, the request shows as an empty file while the snapshot exists.
    const request = /^\/control\/snapshot\/([^/]+)$/.exec(path);
    if (request && controller.hasSnapshot(request[1]!)) return { kind: 'snapshot-request', name: request[1]! };
    return { kind: 'none' };
  }

  private statusText(): Buffer {
    return Buffer.from(JSON.stringify(this.options.controller.status(), null, 2) + '\n');
  }

  private stat(mode: number, sizeBytes: number): Record<string, unknown> {
    const time = this.options.mountedAt;
    return { mtime: time, atime: time, ctime: time, nlink: mode === directoryMode ? 2 : 1, size: sizeBytes, mode, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, blksize: 4096, blocks: Math.ceil(sizeBytes / 512) };
  }

  private attributes(path: string): Record<string, unknown> | undefined {
    const target = this.resolve(path);
    switch (target.kind) {
      case 'directory': return this.stat(directoryMode, 4096);
      case 'lun': return this.stat(lunFileMode, this.options.controller.pool.lunByName(target.name).sizeBytes);
      case 'snapshot': return this.stat(lunFileMode, this.options.controller.snapshotVolume(target.name).sizeBytes);
      case 'status': return this.stat(controlFileMode, this.statusText().length);
      case 'snapshot-request': return this.stat(requestFileMode, 0);
      case 'pending-lun': return this.stat(lunFileMode, 0);
      case 'none': return undefined;
    }
  }

  /** Runs an async handler and answers cb(0, ...results) or cb(errno). */
  private answer(cb: Callback, context: Record<string, unknown>, work: () => Promise<unknown[]> | unknown[]): void {
    Promise.resolve()
      .then(work)
      .then((results) => cb(0, ...results), (error: unknown) => cb(errnoFor(error, this.options.log, context)));
  }

  private operations(): Record<string, (...args: never[]) => void> {
    const controller = this.options.controller;
    const log = this.options.log;
    const lunNameOf = (path: string): string => {
      const match = /^\/luns\/([^/]+)$/.exec(path);
      if (!match) throw new LunfsError('EINVAL', `${path} is not under luns/`);
      return match[1]!;
    };
    return {
      init: (cb: Callback) => cb(0),
      getattr: (path: string, cb: Callback) => this.answer(cb, { op: 'getattr', path }, () => {
        const attributes = this.attributes(path);
        if (!attributes) throw new LunfsError('ENOENT', `${path} does not exist`);
        return [attributes];
      }),
      fgetattr: (path: string, _fd: number, cb: Callback) => this.answer(cb, { op: 'fgetattr', path }, () => {
        const attributes = this.attributes(path);
        if (!attributes) throw new LunfsError('ENOENT', `${path} does not exist`);
        return [attributes];
      }),
      readdir: (path: string, cb: Callback) => this.answer(cb, { op: 'readdir', path }, () => {
        const target = this.resolve(path);
        if (target.kind !== 'directory') throw new LunfsError('ENOENT', `${path} is not a directory`);
        return [target.entries()];
      }),
      statfs: (_path: string, cb: Callback) => this.answer(cb, { op: 'statfs' }, () => {
        const total = controller.pool.capacityBytes() / 4096;
        const free = controller.pool.freeBytes() / 4096;
        return [{ bsize: 4096, frsize: 4096, blocks: total, bfree: free, bavail: free, files: 1000, ffree: 1000, favail: 1000, fsid: 0, flag: 0, namemax: 63 }];
      }),
      open: (path: string, flags: number, cb: Callback) => this.answer(cb, { op: 'open', path }, () => {
        const target = this.resolve(path);
        if ((target.kind === 'lun' || target.kind === 'snapshot') && this.closing) throw new LunfsError('EBUSY', `${path}: the pool is being unmounted`);
        const handle = this.nextHandle++;
        if (target.kind === 'lun') {
          controller.stack(target.name);
          controller.opened(target.name);
          this.handles.set(handle, { lun: target.name });
        } else if (target.kind === 'snapshot') {
          controller.snapshotVolume(target.name);
          controller.opened(target.name);
          this.handles.set(handle, { snapshot: target.name });
        } else if (target.kind === 'status') {
          if ((flags & accessModeMask) !== readOnlyAccess) throw new LunfsError('EACCES', `${path} is read-only`);
          this.handles.set(handle, { text: this.statusText() });
        } else if (target.kind === 'snapshot-request') {
          this.handles.set(handle, { text: Buffer.alloc(0), discardsWrites: true });
        } else if (target.kind === 'pending-lun') {
          this.pendingLuns.set(target.name, (this.pendingLuns.get(target.name) ?? 0) + 1);
          this.handles.set(handle, { pendingLun: target.name });
        } else {
          throw new LunfsError('ENOENT', `${path} does not exist`);
        }
        return [handle];
      }),
      create: (path: string, _mode: number, cb: Callback) => this.answer(cb, { op: 'create', path }, async () => {
        const request = /^\/control\/snapshot\/([^/]+)$/.exec(path);
        if (request) {
          // touch (or echo >) control/snapshot/LUN@NAME: the snapshot is taken; the handle reads as empty.
          await controller.createSnapshot(request[1]!);
          const handle = this.nextHandle++;
          this.handles.set(handle, { text: Buffer.alloc(0), discardsWrites: true });
          return [handle];
        }
        // A LUN is made by the truncate that gives it a size; until then the name is pending.
        const name = lunNameOf(path);
        checkLunName(name);
        if (controller.pool.hasLun(name)) throw new LunfsError('EEXIST', `a LUN named '${name}' exists already`);
        if (this.closing) throw new LunfsError('EBUSY', `${path}: the pool is being unmounted`);
        const handle = this.nextHandle++;
        this.pendingLuns.set(name, (this.pendingLuns.get(name) ?? 0) + 1);
        this.handles.set(handle, { pendingLun: name });
        return [handle];
      }),
      release: (_path: string, fd: number, cb: Callback) => {
        const handle = this.handles.get(fd);
        this.handles.delete(fd);
        if (handle?.lun) controller.released(handle.lun);
        if (handle?.snapshot) controller.released(handle.snapshot);
        if (handle?.pendingLun !== undefined) this.dropPending(handle.pendingLun);
        if ((handle?.lun !== undefined || handle?.snapshot !== undefined) && this.openFiles().length === 0) this.idleCount += 1;
        cb(0);
      },
      read: (path: string, fd: number, buffer: Buffer, length: number, position: number, cb: (result: number) => void) => {
        const handle = this.handles.get(fd);
        if (handle?.text) {
          const count = Math.max(0, Math.min(length, handle.text.length - position));
          handle.text.copy(buffer, 0, position, position + count);
          cb(count);
          return;
        }
        const device = this.deviceOf(handle);
        if (!device) {
          cb(Fuse.EBADF);
          return;
        }
        const count = Math.max(0, Math.min(length, device.sizeBytes - position));
        if (count === 0) {
          cb(0);
          return;
        }
        device.read(position, buffer.subarray(0, count)).then(
          () => cb(count),
          (error: unknown) => cb(errnoFor(error, log, { op: 'read', path, position, length })),
        );
      },
      write: (path: string, fd: number, buffer: Buffer, length: number, position: number, cb: (result: number) => void) => {
        const handle = this.handles.get(fd);
        if (handle?.discardsWrites) {
          cb(length);
          return;
        }
        if (handle?.pendingLun !== undefined) {
          log.debug({ path, position, length }, 'write to a LUN that has no size yet');
          cb(Fuse.EFBIG);
          return;
        }
        const device = this.deviceOf(handle);
        if (!device) {
          cb(Fuse.EBADF);
          return;
        }
        if (position + length > device.sizeBytes) {
          log.debug({ path, position, length }, 'write past the end of the volume');
          cb(Fuse.EFBIG);
          return;
        }
        device.write(position, buffer.subarray(0, length)).then(
          () => cb(length),
          (error: unknown) => cb(errnoFor(error, log, { op: 'write', path, position, length })),
        );
      },
      flush: (path: string, fd: number, cb: Callback) => this.answer(cb, { op: 'flush', path }, async () => {
        const handle = this.handles.get(fd);
        // close(2) of a file created under luns/ and never given a size: `touch luns/x` fails here.
        if (handle?.pendingLun !== undefined) throw new LunfsError('EINVAL', `LUN '${handle.pendingLun}' was not created: a LUN needs a size (truncate -s SIZE ${path.slice(1)})`);
        await this.deviceOf(handle)?.flush();
        return [];
      }),
      fsync: (path: string, _datasync: boolean, fd: number, cb: Callback) => this.answer(cb, { op: 'fsync', path }, async () => {
        await this.deviceOf(this.handles.get(fd))?.flush();
        return [];
      }),
      truncate: (path: string, size: number, cb: Callback) => this.answer(cb, { op: 'truncate', path, size }, async () => {
        await this.truncate(path, size);
        return [];
      }),
      ftruncate: (path: string, _fd: number, size: number, cb: Callback) => this.answer(cb, { op: 'ftruncate', path, size }, async () => {
        await this.truncate(path, size);
        return [];
      }),
      unlink: (path: string, cb: Callback) => this.answer(cb, { op: 'unlink', path }, async () => {
        const target = this.resolve(path);
        if (target.kind === 'pending-lun') this.pendingLuns.delete(target.name);
        else if (target.kind === 'snapshot') await controller.removeSnapshot(target.name);
        else if (target.kind === 'status' || target.kind === 'snapshot-request') throw new LunfsError('EPERM', `${path} cannot be removed${target.kind === 'snapshot-request' ? `: remove snapshots/${target.name}` : ''}`);
        else await controller.removeLun(lunNameOf(path));
        return [];
      }),
      utimens: (_path: string, _atime: unknown, _mtime: unknown, cb: Callback) => cb(0),
      chmod: (path: string, mode: number, cb: Callback) => this.answer(cb, { op: 'chmod', path, mode }, () => {
        const current = this.existingAttributes(path).mode as number;
        if ((mode & 0o7777) !== (current & 0o7777)) throw new LunfsError('EPERM', `${path} keeps mode ${(current & 0o7777).toString(8)}`);
        return [];
      }),
      chown: (path: string, uid: number, gid: number, cb: Callback) => this.answer(cb, { op: 'chown', path, uid, gid }, () => {
        const current = this.existingAttributes(path);
        if ((!unchangedId.includes(uid) && uid !== current.uid) || (!unchangedId.includes(gid) && gid !== current.gid)) throw new LunfsError('EPERM', `${path} keeps owner ${String(current.uid)}:${String(current.gid)}`);
        return [];
      }),
    };
  }

  private existingAttributes(path: string): Record<string, unknown> {
    const attributes = this.attributes(path);
    if (!attributes) throw new LunfsError('ENOENT', `${path} does not exist`);
    return attributes;
  }

  /** One handle of a pending LUN is closed (or the LUN was made): forget the name with its last one. */
  private dropPending(name: string): void {
    const count = (this.pendingLuns.get(name) ?? 0) - 1;
    if (count > 0) this.pendingLuns.set(name, count);
    else this.pendingLuns.delete(name);
  }

  /** The block device a handle reads and writes: a LUN's cache, or a snapshot volume. */
  private deviceOf(handle: Handle | undefined): BlockDevice | undefined {
    if (handle?.lun) return this.options.controller.stack(handle.lun).cache;
    if (handle?.snapshot) return this.options.controller.snapshotVolume(handle.snapshot);
    return undefined;
  }

  private async truncate(path: string, sizeBytes: number): Promise<void> {
    const target = this.resolve(path);
    if (target.kind === 'snapshot') {
      if (sizeBytes === this.options.controller.snapshotVolume(target.name).sizeBytes) return; // O_TRUNC-free opens of the same size
      throw new LunfsError('EINVAL', `${path} is a snapshot: its size is fixed`);
    }
    if (target.kind === 'snapshot-request' && sizeBytes === 0) return; // `echo > control/snapshot/L@N` again: O_TRUNC of the empty file
    if (target.kind === 'status') throw new LunfsError('EACCES', `${path} is read-only`);
    if (target.kind === 'pending-lun') {
      await this.createPendingLun(target.name, sizeBytes);
      return;
    }
    if (target.kind !== 'lun') throw new LunfsError(target.kind === 'none' ? 'ENOENT' : 'EINVAL', `${path} is not a LUN`);
    await this.options.controller.resizeLun(target.name, sizeBytes);
  }

  /** The truncate that gives a pending name its size makes the LUN; its open handles become the LUN's. */
  private async createPendingLun(name: string, sizeBytes: number): Promise<void> {
    if (sizeBytes === 0) throw new LunfsError('EINVAL', 'LUN size must be larger than 0');
    await this.options.controller.createLun(name, sizeBytes);
    for (const handle of this.handles.values()) {
      if (handle.pendingLun !== name) continue;
      delete handle.pendingLun;
      handle.lun = name;
      this.options.controller.opened(name);
    }
    this.pendingLuns.delete(name);
  }
}
