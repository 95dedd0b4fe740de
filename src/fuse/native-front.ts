// The FUSE front over lunfs's own libfuse3 front (native/src/fuse_front.c, issue 12): the same
// Namespace and errors as fuse-front.ts, served by inode numbers instead of paths.
//
// libfuse's threads queue requests; each wake-up of this thread brings a batch of them (onBatch),
// and each is answered by one native reply() call, from here, whenever its promise settles: no FUSE
// thread waits for JavaScript. Requests are up to 1 MiB. The inode table lives here: every path
// looked up gets a number for the life of the mount (the tree is small: LUNs and snapshots), so C
// carries numbers only and forgets need no answer.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { allocateIoMemory } from '../native/os-calls.js';
import { systemClock } from '../util/clock.js';
import { wholeNumberFromEnvironment } from '../util/environment.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { errnoFor } from './errno.js';
import type { FuseFrontOptions, MountedFront } from './fuse-front.js';
import { type Attributes, directoryMode, Namespace } from './namespace.js';
import { maxRequestBytes } from '../util/constants.js';

/** The operation numbers of fuse_front.c's enum operation. */
const enum Operation {
  Lookup = 1,
  Getattr,
  Setattr,
  Readdir,
  Open,
  Release,
  Read,
  Write,
  Flush,
  Fsync,
  Create,
  Unlink,
  Statfs,
  Fallocate,
}

/** FUSE_SET_ATTR_* bits of a setattr's mask. */
const setMode = 1 << 0;
const setUid = 1 << 1;
const setGid = 1 << 2;
const setSize = 1 << 3;

interface NativeRequest {
  op: Operation;
  id: number;
  ino: number;
  fh: number;
  offset: number;
  size: number;
  mode: number;
  flags: number;
  uid?: number;
  gid?: number;
  name?: string;
  data?: Buffer;
  /** A write's payload is in slots[slot], size bytes from slotOffset, rather than in data. */
  slot?: number;
  slotOffset?: number;
}

export interface NativeFrontStats {
  requests: number;
  batches: number;
  /** Batches the JS thread found by spinning (poll), without being woken; 0 from an older build. */
  polledBatches?: number;
  largestWriteBytes: number;
  largestReadBytes: number;
  writesOfMaxSize: number;
}

interface FuseAddon {
  start(
    mountpoint: string,
    options: string,
    onBatch: (batch: NativeRequest[]) => void,
    slots: Buffer[],
  ): void;
  stop(): boolean;
  reply(id: number, errno: number, value?: unknown, handle?: number, directIo?: boolean): void;
  stats(): NativeFrontStats;
  detach(path: string): number;
  /**
   * The bytes of one write slot (a header page and 1 MiB); absent in an older build (1 MiB slots).
   */
  readonly slotBytes?: number;
  /**
   * Spins up to spinMicros for the next requests (see js_poll in fuse_front.c); absent in an older
   * build.
   */
  poll?(spinMicros: number): NativeRequest[] | undefined;
}

const addonRelativePath = join('native', 'fuse', 'build', 'Release', 'lunfs_fuse.node');
const rootInode = 1;
/**
 * Receive buffers lent to C (see fuse_front.c): each of the 4 loop threads reads into one, and a
 * write keeps its slot until it is answered, so 32 writes may be in flight with no copy.
 */
const writeSlotCount = 36;
/**
 * How long the JS thread spins for the next request after serving a batch, instead of sleeping
 * until a loop thread wakes it. At queue depth 1 the next request comes a few tens of µs after a
 * reply, and a wake-up (eventfd write, epoll return) costs about as much on the reference VM: the
 * native front's own ceiling went from 23k to 28-33k 4 KiB writes/s with 50-100 µs. Spinning
 * stops at the first wait that finds nothing, so an idle server does not spin.
 * LUNFS_FUSE_POLL_US overrides it (0 turns it off).
 */
const defaultPollMicros = 50;

/**
 * LUNFS_FUSE_SLOTS (0 to 64) replaces writeSlotCount: with fewer slots than loop threads, writes
 * take the copying paths of fuse_front.c (the tests use it).
 */
const slotCountFromEnvironment = (): number =>
  wholeNumberFromEnvironment('LUNFS_FUSE_SLOTS', 64, writeSlotCount, '');

const pollMicrosFromEnvironment = (): number =>
  wholeNumberFromEnvironment('LUNFS_FUSE_POLL_US', 10_000, defaultPollMicros, ' of microseconds');

let loaded: { addon?: FuseAddon; reason?: string } | undefined;

/** The native front's addon, or why it cannot be used (not built: no libfuse3-dev; not Linux). */
export function loadFuseAddon(): { addon?: FuseAddon; reason?: string } {
  if (loaded) return loaded;
  let directory = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(directory, 'package.json')) && dirname(directory) !== directory)
    directory = dirname(directory);
  const path = join(directory, addonRelativePath);
  if (!existsSync(path))
    loaded = {
      reason: `${path} does not exist (build it with: npx node-gyp rebuild --directory native/fuse; it needs libfuse3-dev)`,
    };
  else {
    try {
      loaded = { addon: createRequire(import.meta.url)(path) as FuseAddon };
    } catch (error) {
      loaded = { reason: `${path} failed to load: ${(error as Error).message}` };
    }
  }
  return loaded;
}

/** Inode numbers for paths, kept for the life of the mount. */
class InodeTable {
  private readonly paths = new Map<number, string>([[rootInode, '/']]);
  private readonly inodes = new Map<string, number>([['/', rootInode]]);
  private next = rootInode + 1;

  pathOf(ino: number): string {
    const path = this.paths.get(ino);
    if (path === undefined) throw new LunfsError('ENOENT', `inode ${ino} is unknown`);
    return path;
  }

  inodeOf(path: string): number {
    let ino = this.inodes.get(path);
    if (ino === undefined) {
      ino = this.next++;
      this.inodes.set(path, ino);
      this.paths.set(ino, path);
    }
    return ino;
  }

  child(parent: number, name: string): string {
    const parentPath = this.pathOf(parent);
    return parentPath === '/' ? `/${name}` : `${parentPath}/${name}`;
  }
}

export class NativeFront implements MountedFront {
  private readonly namespace: Namespace;
  private readonly inodes = new InodeTable();
  private readonly addon: FuseAddon;
  private readonly log: Logger;
  /** Requests handed to JS and not yet answered: unmount waits for them. */
  private inFlight = 0;
  private mounted = false;
  private lastStats: NativeFrontStats | undefined;
  private readonly pollMicros: number;
  private pollScheduled = false;
  /**
   * Kept alive here for the whole mount: C reads requests into them. One region, in huge pages
   * where possible (allocateIoMemory).
   */
  private readonly writeSlots: Buffer[];
  /**
   * Read buffers of 1 MiB, reused: reply() copies the data out at once, so each is free again after
   * it.
   */
  private readonly readBuffers: Buffer[] = [];

  constructor(private readonly options: FuseFrontOptions) {
    const { addon, reason } = loadFuseAddon();
    if (!addon)
      throw new LunfsError('ENOTSUP', `the native FUSE front is not available: ${reason}`);
    this.addon = addon;
    const slotBytes = addon.slotBytes ?? maxRequestBytes;
    const slotCount = slotCountFromEnvironment();
    const slotMemory = allocateIoMemory(Math.max(1, slotCount) * slotBytes);
    this.writeSlots = Array.from({ length: slotCount }, (_, index) =>
      slotMemory.subarray(index * slotBytes, (index + 1) * slotBytes),
    );
    this.pollMicros = typeof addon.poll === 'function' ? pollMicrosFromEnvironment() : 0;
    this.log = options.log;
    this.namespace = new Namespace(options.controller, options.mountedAt);
  }

  async mount(): Promise<void> {
    const mountpoint = this.options.mountpoint;
    // A mount left by a killed server answers nothing (ENOTCONN): detach it, as fuse-native's force
    // does.
    if (staleFuseMountAt(mountpoint)) {
      const errno = this.addon.detach(mountpoint);
      if (errno !== 0)
        throw new LunfsError(
          'EBUSY',
          `the stale mount at ${mountpoint} could not be detached (errno ${errno})`,
        );
    }
    try {
      this.addon.start(
        mountpoint,
        'fsname=lunfs,subtype=lunfs',
        (batch) => this.onBatch(batch),
        this.writeSlots,
      );
    } catch (error) {
      throw new LunfsError('EIO', `mount at ${mountpoint} failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
    this.mounted = true;
  }

  async unmount(): Promise<void> {
    if (!this.mounted) return;
    // Answer what JS holds before the session goes (a reply after stop() reaches nobody).
    const deadline = systemClock.nowMs() + 5000;
    while (this.inFlight > 0 && systemClock.nowMs() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 5));
    this.lastStats = this.addon.stats();
    const joined = this.addon.stop();
    this.mounted = false;
    if (!joined)
      this.log.warn(
        { mountpoint: this.options.mountpoint },
        'FUSE loop threads still waiting after unmount (files open on the detached mount)',
      );
  }

  /** The debug counters: requests, batches, the largest write and read (1 MiB when negotiated). */
  stats(): NativeFrontStats {
    return this.mounted ? this.addon.stats() : (this.lastStats ?? this.addon.stats());
  }

  openFiles(): string[] {
    return this.namespace.openFiles();
  }

  get idleGeneration(): number {
    return this.namespace.idleGeneration;
  }

  refuseNewOpens(): void {
    this.namespace.refuseNewOpens();
  }

  private onBatch(batch: NativeRequest[]): void {
    for (const request of batch) this.serve(request);
    this.schedulePoll();
  }

  /**
   * After a batch: once the work it started has run (the cache's destage is a setImmediate queued
   * while serving; this poll goes one turn of the event loop later), spin briefly for the next
   * requests. Timers and I/O callbacks run between two polls, as between any two immediates.
   */
  private schedulePoll(): void {
    if (this.pollMicros === 0 || this.pollScheduled || !this.mounted) return;
    this.pollScheduled = true;
    setImmediate(() => setImmediate(this.pollForRequests));
  }

  /** The spin itself (a named function, so that CPU profiles show the poll's time as such). */
  private readonly pollForRequests = (): void => {
    this.pollScheduled = false;
    if (!this.mounted) return;
    const batch = this.addon.poll!(this.pollMicros);
    if (batch !== undefined) this.onBatch(batch);
  };

  private serve(request: NativeRequest): void {
    this.inFlight += 1;
    if (request.op === Operation.Read && request.size > 64 * 1024) {
      this.serveLargeRead(request);
      return;
    }
    let result: unknown[] | Promise<unknown[]>;
    try {
      result = this.handle(request);
    } catch (error) {
      this.fail(request, error);
      return;
    }
    if (Array.isArray(result)) this.succeed(request, result);
    else
      result.then(
        (values) => this.succeed(request, values),
        (error: unknown) => this.fail(request, error),
      );
  }

  /** A read into a reused 1 MiB buffer: a new one per request cost the JS thread its GC time. */
  private serveLargeRead(request: NativeRequest): void {
    const buffer = this.readBuffers.pop() ?? Buffer.allocUnsafe(maxRequestBytes);
    const target = buffer.subarray(0, Math.min(request.size, maxRequestBytes));
    this.namespace
      .read(request.fh, target, request.offset)
      .then(
        (count) => this.succeed(request, [target.subarray(0, count)]),
        (error: unknown) => this.fail(request, error),
      )
      .finally(() => {
        if (this.readBuffers.length < writeSlotCount) this.readBuffers.push(buffer);
      });
  }

  private succeed(request: NativeRequest, values: unknown[]): void {
    this.inFlight -= 1;
    this.addon.reply(request.id, 0, ...(values as [unknown, number?, boolean?]));
  }

  private fail(request: NativeRequest, error: unknown): void {
    this.inFlight -= 1;
    const errno = -errnoFor(error, this.log, {
      op: operationName(request.op),
      ino: request.ino,
      name: request.name,
      offset: request.offset,
      size: request.size,
    });
    this.addon.reply(request.id, errno);
  }

  /** [ino, mode, nlink, size, uid, gid, seconds, volatile]: the array fuse_front.c reads. */
  private attributeArray(path: string, attributes: Attributes): number[] {
    return [
      this.inodes.inodeOf(path),
      attributes.mode,
      attributes.nlink,
      attributes.sizeBytes,
      attributes.uid,
      attributes.gid,
      Math.floor(attributes.time.getTime() / 1000),
      attributes.volatile ? 1 : 0,
    ];
  }

  private existing(path: string): number[] {
    return this.attributeArray(path, this.namespace.existingAttributes(path));
  }

  /** Serves one request: the reply()'s values after id and errno, or a promise of them. */
  private handle(request: NativeRequest): unknown[] | Promise<unknown[]> {
    const names = this.namespace;
    switch (request.op) {
      case Operation.Lookup:
        return [this.existing(this.inodes.child(request.ino, request.name!))];
      case Operation.Getattr:
        return [this.existing(this.inodes.pathOf(request.ino))];
      case Operation.Setattr:
        return this.setattr(request);
      case Operation.Readdir: {
        const path = this.inodes.pathOf(request.ino);
        const parent = path === '/' ? '/' : dirname(path);
        const entries: Array<[string, number, number]> = [
          ['.', request.ino, directoryMode],
          ['..', this.inodes.inodeOf(parent), directoryMode],
        ];
        for (const name of names.readdir(path)) {
          const child = this.inodes.child(request.ino, name);
          entries.push([
            name,
            this.inodes.inodeOf(child),
            names.attributes(child)?.mode ?? 0o100644,
          ]);
        }
        return [entries];
      }
      case Operation.Open: {
        const handle = names.open(this.inodes.pathOf(request.ino), request.flags);
        return [undefined, handle, names.servesText(handle)];
      }
      case Operation.Create:
        return (async () => {
          const path = this.inodes.child(request.ino, request.name!);
          const handle = await names.create(path);
          return [this.existing(path), handle, names.servesText(handle)];
        })();
      case Operation.Release:
        names.release(request.fh);
        return [];
      case Operation.Read:
        return (async () => {
          const buffer = Buffer.allocUnsafe(request.size);
          const count = await names.read(request.fh, buffer, request.offset);
          return [buffer.subarray(0, count)];
        })();
      case Operation.Write: {
        // A slot is C's again once reply() runs: the BlockDevice contract is that write() keeps no
        // reference after it settles.
        const start = request.slotOffset ?? 0;
        const data =
          request.slot !== undefined
            ? this.writeSlots[request.slot]!.subarray(start, start + request.size)
            : request.data!;
        return names.write(request.fh, data, request.offset).then((count) => [count]);
      }
      case Operation.Flush:
        return names.flush(request.fh, this.inodes.pathOf(request.ino)).then(() => []);
      case Operation.Fsync:
        return names.fsync(request.fh).then(() => []);
      case Operation.Unlink:
        return names.unlink(this.inodes.child(request.ino, request.name!)).then(() => []);
      case Operation.Statfs: {
        const stats = names.statfs();
        return [
          [
            stats.blockBytes,
            stats.blocks,
            stats.freeBlocks,
            stats.freeBlocks,
            stats.files,
            stats.files,
            stats.nameMax,
          ],
        ];
      }
      case Operation.Fallocate:
        return names
          .fallocate(request.fh, request.mode, request.offset, request.size)
          .then(() => []);
      default:
        throw new LunfsError('ENOTSUP', `FUSE operation ${String(request.op)} is not served`);
    }
  }

  private async setattr(request: NativeRequest): Promise<unknown[]> {
    const path = this.inodes.pathOf(request.ino);
    if (request.flags & setMode) this.namespace.chmod(path, request.mode);
    if (request.flags & (setUid | setGid))
      this.namespace.chown(
        path,
        request.flags & setUid ? request.uid! : -1,
        request.flags & setGid ? request.gid! : -1,
      );
    if (request.flags & setSize) await this.namespace.truncate(path, request.size);
    return [this.existing(path)]; // times (touch) are accepted and not kept, as with fuse-native
  }
}

function operationName(op: Operation): string {
  return (
    [
      '',
      'lookup',
      'getattr',
      'setattr',
      'readdir',
      'open',
      'release',
      'read',
      'write',
      'flush',
      'fsync',
      'create',
      'unlink',
      'statfs',
      'fallocate',
    ][op] ?? String(op)
  );
}

/**
 * Whether /proc/mounts has a FUSE mount exactly at mountpoint (runMount reaches here only when it
 * answered ENOTCONN: stale).
 */
function staleFuseMountAt(mountpoint: string): boolean {
  let text: string;
  try {
    text = readFileSync('/proc/mounts', 'utf8');
  } catch {
    return false;
  }
  const unescape = (field: string): string =>
    field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  return text.split('\n').some((line) => {
    const [, point, type] = line.split(' ');
    return (
      point !== undefined &&
      unescape(point) === mountpoint &&
      type !== undefined &&
      type.startsWith('fuse')
    );
  });
}
