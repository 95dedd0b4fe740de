#!/usr/bin/env node
// Micro-measurements behind the profile findings in BENCHMARKS.md / the bench report: what one
// step of lunfs's I/O path costs on this machine, one at a time (QD1, like the fio jobs).
//   node bench/micro-io.mjs [dir on tmpfs, default /dev/shm]
//  1. a 4 KiB / 64 KiB pread from a file on tmpfs: fs.readSync (on the JS thread) vs fs.read
//     (callback, libuv thread pool) vs FileHandle.read (promise, thread pool)
//  2. a 4 KiB / 128 KiB pwrite the same three ways
//  3. copying 4 KiB / 128 KiB into memory touched for the first time (fresh allocUnsafeSlow slab,
//     as the cache's PageBufferPool hands out) vs into memory already touched
//  4. a 4 KiB pread into a fresh Buffer.allocUnsafe(4096) each time (a 4 KiB Buffer is not taken
//     from Node's pool: each is its own ArrayBuffer) vs into one reused buffer; CPU per read
import fs from 'node:fs';
import path from 'node:path';

const dir = process.argv[2] || '/dev/shm';
const file = path.join(dir, `micro-io-${process.pid}.img`);
const SIZE = 256 << 20;
const N = Number(process.env.N || 20000);
const fd = fs.openSync(file, 'w+');
const fill = Buffer.alloc(1 << 20, 0x5a);
for (let o = 0; o < SIZE; o += fill.length) fs.writeSync(fd, fill, 0, fill.length, o);
const fh = await fs.promises.open(file, 'r+');

const rnd = (bs) => Math.floor(Math.random() * (SIZE / bs)) * bs;
const now = () => process.hrtime.bigint();
const us = (t0, n) => Number(now() - t0) / 1e3 / n;
const results = [];
function report(what, v) { results.push([what, v]); console.log(`${what.padEnd(58)} ${v.toFixed(2)} µs`); }

for (const bs of [4096, 65536, 131072]) {
  const buf = Buffer.alloc(bs);
  let t0 = now();
  for (let i = 0; i < N; i++) fs.readSync(fd, buf, 0, bs, rnd(bs));
  report(`pread ${bs >> 10} KiB: fs.readSync (JS thread)`, us(t0, N));
  t0 = now();
  for (let i = 0; i < N; i++) await new Promise((res, rej) => fs.read(fd, buf, 0, bs, rnd(bs), (e) => (e ? rej(e) : res())));
  report(`pread ${bs >> 10} KiB: fs.read callback (thread pool)`, us(t0, N));
  t0 = now();
  for (let i = 0; i < N; i++) await fh.read(buf, 0, bs, rnd(bs));
  report(`pread ${bs >> 10} KiB: FileHandle.read (thread pool, promise)`, us(t0, N));
  t0 = now();
  for (let i = 0; i < N; i++) fs.writeSync(fd, buf, 0, bs, rnd(bs));
  report(`pwrite ${bs >> 10} KiB: fs.writeSync (JS thread)`, us(t0, N));
  t0 = now();
  for (let i = 0; i < N; i++) await new Promise((res, rej) => fs.write(fd, buf, 0, bs, rnd(bs), (e) => (e ? rej(e) : res())));
  report(`pwrite ${bs >> 10} KiB: fs.write callback (thread pool)`, us(t0, N));
}

for (const bs of [4096, 131072]) {
  const src = Buffer.alloc(bs, 1);
  const slabBytes = 128 * 1024 * 64; // PageBufferPool: 64 pages of 128 KiB per slab
  const n = Math.min(N, 4000);
  // fresh: every copy lands on 4 KiB pages never touched before
  const slabs = []; let t = 0n;
  let slab = Buffer.allocUnsafeSlow(slabBytes); let off = 0;
  for (let i = 0; i < n; i++) {
    if (off + bs > slabBytes) { slabs.push(slab); slab = Buffer.allocUnsafeSlow(slabBytes); off = 0; }
    const t0 = now(); src.copy(slab, off); t += now() - t0;
    off += Math.max(bs, 4096);
  }
  report(`copy ${bs >> 10} KiB into never-touched memory (page faults)`, Number(t) / 1e3 / n);
  const warm = Buffer.allocUnsafeSlow(slabBytes); warm.fill(0);
  t = 0n; off = 0;
  for (let i = 0; i < n; i++) {
    if (off + bs > slabBytes) off = 0;
    const t0 = now(); src.copy(warm, off); t += now() - t0;
    off += Math.max(bs, 4096);
  }
  report(`copy ${bs >> 10} KiB into touched memory`, Number(t) / 1e3 / n);
  slabs.length = 0;
}
{
  const reused = Buffer.alloc(4096);
  for (const fresh of [false, true]) {
    const before = process.cpuUsage();
    for (let i = 0; i < N; i++)
      fs.readSync(fd, fresh ? Buffer.allocUnsafe(4096) : reused, 0, 4096, rnd(4096));
    const cpu = process.cpuUsage(before);
    report(`4 KiB readSync into ${fresh ? 'a fresh allocUnsafe(4096)' : 'a reused buffer'} (CPU)`,
      (cpu.user + cpu.system) / N);
  }
}
await fh.close();
fs.closeSync(fd);
fs.unlinkSync(file);
