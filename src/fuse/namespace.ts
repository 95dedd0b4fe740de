// The tree both FUSE fronts serve (fuse-front.ts over fuse-native, native-front.ts over lunfs's own
// libfuse3 front): which path is what, what each operation does to it, and the open handles. The
// fronts only translate their library's calls into these methods and LunfsError codes into errno.
// Layout:
//   /luns/NAME        a LUN as a file (read/write; truncate -s creates one, rm removes it)
//   /snapshots/LUN@NAME  a snapshot as a file (read/write: a writable snapshot; rm deletes it)
//   /clones/NAME      a snapclone whose BGCOPY runs (read/write; it moves to luns/ when done)
//   /control/status   the status JSON, the same as `lunfs status --json` (read-only: EACCES)
//   /control/snapshot/   creating LUN@NAME here (touch, echo >) takes a snapshot of the LUN,
//                     LUN@SOURCE@NAME a snapshot LUN@NAME of the snapshot LUN@SOURCE; lists the
//                     snapshots taken, as empty files that take (and ignore) writes
//   /control/snapclone/  creating SOURCE@NAME here makes clone NAME of LUN (or clone) SOURCE,
//                     LUN@SNAP@NAME of the snapshot LUN@SNAP
//   /control/snappoint/  creating LUN@NAME here starts snap-point map NAME of the LUN (changed
//                     block tracking); lists the maps as empty files; rm removes one
// A LUN needs a size, so a file created under luns/ is only pending until truncate gives it one:
// `truncate -s 10G luns/x` (create, then ftruncate) makes a thin LUN; `touch luns/x` fails at
// close with EINVAL and leaves nothing. Files keep the mode and owner they are served with: chmod
// and chown that would change them are EPERM. The namespace counts the LUN and snapshot files open
// through it, so that `lunfs mount` can refuse to stop under their users (openFiles()).

import type { BlockDevice } from '../block/block-device.js';
import { LunfsError } from '../util/errors.js';
import { parseSnapshotRequest, type Controller } from '../volume/controller.js';
import { checkLunName } from '../pool/pool-luns.js';

export const directoryMode = 0o40755;
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
  | { kind: 'snap-point'; name: string }
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

export interface Attributes {
  mode: number;
  sizeBytes: number;
  nlink: number;
  uid: number;
  gid: number;
  time: Date;
  /**
   * The size changes at any moment (control/status): a front must not let the kernel cache these
   * attributes, or an fstat after open answers a size from before the handle froze its text.
   */
  volatile?: boolean;
}

export interface FileSystemStats {
  blockBytes: number;
  blocks: number;
  freeBlocks: number;
  files: number;
  nameMax: number;
}

/** fallocate(2) mode bits (linux/falloc.h). */
export const fallocateKeepSize = 0x01;
export const fallocatePunchHole = 0x02;
export const fallocateZeroRange = 0x10;

export class Namespace {
  private nextHandle = 10;
  /** Per open handle: the LUN it belongs to, or the status text frozen at open. */
  private readonly handles = new Map<number, Handle>();
  /** Names created under luns/ that wait for a size, with their open handle counts. */
  private readonly pendingLuns = new Map<string, number>();
  /**
   * The status text the newest open handle of control/status froze, while it is open: its size is
   * what getattr reports then. A reader opens, then stats for the size, then reads that many bytes
   * (Node's readFile, and the page cache of a front without direct I/O): a size taken from the
   * status as it is a moment later would cut the text it reads, or pad it with zeros.
   */
  private openStatus: { fd: number; text: Buffer } | undefined;
  /** Rises each time the last LUN or snapshot file open through the front is closed. */
  private idleCount = 0;
  /** Set once the mount stops: new opens of LUN and snapshot files are refused (EBUSY). */
  private closing = false;

  constructor(
    private readonly controller: Controller,
    private readonly mountedAt: Date,
  ) {}

  /** The LUN and snapshot files open through the mount, as 'luns/db (2 handles)', sorted. */
  openFiles(): string[] {
    const counts = new Map<string, number>();
    for (const handle of this.handles.values()) {
      const path =
        handle.lun !== undefined
          ? `luns/${handle.lun}`
          : handle.snapshot !== undefined
            ? `snapshots/${handle.snapshot}`
            : undefined;
      if (path !== undefined) counts.set(path, (counts.get(path) ?? 0) + 1);
    }
    return [...counts.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([path, count]) => `${path} (${count} handle${count === 1 ? '' : 's'})`);
  }

  /**
   * How many times every LUN and snapshot file was closed: equal counts mean none was idle in
   * between.
   */
  get idleGeneration(): number {
    return this.idleCount;
  }

  /** From now on, opening a LUN or snapshot file fails with EBUSY: the mount is stopping. */
  refuseNewOpens(): void {
    this.closing = true;
  }

  private resolve(path: string): Target {
    const controller = this.controller;
    if (path === '/') return { kind: 'directory', entries: () => topDirectories };
    if (path === '/luns')
      return {
        kind: 'directory',
        entries: () => [
          ...new Set([
            ...controller.pool
              .userLuns()
              .filter((lun) => !lun.cloneOf)
              .map((lun) => lun.name),
            ...this.pendingLuns.keys(),
          ]),
        ],
      };
    if (path === '/snapshots' || path === '/control/snapshot')
      return {
        kind: 'directory',
        entries: () => controller.listSnapshots().map((snapshot) => snapshot.name),
      };
    // snapclones whose BGCOPY runs; each moves to luns/ when it ends (open files stay open)
    const underCopy = () => controller.pool.userLuns().filter((lun) => lun.cloneOf);
    if (path === '/clones')
      return { kind: 'directory', entries: () => underCopy().map((lun) => lun.name) };
    if (path === '/control/snapclone')
      return {
        kind: 'directory',
        entries: () => underCopy().map((lun) => `${lun.cloneOf!.source}@${lun.name}`),
      };
    if (path === '/control')
      return {
        kind: 'directory',
        entries: () => ['status', 'snapshot', 'snapclone', 'snappoint'],
      };
    if (path === '/control/snappoint')
      return {
        kind: 'directory',
        entries: () => controller.snapPoints.list().map((snapPoint) => snapPoint.name),
      };
    const snapPoint = /^\/control\/snappoint\/([^/]+)$/.exec(path);
    if (snapPoint && controller.snapPoints.has(snapPoint[1]!))
      return { kind: 'snap-point', name: snapPoint[1]! };
    if (path === '/control/status') return { kind: 'status' };
    const match = /^\/luns\/([^/]+)$/.exec(path);
    if (match && controller.pool.hasLun(match[1]!) && !controller.pool.lunByName(match[1]!).cloneOf)
      return { kind: 'lun', name: match[1]! };
    // A clone's file stays at clones/NAME for those who opened it there, after its BGCOPY too: the
    // kernel looks its attributes up by path while the file is open.
    const clone = /^\/clones\/([^/]+)$/.exec(path);
    if (
      clone &&
      controller.pool.hasLun(clone[1]!) &&
      (controller.pool.lunByName(clone[1]!).cloneOf || controller.openCount(clone[1]!) > 0)
    )
      return { kind: 'lun', name: clone[1]! };
    // After touch made it, SOURCE@NAME shows as an empty file while NAME's BGCOPY runs.
    const cloneRequest = /^\/control\/snapclone\/(.+)@([^@/]+)$/.exec(path);
    if (
      cloneRequest &&
      controller.pool.hasLun(cloneRequest[2]!) &&
      controller.pool.lunByName(cloneRequest[2]!).cloneOf?.source === cloneRequest[1]
    )
      return { kind: 'snapshot-request', name: `${cloneRequest[1]}@${cloneRequest[2]}` };
    if (match && this.pendingLuns.has(match[1]!)) return { kind: 'pending-lun', name: match[1]! };
    const snapshot = /^\/snapshots\/([^/]+)$/.exec(path);
    if (snapshot && controller.hasSnapshot(snapshot[1]!))
      return { kind: 'snapshot', name: snapshot[1]! };
    // After touch created it, the request shows as an empty file while the snapshot exists.
    const request = /^\/control\/snapshot\/([^/]+)$/.exec(path);
    if (request && controller.hasSnapshot(request[1]!, { request: true }))
      return { kind: 'snapshot-request', name: request[1]! };
    return { kind: 'none' };
  }

  private statusText(): Buffer {
    return Buffer.from(JSON.stringify(this.controller.status(), null, 2) + '\n');
  }

  private stat(mode: number, sizeBytes: number): Attributes {
    return {
      mode,
      sizeBytes,
      nlink: mode === directoryMode ? 2 : 1,
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      time: this.mountedAt,
    };
  }

  /** The attributes of path, or undefined when nothing is there. */
  attributes(path: string): Attributes | undefined {
    const target = this.resolve(path);
    switch (target.kind) {
      case 'directory':
        return this.stat(directoryMode, 4096);
      case 'lun':
        return this.stat(lunFileMode, this.controller.pool.lunByName(target.name).sizeBytes);
      case 'snapshot':
        return this.stat(lunFileMode, this.controller.snapshotVolume(target.name).sizeBytes);
      case 'status':
        return {
          ...this.stat(controlFileMode, (this.openStatus?.text ?? this.statusText()).length),
          volatile: true,
        };
      case 'snapshot-request':
      case 'snap-point':
        return this.stat(requestFileMode, 0);
      case 'pending-lun':
        return this.stat(lunFileMode, 0);
      case 'none':
        return undefined;
    }
  }

  existingAttributes(path: string): Attributes {
    const attributes = this.attributes(path);
    if (!attributes) throw new LunfsError('ENOENT', `${path} does not exist`);
    return attributes;
  }

  readdir(path: string): string[] {
    const target = this.resolve(path);
    if (target.kind !== 'directory') throw new LunfsError('ENOENT', `${path} is not a directory`);
    return target.entries();
  }

  statfs(): FileSystemStats {
    return {
      blockBytes: 4096,
      blocks: this.controller.pool.capacityBytes() / 4096,
      freeBlocks: this.controller.pool.freeBytes() / 4096,
      files: 1000,
      nameMax: 63,
    };
  }

  open(path: string, flags: number): number {
    const controller = this.controller;
    const target = this.resolve(path);
    if ((target.kind === 'lun' || target.kind === 'snapshot') && this.closing)
      throw new LunfsError('EBUSY', `${path}: the pool is being unmounted`);
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
      if ((flags & accessModeMask) !== readOnlyAccess)
        throw new LunfsError('EACCES', `${path} is read-only`);
      const text = this.statusText();
      this.handles.set(handle, { text });
      this.openStatus = { fd: handle, text };
    } else if (target.kind === 'snapshot-request' || target.kind === 'snap-point') {
      this.handles.set(handle, { text: Buffer.alloc(0), discardsWrites: true });
    } else if (target.kind === 'pending-lun') {
      this.pendingLuns.set(target.name, (this.pendingLuns.get(target.name) ?? 0) + 1);
      this.handles.set(handle, { pendingLun: target.name });
    } else {
      throw new LunfsError('ENOENT', `${path} does not exist`);
    }
    return handle;
  }

  /** Whether a handle serves a text frozen at open (its size is known only by reading it). */
  servesText(fd: number): boolean {
    return this.handles.get(fd)?.text !== undefined;
  }

  async create(path: string): Promise<number> {
    const controller = this.controller;
    const cloneRequest = /^\/control\/snapclone\/([^/]+)$/.exec(path);
    if (cloneRequest) {
      // touch control/snapclone/SOURCE@NAME: clone NAME of LUN SOURCE (or of LUN@SNAP@NAME's
      // snapshot); it appears under clones/ at once, BGCOPY runs in the background.
      const spec = cloneRequest[1]!;
      const at = spec.lastIndexOf('@');
      if (at <= 0)
        throw new LunfsError('EINVAL', `'${spec}' is not a clone request: use SOURCE@NAME`);
      await controller.createClone(spec.slice(0, at), spec.slice(at + 1));
      const handle = this.nextHandle++;
      this.handles.set(handle, { text: Buffer.alloc(0), discardsWrites: true });
      return handle;
    }
    const snapPointRequest = /^\/control\/snappoint\/([^/]+)$/.exec(path);
    if (snapPointRequest) {
      // touch control/snappoint/LUN@NAME: map NAME of the LUN starts marking changes
      await controller.snapPoints.create(snapPointRequest[1]!);
      const handle = this.nextHandle++;
      this.handles.set(handle, { text: Buffer.alloc(0), discardsWrites: true });
      return handle;
    }
    const request = /^\/control\/snapshot\/([^/]+)$/.exec(path);
    if (request) {
      // touch (or echo >) control/snapshot/LUN@NAME: the snapshot is taken; the handle reads as
      // empty.
      await controller.createSnapshot(request[1]!);
      const handle = this.nextHandle++;
      this.handles.set(handle, { text: Buffer.alloc(0), discardsWrites: true });
      return handle;
    }
    if (path.startsWith('/clones/'))
      throw new LunfsError(
        'EPERM',
        `${path}: a clone is made by touch control/snapclone/SOURCE@NAME or lunfs clone`,
      );
    // A LUN is made by the truncate that gives it a size; until then the name is pending.
    const name = lunNameOf(path);
    checkLunName(name);
    if (controller.pool.hasLun(name))
      throw new LunfsError('EEXIST', `a LUN named '${name}' exists already`);
    if (this.closing) throw new LunfsError('EBUSY', `${path}: the pool is being unmounted`);
    const handle = this.nextHandle++;
    this.pendingLuns.set(name, (this.pendingLuns.get(name) ?? 0) + 1);
    this.handles.set(handle, { pendingLun: name });
    return handle;
  }

  release(fd: number): void {
    const handle = this.handles.get(fd);
    this.handles.delete(fd);
    if (this.openStatus?.fd === fd) this.openStatus = undefined;
    if (handle?.lun) this.controller.released(handle.lun);
    if (handle?.snapshot) this.controller.released(handle.snapshot);
    if (handle?.pendingLun !== undefined) this.dropPending(handle.pendingLun);
    if (
      (handle?.lun !== undefined || handle?.snapshot !== undefined) &&
      this.openFiles().length === 0
    )
      this.idleCount += 1;
  }

  /** Reads into target (at most its length) at position; returns the count read (0 at the end). */
  async read(fd: number, target: Buffer, position: number): Promise<number> {
    const handle = this.handles.get(fd);
    if (handle?.text) {
      const count = Math.max(0, Math.min(target.length, handle.text.length - position));
      handle.text.copy(target, 0, position, position + count);
      return count;
    }
    const device = this.deviceOf(fd);
    const count = Math.max(0, Math.min(target.length, device.sizeBytes - position));
    if (count > 0) await device.read(position, target.subarray(0, count));
    return count;
  }

  /** Writes data at position; returns its length. */
  async write(fd: number, data: Buffer, position: number): Promise<number> {
    const handle = this.handles.get(fd);
    if (handle?.discardsWrites) return data.length;
    if (handle?.pendingLun !== undefined)
      throw new LunfsError('EFBIG', `LUN '${handle.pendingLun}' has no size yet`);
    const device = this.deviceOf(fd);
    if (position + data.length > device.sizeBytes)
      throw new LunfsError(
        'EFBIG',
        `write of ${data.length} bytes at ${position} past the end of the volume`,
      );
    if (handle?.lun === undefined) {
      await device.write(position, data);
      return data.length;
    }
    // a migration's final pass holds the LUN's writes for a moment
    const entered = this.controller.enterWrite(handle.lun);
    const release = typeof entered === 'function' ? entered : await entered;
    try {
      await device.write(position, data);
    } finally {
      release();
    }
    return data.length;
  }

  /**
   * fallocate(2): punch-hole (with keep-size) is a discard; zero-range writes zeros (a discard
   * reads
   * back as zeros, so it is one too, and frees the units it covers wholly). Other modes: ENOTSUP.
   */
  async fallocate(fd: number, mode: number, position: number, lengthBytes: number): Promise<void> {
    const isPunch = mode === (fallocatePunchHole | fallocateKeepSize);
    const isZero = mode === fallocateZeroRange || mode === (fallocateZeroRange | fallocateKeepSize);
    if (!isPunch && !isZero)
      throw new LunfsError(
        'ENOTSUP',
        `fallocate mode 0x${mode.toString(16)} is not supported (only punch-hole with keep-size, and zero-range)`,
      );
    const device = this.deviceOf(fd);
    if (position >= device.sizeBytes) {
      if (isPunch) return; // nothing there to punch
      throw new LunfsError('EFBIG', `zero-range at ${position} past the end of the volume`);
    }
    const end = Math.min(device.sizeBytes, position + lengthBytes);
    if (isZero && position + lengthBytes > device.sizeBytes && (mode & fallocateKeepSize) === 0)
      throw new LunfsError(
        'EFBIG',
        'zero-range past the end of the volume: a LUN does not grow by fallocate',
      );
    const lun = this.handles.get(fd)?.lun;
    if (lun === undefined) return device.discard(position, end - position);
    const entered = this.controller.enterWrite(lun);
    const release = typeof entered === 'function' ? entered : await entered;
    try {
      await device.discard(position, end - position);
    } finally {
      release();
    }
  }

  async flush(fd: number, path: string): Promise<void> {
    const handle = this.handles.get(fd);
    // close(2) of a file created under luns/ and never given a size: `touch luns/x` fails here.
    if (handle?.pendingLun !== undefined)
      throw new LunfsError(
        'EINVAL',
        `LUN '${handle.pendingLun}' was not created: a LUN needs a size (truncate -s SIZE ${path.slice(1)})`,
      );
    if (handle?.lun !== undefined || handle?.snapshot !== undefined)
      await this.deviceOf(fd).flush();
  }

  async fsync(fd: number): Promise<void> {
    const handle = this.handles.get(fd);
    if (handle?.lun !== undefined || handle?.snapshot !== undefined)
      await this.deviceOf(fd).flush();
  }

  async unlink(path: string): Promise<void> {
    const target = this.resolve(path);
    if (target.kind === 'pending-lun') this.pendingLuns.delete(target.name);
    else if (target.kind === 'snapshot') await this.controller.removeSnapshot(target.name);
    else if (target.kind === 'snap-point') await this.controller.snapPoints.remove(target.name);
    else if (target.kind === 'status' || target.kind === 'snapshot-request')
      throw new LunfsError(
        'EPERM',
        `${path} cannot be removed${target.kind !== 'snapshot-request' ? '' : path.startsWith('/control/snapclone/') ? `: remove clones/${target.name.split('@').at(-1)!} or luns/${target.name.split('@').at(-1)!}` : `: remove snapshots/${madeBy(target.name)}`}`,
      );
    else await this.controller.removeLun(lunNameOf(path));
  }

  chmod(path: string, mode: number): void {
    const current = this.existingAttributes(path).mode;
    if ((mode & 0o7777) !== (current & 0o7777))
      throw new LunfsError('EPERM', `${path} keeps mode ${(current & 0o7777).toString(8)}`);
  }

  /** uid or gid of -1 (or its unsigned form) leaves that id alone. */
  chown(path: string, uid: number, gid: number): void {
    const current = this.existingAttributes(path);
    if (
      (!unchangedId.includes(uid) && uid !== current.uid) ||
      (!unchangedId.includes(gid) && gid !== current.gid)
    )
      throw new LunfsError(
        'EPERM',
        `${path} keeps owner ${String(current.uid)}:${String(current.gid)}`,
      );
  }

  async truncate(path: string, sizeBytes: number): Promise<void> {
    const target = this.resolve(path);
    if (target.kind === 'snapshot') {
      // O_TRUNC-free opens of the same size
      if (sizeBytes === this.controller.snapshotVolume(target.name).sizeBytes) return;
      throw new LunfsError('EINVAL', `${path} is a snapshot: its size is fixed`);
    }
    // `echo > control/snapshot/L@N` again: O_TRUNC of the empty file
    if ((target.kind === 'snapshot-request' || target.kind === 'snap-point') && sizeBytes === 0)
      return;
    if (target.kind === 'status') throw new LunfsError('EACCES', `${path} is read-only`);
    if (target.kind === 'pending-lun') {
      await this.createPendingLun(target.name, sizeBytes);
      return;
    }
    if (target.kind !== 'lun')
      throw new LunfsError(target.kind === 'none' ? 'ENOENT' : 'EINVAL', `${path} is not a LUN`);
    await this.controller.resizeLun(target.name, sizeBytes);
  }

  /**
   * One handle of a pending LUN is closed (or the LUN was made): forget the name with its last one.
   */
  private dropPending(name: string): void {
    const count = (this.pendingLuns.get(name) ?? 0) - 1;
    if (count > 0) this.pendingLuns.set(name, count);
    else this.pendingLuns.delete(name);
  }

  /** The block device a handle reads and writes: a LUN's cache, or a snapshot volume. */
  private deviceOf(fd: number): BlockDevice {
    const handle = this.handles.get(fd);
    if (handle?.lun) return this.controller.stack(handle.lun).cache;
    if (handle?.snapshot) return this.controller.snapshotVolume(handle.snapshot);
    throw new LunfsError('EBADF', `file handle ${fd} serves no LUN or snapshot`);
  }

  /**
   * The truncate that gives a pending name its size makes the LUN; its open handles become the
   * LUN's.
   */
  private async createPendingLun(name: string, sizeBytes: number): Promise<void> {
    if (sizeBytes === 0) throw new LunfsError('EINVAL', 'LUN size must be larger than 0');
    await this.controller.createLun(name, sizeBytes);
    for (const handle of this.handles.values()) {
      if (handle.pendingLun !== name) continue;
      delete handle.pendingLun;
      handle.lun = name;
      this.controller.opened(name);
    }
    this.pendingLuns.delete(name);
  }
}

function lunNameOf(path: string): string {
  const match = /^\/(?:luns|clones)\/([^/]+)$/.exec(path);
  if (!match) throw new LunfsError('EINVAL', `${path} is not under luns/`);
  return match[1]!;
}

/** The snapshot a control/snapshot request made: LUN@NAME for LUN@NAME and LUN@SOURCE@NAME. */
function madeBy(request: string): string {
  const { lun, snapshot } = parseSnapshotRequest(request);
  return `${lun}@${snapshot}`;
}
