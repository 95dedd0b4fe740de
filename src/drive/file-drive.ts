// A drive backed by a file (sparse or preallocated) or a block device, via positional I/O on one
// file descriptor. flush() is fdatasync: after it resolves, every completed write is on stable
// storage. I/O uses the callback API of node:fs in the libuv thread pool (asynchronous, so drive
// I/O overlaps): measured 12 us per 4 KiB read on tmpfs against 39 us through FileHandle.
//
// A drive file on tmpfs (memory) is served inline instead, with positional sync calls: there is
// no device latency to overlap, and the copy (0.8 us per 4 KiB) costs far less than the hop to a
// pool thread and back (12 us). `ioMode` says which; 'auto' picks inline for regular files on
// tmpfs and the thread pool for everything else (block devices, disk file systems). Even on tmpfs
// an I/O larger than inlineMaxBytes goes to the thread pool: a 128 KiB write into a hole of a
// sparse drive file (a snapshot's preservation) took ~95 us of the JS thread inline, far more
// than the hop; in the pool it overlaps with the JS thread's other work.
//
// Ownership: a FileDrive holds an exclusive flock(2) on its file descriptor for as long as it is
// open, so one drive belongs to one open pool at a time (another process, or a second open of the
// same file in this process, finds it busy and is refused with EBUSY before it reads or writes a
// byte). The kernel drops the lock when the descriptor is closed or the process dies. Without the
// native addon there is no lock; a warning says so once. A block device is also opened with
// O_EXCL, Linux's exclusive claim: the kernel refuses it (EBUSY) while the device is mounted or
// claimed by md, device-mapper, swap or another exclusive opener, which a flock cannot see. A
// regular file that backs a loop device is refused (EBUSY) for the same reason: whatever uses the
// loop device (a mounted file system, another pool) writes the file without taking its flock.

import {
  constants,
  read as readCallback,
  write as writeCallback,
  fdatasync as fdatasyncCallback,
  readSync,
  writeSync,
  fdatasyncSync,
  statfsSync,
} from 'node:fs';
import { open, readdir, readFile, realpath, stat, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { checkRange } from '../block/block-device.js';
import { decodeDriveHeader, driveHeaderBytes } from '../meta/drive-header.js';
import { tryFlock } from '../native/os-calls.js';
import { wholeNumberFromEnvironment } from '../util/environment.js';
import { driveError, isLunfsError, LunfsError } from '../util/errors.js';
import { layerLogger } from '../util/logger.js';
import type { Drive } from './drive.js';

export type DriveIoMode = 'auto' | 'async' | 'inline';

const tmpfsMagic = 0x01021994;

/**
 * The largest I/O an inline drive serves with a sync call; larger ones go to the thread pool.
 * LUNFS_INLINE_MAX_BYTES overrides it (0: every I/O through the pool).
 */
let inlineMaxBytes: number | undefined;

/** inlineMaxBytes, read once when the first drive is opened (a bad value refuses the open). */
function inlineLimit(): number {
  inlineMaxBytes ??= wholeNumberFromEnvironment(
    'LUNFS_INLINE_MAX_BYTES',
    2 ** 30,
    32 * 1024,
    ' of bytes',
  );
  return inlineMaxBytes;
}

export class FileDrive implements Drive {
  private closed = false;
  private readonly fd: number;
  /** True when I/O is served inline (sync calls) rather than through the thread pool. */
  readonly inline: boolean;
  /** The largest I/O served inline. */
  private readonly inlineMax: number;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly sizeBytes: number,
    inline: boolean,
  ) {
    this.fd = handle.fd;
    this.inline = inline;
    this.inlineMax = inline ? inlineLimit() : 0;
  }

  /** Opens an existing file or block device read-write. */
  static async open(path: string, ioMode: DriveIoMode = 'auto'): Promise<FileDrive> {
    inlineLimit(); // a bad LUNFS_INLINE_MAX_BYTES refuses the open before anything is touched
    let handle: FileHandle;
    try {
      handle = await open(path, await openFlags(path));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT')
        throw new LunfsError('ENOENT', `drive ${path} does not exist`, { cause: error });
      if (code === 'EBUSY') throw await claimedDeviceError(path, error);
      throw driveError('open', path, error);
    }
    try {
      await refuseLoopBacking(path, handle);
      await takeOwnership(path, handle);
      const sizeBytes = await sizeOf(path, handle);
      return new FileDrive(path, handle, sizeBytes, await chooseInline(path, handle, ioMode));
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /**
   * Opens a drive another process owns, read-only and without its lock (a migration's copier reads
   * the drives of a pool a mount serves, issue 16). Writes fail (EBADF from the kernel).
   */
  static async openShared(path: string): Promise<FileDrive> {
    let handle: FileHandle;
    try {
      handle = await open(path, constants.O_RDONLY);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT')
        throw new LunfsError('ENOENT', `drive ${path} does not exist`, { cause: error });
      throw driveError('open', path, error);
    }
    try {
      return new FileDrive(path, handle, await sizeOf(path, handle), false);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Creates a sparse file of sizeBytes (fails if it exists) and opens it. */
  static async createSparse(
    path: string,
    sizeBytes: number,
    ioMode: DriveIoMode = 'auto',
  ): Promise<FileDrive> {
    inlineLimit(); // a bad LUNFS_INLINE_MAX_BYTES refuses it before the file is created
    let handle: FileHandle | undefined;
    try {
      handle = await open(path, 'wx+');
      await takeOwnership(path, handle);
      await handle.truncate(sizeBytes);
    } catch (error) {
      await handle?.close();
      // another process opened the new file meanwhile: leave it to them
      if (isLunfsError(error, 'EBUSY')) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST')
        throw new LunfsError('EEXIST', `drive file ${path} already exists`, { cause: error });
      throw driveError('create', path, error);
    }
    return new FileDrive(path, handle, sizeBytes, await chooseInline(path, handle, ioMode));
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    if (this.readInline(offsetBytes, target)) return;
    let done = 0;
    try {
      while (done < target.length) {
        const bytesRead = await readAt(
          this.fd,
          target,
          done,
          target.length - done,
          offsetBytes + done,
        );
        if (bytesRead === 0) {
          target.fill(0, done); // past the end of a file that shrank under us: treat as zeros
          return;
        }
        done += bytesRead;
      }
    } catch (error) {
      throw driveError('read', this.path, error);
    }
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    if (this.writeInline(offsetBytes, data)) return;
    let done = 0;
    try {
      while (done < data.length)
        done += await writeAt(this.fd, data, done, data.length - done, offsetBytes + done);
    } catch (error) {
      throw driveError('write', this.path, error);
    }
  }

  /**
   * Reads with sync calls when this drive serves a request of this size inline; false, having
   * done nothing but the checks, otherwise.
   */
  readInline(offsetBytes: number, target: Buffer): boolean {
    checkRange(this, offsetBytes, target.length, `read of ${this.path}`);
    this.checkOpen();
    if (!this.inline || target.length > this.inlineMax) return false;
    let done = 0;
    try {
      while (done < target.length) {
        const bytesRead = readSync(this.fd, target, done, target.length - done, offsetBytes + done);
        if (bytesRead === 0) {
          target.fill(0, done); // past the end of a file that shrank under us: treat as zeros
          return true;
        }
        done += bytesRead;
      }
    } catch (error) {
      throw driveError('read', this.path, error);
    }
    return true;
  }

  /** The same for a write. */
  writeInline(offsetBytes: number, data: Buffer): boolean {
    checkRange(this, offsetBytes, data.length, `write of ${this.path}`);
    this.checkOpen();
    if (!this.inline || data.length > this.inlineMax) return false;
    let done = 0;
    try {
      while (done < data.length)
        done += writeSync(this.fd, data, done, data.length - done, offsetBytes + done);
    } catch (error) {
      throw driveError('write', this.path, error);
    }
    return true;
  }

  async flush(): Promise<void> {
    this.checkOpen();
    try {
      if (this.inline) fdatasyncSync(this.fd);
      else
        await new Promise<void>((resolve, reject) =>
          fdatasyncCallback(this.fd, (error) => (error ? reject(error) : resolve())),
        );
    } catch (error) {
      throw driveError('flush', this.path, error);
    }
  }

  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes, `discard of ${this.path}`);
    // Node has no fallocate(PUNCH_HOLE); write zeros so the range reads as zeros.
    const zeros = Buffer.alloc(Math.min(lengthBytes, 1 << 20));
    for (let done = 0; done < lengthBytes; done += zeros.length) {
      const length = Math.min(zeros.length, lengthBytes - done);
      await this.write(offsetBytes + done, zeros.subarray(0, length));
    }
  }

  /**
   * Why the drive's path no longer leads to the open file (it was deleted, or another file took
   * its name), or undefined while it does. An open file that was unlinked still reads and writes,
   * so without this check a deleted drive would go on taking data nobody can find again.
   */
  async presenceProblem(): Promise<string | undefined> {
    if (this.closed) return undefined;
    try {
      const [byPath, open] = await Promise.all([stat(this.path), this.handle.stat()]);
      if (byPath.ino !== open.ino || byPath.dev !== open.dev)
        return `drive ${this.path} was replaced by another file while in use`;
      return undefined;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return `drive ${this.path} was deleted while in use`;
      return `drive ${this.path} cannot be checked: ${(error as Error).message}`;
    }
  }

  /** Whether path names the file this drive has open (the same device and inode). */
  async isFile(path: string): Promise<boolean> {
    if (this.closed) return false;
    try {
      const [byPath, open] = await Promise.all([stat(path), this.handle.stat()]);
      return byPath.ino === open.ino && byPath.dev === open.dev;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new LunfsError('EIO', `drive ${this.path} is closed`);
  }
}

let warnedNoLock = false;

/**
 * Read-write; for a block device also O_EXCL (an exclusive claim, see the file's head), so a
 * mounted device, or one md or device-mapper holds, is refused instead of overwritten.
 */
async function openFlags(path: string): Promise<number> {
  let blockDevice = false;
  try {
    blockDevice = (await stat(path)).isBlockDevice();
  } catch {
    blockDevice = false; // the open that follows reports why
  }
  return constants.O_RDWR | (blockDevice ? constants.O_EXCL : 0);
}

/**
 * Throws EBUSY when the open regular file backs a loop device. Matched by path: sysfs names the
 * backing file by its canonical path, which realpath gives for ours. The backing paths are never
 * stat'ed: one may lie under a FUSE mount (a LUN of this very process), and waiting on it could
 * deadlock.
 */
async function refuseLoopBacking(path: string, handle: FileHandle): Promise<void> {
  if (!(await handle.stat()).isFile()) return;
  let names: string[];
  let ours: string;
  try {
    names = (await readdir('/sys/block')).filter((name) => name.startsWith('loop'));
    ours = await realpath(path);
  } catch {
    return; // no sysfs (not Linux): no loop devices to find
  }
  for (const name of names) {
    let backing: string;
    try {
      backing = (await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8')).trimEnd();
    } catch {
      continue; // not attached
    }
    // a deleted backing file reads "PATH (deleted)": not ours either
    if (backing !== ours) continue;
    throw new LunfsError(
      'EBUSY',
      `drive ${path} is in use: it backs the loop device /dev/${name} (losetup -d /dev/${name} first)`,
    );
  }
}

/**
 * EBUSY for a block device the kernel would not let us claim, naming its pool when it has a label.
 */
async function claimedDeviceError(path: string, cause: unknown): Promise<LunfsError> {
  const pool = await labelPool(path);
  if (pool !== undefined)
    return new LunfsError(
      'EBUSY',
      `drive ${path} belongs to pool ${pool} and is in use by another process`,
      {
        cause,
      },
    );
  return new LunfsError(
    'EBUSY',
    `drive ${path} is in use: the device is mounted, or held by md, device-mapper, swap or another process`,
    { cause },
  );
}

/** The pool uuid in the drive's head label, when one can be read (for messages only). */
async function labelPool(path: string, opened?: FileHandle): Promise<string | undefined> {
  let handle = opened;
  try {
    handle ??= await open(path, 'r'); // a shared open: an exclusive holder does not refuse it
    const header = Buffer.alloc(driveHeaderBytes);
    await handle.read(header, 0, header.length, 0);
    const decoded = decodeDriveHeader(header);
    return decoded.ok ? decoded.header.poolUuid : undefined;
  } catch {
    return undefined; // unreadable: the message names the path alone
  } finally {
    if (opened === undefined) await handle?.close();
  }
}

/**
 * Takes the exclusive flock of the drive's open file, or throws EBUSY naming the drive and, when
 * its header can be read, the pool it belongs to. Without the addon: no lock, one warning.
 */
async function takeOwnership(path: string, handle: FileHandle): Promise<void> {
  const outcome = tryFlock(handle.fd);
  if (outcome === 'locked') return;
  if (outcome === 'unsupported') {
    if (!warnedNoLock) {
      warnedNoLock = true;
      layerLogger('drive').warn(
        'the native addon is not available: drives are not locked, so nothing stops two pools from opening the same drive',
      );
    }
    return;
  }
  const pool = await labelPool(path, handle);
  throw new LunfsError(
    'EBUSY',
    `drive ${path}${pool ? ` belongs to pool ${pool} and` : ''} is in use by another process`,
  );
}

async function chooseInline(
  path: string,
  handle: FileHandle,
  ioMode: DriveIoMode,
): Promise<boolean> {
  if (ioMode !== 'auto') return ioMode === 'inline';
  // /dev is tmpfs too, but a block device has latency
  if (!(await handle.stat()).isFile()) return false;
  try {
    return statfsSync(path).type === tmpfsMagic;
  } catch {
    return false;
  }
}

function readAt(
  fd: number,
  buffer: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) =>
    readCallback(fd, buffer, offset, length, position, (error, bytesRead) =>
      error ? reject(error) : resolve(bytesRead),
    ),
  );
}

function writeAt(
  fd: number,
  buffer: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) =>
    writeCallback(fd, buffer, offset, length, position, (error, bytesWritten) =>
      error ? reject(error) : resolve(bytesWritten),
    ),
  );
}

/** The size of an open drive file or block device (fstat says 0 for a block device). */
export async function sizeOf(path: string, handle: FileHandle): Promise<number> {
  const info = await handle.stat();
  if (info.isFile()) return info.size;
  if (info.isBlockDevice()) {
    // fstat reports 0 for block devices; sysfs has the size in 512-byte sectors.
    const major = Math.floor(info.rdev / 256) & 0xfff;
    const minor = (info.rdev & 0xff) | ((info.rdev >> 12) & 0xfff00);
    try {
      const sectors = await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
      return Number(sectors.trim()) * 512;
    } catch (error) {
      throw driveError('size', path, error);
    }
  }
  await stat(path); // surfaces ENOENT etc.
  throw new LunfsError('EINVAL', `${basename(path)} is neither a regular file nor a block device`);
}
