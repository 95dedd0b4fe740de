#!/usr/bin/env node
// The ceiling of lunfs's native FUSE front (issue 12): the same addon as src/fuse/native-front.ts
// (native/fuse, libfuse3 low-level, loop threads queueing requests, JS answering batches through
// reply()) serving one in-memory file, <mountdir>/disk.img, backed by one Buffer. It is to the
// native front what ../shared/bench/fnmem-server.js is to fuse-native: the handlers do nothing
// but a memcpy, so what is measured is the addon + libfuse3 + kernel FUSE cost, and lunfs over the
// native front can be compared with the best that front can do.
//
// It drives the addon the way NativeFront does: the same options string, the same 1 MiB write
// slots lent to C (a write's payload is in slots[slot], or in data when no slot was free), one
// reply() per request; unlike NativeFront it answers every request synchronously inside the batch
// (no promise, no namespace), and a read replies with a view into the Buffer (reply copies it out).
//
// usage: node bench/nfmem-server.mjs <mountdir> <sizeBytes> <statsFile> [distDir]
//   distDir: the lunfs build whose addon to load (default: <repo>/dist; peers-extra-lunfs.sh passes
//   the folder of LUNFS_BIN, so the ceiling and lunfs load the same addon)
// signals: SIGUSR2 -> write JSON stats (op counts, read/write size histograms, the addon's request
//          and batch counters since the last dump) to statsFile; SIGTERM/SIGINT -> unmount, exit.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

const [mountpoint, sizeArgument, statsFile, distArgument] = process.argv.slice(2);
if (!mountpoint || !sizeArgument || !statsFile) {
  console.error('usage: node bench/nfmem-server.mjs <mountdir> <sizeBytes> <statsFile> [distDir]');
  process.exit(2);
}
const distDirectory = path.resolve(distArgument || path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist'));
const { loadFuseAddon } = await import(pathToFileURL(path.join(distDirectory, 'fuse', 'native-front.js')).href);
const { addon, reason } = loadFuseAddon();
if (!addon) {
  console.error(`nfmem: the native front's addon is not available: ${reason}`);
  process.exit(1);
}

// The operation numbers of fuse_front.c's enum operation (as in native-front.ts).
const Lookup = 1, Getattr = 2, Setattr = 3, Readdir = 4, Open = 5, Release = 6, Read = 7, Write = 8,
  Flush = 9, Fsync = 10, Create = 11, Unlink = 12, Statfs = 13, Fallocate = 14;
const names = ['', 'lookup', 'getattr', 'setattr', 'readdir', 'open', 'release', 'read', 'write', 'flush', 'fsync', 'create', 'unlink', 'statfs', 'fallocate'];
const ENOENT = 2, EPERM = 1, EFBIG = 27, ENOSPC = 28, EOPNOTSUPP = 95;
const setSizeBit = 1 << 3; // FUSE_SET_ATTR_SIZE
const punchHole = 0x02; // FALLOC_FL_PUNCH_HOLE (with KEEP_SIZE, the only discard the kernel sends)
const maxRequestBytes = 1024 * 1024;
const writeSlotCount = 36; // as NativeFront

const capacity = Number(sizeArgument);
const fileName = 'disk.img';
const rootInode = 1, fileInode = 2;
// allocUnsafeSlow + fill: every page touched up front and non-zero content, as fnmem-server.js.
const memory = Buffer.allocUnsafeSlow(capacity);
memory.fill(0x5a);
let size = capacity;
const seconds = Math.floor(Date.now() / 1000);
const slotBytes = addon.slotBytes ?? maxRequestBytes; // a header page and 1 MiB: C reads requests into them
const writeSlots = Array.from({ length: writeSlotCount }, () => Buffer.alloc(slotBytes));

let stats;
let addonBefore = { requests: 0, batches: 0 };
function resetStats() {
  stats = { ops: {}, readSizes: {}, writeSizes: {}, readBytes: 0, writeBytes: 0, unalignedWrites: 0 };
}
resetStats();
const count = (op) => { const name = names[op] || String(op); stats.ops[name] = (stats.ops[name] || 0) + 1; };
const histogram = (h, n) => { h[n] = (h[n] || 0) + 1; };

const fileAttributes = () => [fileInode, 0o100644, 1, size, 0, 0, seconds];
const rootAttributes = () => [rootInode, 0o40755, 2, 4096, 0, 0, seconds];

function setSize(newSize) {
  if (newSize > capacity) return EFBIG;
  if (newSize < size) memory.fill(0, newSize, size); // a later grow reads zeros
  size = newSize;
  return 0;
}

/** Answers one request at once: reply(id, errno, value, handle, directIo) as fuse_front.c reads it. */
function serve(request) {
  count(request.op);
  switch (request.op) {
    case Lookup:
      if (request.ino === rootInode && request.name === fileName) return addon.reply(request.id, 0, fileAttributes());
      return addon.reply(request.id, ENOENT);
    case Getattr:
      return addon.reply(request.id, 0, request.ino === fileInode ? fileAttributes() : rootAttributes());
    case Setattr: {
      if (request.ino === fileInode && request.flags & setSizeBit) {
        const errno = setSize(request.size);
        if (errno) return addon.reply(request.id, errno);
      }
      return addon.reply(request.id, 0, request.ino === fileInode ? fileAttributes() : rootAttributes());
    }
    case Readdir:
      return addon.reply(request.id, 0, [['.', rootInode, 0o40755], ['..', rootInode, 0o40755], [fileName, fileInode, 0o100644]]);
    case Open:
      return addon.reply(request.id, 0, undefined, 42, false); // page cache as for a LUN file (NativeFront: servesText false)
    case Release:
    case Flush:
    case Fsync: // memory: nothing to persist
      return addon.reply(request.id, 0);
    case Read: {
      histogram(stats.readSizes, request.size);
      const start = Math.min(request.offset, size);
      const end = Math.min(request.offset + request.size, size);
      stats.readBytes += end - start;
      return addon.reply(request.id, 0, memory.subarray(start, end));
    }
    case Write: {
      histogram(stats.writeSizes, request.size);
      if (request.offset % 4096 !== 0 || request.size % 4096 !== 0) stats.unalignedWrites++;
      if (request.offset + request.size > capacity) return addon.reply(request.id, ENOSPC);
      const start = request.slot !== undefined ? (request.slotOffset ?? 0) : 0;
      const data = request.slot !== undefined ? writeSlots[request.slot] : request.data;
      data.copy(memory, request.offset, start, start + request.size);
      if (request.offset + request.size > size) size = request.offset + request.size;
      stats.writeBytes += request.size;
      return addon.reply(request.id, 0, request.size);
    }
    case Statfs:
      return addon.reply(request.id, 0, [4096, capacity / 4096, 0, 0, 1, 0, 255]);
    case Fallocate: {
      if (!(request.mode & punchHole)) return addon.reply(request.id, EOPNOTSUPP);
      const end = Math.min(request.offset + request.size, size);
      if (end > request.offset) memory.fill(0, request.offset, end);
      return addon.reply(request.id, 0);
    }
    case Create:
    case Unlink:
      return addon.reply(request.id, EPERM);
    default:
      return addon.reply(request.id, EOPNOTSUPP);
  }
}

// As NativeFront: after a batch, spin up to pollMicros for the next requests (LUNFS_FUSE_POLL_US).
const pollMicros = typeof addon.poll === 'function' ? Number(process.env.LUNFS_FUSE_POLL_US ?? 50) : 0;
let pollScheduled = false;
function onBatch(batch) {
  for (const request of batch) serve(request);
  if (pollMicros > 0 && !pollScheduled) {
    pollScheduled = true;
    setImmediate(() => setImmediate(() => {
      pollScheduled = false;
      const next = addon.poll(pollMicros);
      if (next !== undefined) onBatch(next);
    }));
  }
}

fs.mkdirSync(mountpoint, { recursive: true });
addon.start(mountpoint, 'fsname=nfmem,subtype=nfmem', onBatch, writeSlots);
console.log(`mounted ${mountpoint}/${fileName} size=${capacity} addon=${distDirectory} pid=${process.pid}`);

process.on('SIGUSR2', () => {
  const now = addon.stats();
  stats.requests = now.requests - addonBefore.requests;
  stats.batches = now.batches - addonBefore.batches;
  addonBefore = now;
  fs.writeFileSync(statsFile, JSON.stringify(stats));
  resetStats();
});
let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  const joined = addon.stop();
  if (!joined) console.error('nfmem: FUSE loop threads still waiting after unmount');
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
