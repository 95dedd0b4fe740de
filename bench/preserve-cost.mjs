#!/usr/bin/env node
// The CPU one preservation costs, in process (no FUSE, no fio): a pool of sparse file drives on
// tmpfs, a fully written LUN, N snapshots, then random 4 KiB writes through the LUN's cache at a
// fixed rate of flushes, as a QD1 fio job would give. Prints the process CPU (user + system, all
// threads) per write and per preservation, with and without snapshots, on the same pool.
//
//   node bench/preserve-cost.mjs [--raid 0|5] [--snapshots 32] [--lun-mib 256] [--writes 20000]
// Needs dist/ built; run as root on a machine with /dev/shm.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : fallback;
};
const raid = option('raid', '0');
const snapshotCount = Number(option('snapshots', '32'));
const lunBytes = Number(option('lun-mib', '256')) << 20;
const writes = Number(option('writes', '20000'));
const profileDir = option('profile', '');
const dir = option('dir', `/dev/shm/lunfs-preserve-cost.${process.pid}`);

const { openPool } = await import(`${repo}/dist/cli/pool-access.js`);
const { Controller } = await import(`${repo}/dist/volume/controller.js`);
const { systemClock } = await import(`${repo}/dist/util/clock.js`);
const { layerLogger } = await import(`${repo}/dist/util/logger.js`);

const bin = path.join(repo, 'dist/bin.js');
rmSync(dir, { recursive: true, force: true });
const driveBytes = Math.ceil((lunBytes * 3) / 4 / (1 << 20)) * (1 << 20) + (256 << 20);
execFileSync('node', [
  bin,
  'pool',
  'create',
  dir,
  '--drives',
  '4',
  '--drive-size',
  String(driveBytes),
  '--raid',
  raid,
]);
execFileSync('node', [bin, 'lun', 'create', dir, 'lun0', '--size', String(lunBytes)]);

let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed / 0x80000000;
};

/** The pool opened in this process, with lun0's stack. */
async function openLun(cacheBytes) {
  const pool = await openPool(dir, {});
  const controller = new Controller(pool, {
    cacheBytes,
    clock: systemClock,
    log: layerLogger('controller'),
  });
  await controller.openSnapshots();
  return { controller, stack: controller.stack('lun0') };
}

async function run(snapshots) {
  const { controller, stack } = await openLun(256 << 20);
  for (let s = 0; s < snapshots; s += 1)
    await controller.createSnapshot(`lun0@b${Date.now()}x${s}`);
  const block = Buffer.alloc(4096);
  const session = profileDir ? new Session() : undefined;
  if (session) {
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
  }
  const before = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < writes; i += 1) {
    block.writeUInt32LE(i, 0);
    await stack.cache.write(Math.floor(random() * (lunBytes / 4096)) * 4096, block);
    if (i % 64 === 63) await new Promise((resolve) => setImmediate(resolve));
  }
  await stack.cache.flush();
  const wallUs = Number(process.hrtime.bigint() - t0) / 1e3;
  const cpu = process.cpuUsage(before);
  if (session) {
    const { profile } = await session.post('Profiler.stop');
    mkdirSync(profileDir, { recursive: true });
    writeFileSync(
      path.join(profileDir, `snapshots-${snapshots}.cpuprofile`),
      JSON.stringify(profile),
    );
    session.disconnect();
  }
  const preserved = stack.snapshots.targetVolume?.usedSlotCount ?? 0;
  const batches = stack.snapshots.targetVolume?.batchCounters;
  if (batches) console.log(`batches: ${JSON.stringify(batches)}`);
  for (const snapshot of stack.snapshots.all())
    await controller.removeSnapshot(`lun0@${snapshot.name}`);
  await controller.close();
  return { cpuUs: cpu.user + cpu.system, wallUs, preserved };
}

// Fill the LUN first, so that every chunk holds data to preserve.
{
  const { controller, stack } = await openLun(64 << 20);
  const chunk = Buffer.alloc(1 << 20);
  for (let offset = 0; offset < lunBytes; offset += chunk.length) {
    for (let i = 0; i < chunk.length; i += 4)
      chunk.writeUInt32LE(((offset + i) ^ 0x9e3779b9) >>> 0, i);
    await stack.cache.write(offset, chunk);
  }
  await stack.cache.flush();
  await controller.close();
}
const only = option('only', '');
if (only !== '') {
  // One phase alone (for an outside profiler such as perf): prints its CPU per write.
  const result = await run(Number(only));
  console.log(
    `${only} snapshots: ${(result.cpuUs / writes).toFixed(1)} µs CPU/write, ${result.preserved} preservations`,
  );
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
const none = await run(0);
const some = await run(snapshotCount);
const perWrite = (r) => r.cpuUs / writes;
console.log(`raid ${raid}, LUN ${lunBytes >> 20} MiB, ${writes} random 4 KiB writes`);
console.log(
  `0 snapshots: ${perWrite(none).toFixed(1)} µs CPU/write, ${(none.wallUs / writes).toFixed(1)} µs wall/write`,
);
console.log(
  `${snapshotCount} snapshots: ${perWrite(some).toFixed(1)} µs CPU/write, ${(some.wallUs / writes).toFixed(1)} µs wall/write, ${some.preserved} preservations`,
);
console.log(`CPU per preservation: ${((some.cpuUs - none.cpuUs) / some.preserved).toFixed(1)} µs`);
rmSync(dir, { recursive: true, force: true });
