#!/usr/bin/env node
// Micro-benchmark of the byte kernels (src/native/native-kernels.ts, built into dist/ by
// `npx tsc -p tsconfig.json`): microseconds per call for 4 KiB, 128 KiB and 1 MiB of
//  - crc32c through one register (crc32cSingleStream, the path before issue 14) vs three
//    interleaved streams (crc32c);
//  - crc32cAsync on libuv's thread pool: latency (one call awaited at a time) and throughput
//    (8 calls in flight on 8 buffers: wall time / calls);
//  - xorInto vs xorIntoAsync, Buffer.copy vs copyAsync (latency, and 8 in flight).
// An async cell reads "wall (JS)": wall-clock µs per call, and in brackets the µs of CPU the
// JavaScript thread itself spent per call (issuing, settling the promise, the loop around it;
// from /proc/self/task/<pid>/schedstat), which is what the thread pool takes off that thread.
// The pool forms are the addon's own (nativeAsyncKernelsOrNull: always the pool, whatever the
// size), not the exported dispatchers, which stay on the calling thread below 256 KiB. Each cell
// is the median of ROUNDS rounds of about ROUND_MS each; a second table gives the best round of
// each cell, which on a machine shared with other work is the nearer to the uncontended cost.
//   npx tsc -p tsconfig.json && node bench/kernels.mjs
//   ROUNDS=7 ROUND_MS=200 node bench/kernels.mjs
//   node bench/kernels.mjs --splice BENCHMARKS.md   (also writes the "Byte kernels" section there,
//                                                    replacing it; bench/report.mjs keeps it)
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import {
  crc32c,
  crc32cSingleStream,
  kernelImplementation,
  nativeAddonOrNull,
  nativeAsyncKernelsOrNull,
  typescriptAsyncKernels,
  xorInto,
} from '../dist/native/native-kernels.js';

const rounds = Number(process.env.ROUNDS || 5);
const roundMs = Number(process.env.ROUND_MS || 120);
const sizes = [
  ['4 KiB', 4096],
  ['128 KiB', 128 * 1024],
  ['1 MiB', 1 << 20],
];
const inFlight = 8;
const asyncKernels = nativeAsyncKernelsOrNull ?? typescriptAsyncKernels;

function filled(length, seed) {
  const bytes = Buffer.allocUnsafeSlow(length);
  let state = seed | 1;
  for (let index = 0; index < length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = state & 0xff;
  }
  return bytes;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

/** A cell of both tables: the median and the best (lowest) of the rounds' values. */
function summary(values, format = (value) => value.toFixed(2)) {
  return { median: format(median(values)), best: format(Math.min(...values)) };
}

/** µs per call of a synchronous call(), over rounds. */
function timeSync(call) {
  let calls = 1;
  for (;;) {
    const start = process.hrtime.bigint();
    for (let index = 0; index < calls; index++) call();
    if (Number(process.hrtime.bigint() - start) / 1e6 > roundMs / 4) break;
    calls *= 2;
  }
  calls *= 4;
  const results = [];
  for (let round = 0; round < rounds; round++) {
    const start = process.hrtime.bigint();
    for (let index = 0; index < calls; index++) call();
    results.push(Number(process.hrtime.bigint() - start) / 1e3 / calls);
  }
  return summary(results);
}

/** CPU nanoseconds the main (JavaScript) thread has run so far; null where /proc lacks it. */
function mainThreadCpuNs() {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return null;
  }
}

/** µs per call with `depth` calls of start(slot) kept in flight, over rounds. */
async function timeAsync(start, depth) {
  const runFor = async (milliseconds) => {
    let completed = 0;
    const cpuBefore = mainThreadCpuNs();
    const began = process.hrtime.bigint();
    const deadline = began + BigInt(Math.round(milliseconds * 1e6));
    const worker = async (slot) => {
      while (process.hrtime.bigint() < deadline) {
        await start(slot);
        completed++;
      }
    };
    await Promise.all(Array.from({ length: depth }, (_unused, slot) => worker(slot)));
    const wallUs = Number(process.hrtime.bigint() - began) / 1e3 / completed;
    const cpuAfter = mainThreadCpuNs();
    const cpuUs = cpuBefore === null ? Number.NaN : (cpuAfter - cpuBefore) / 1e3 / completed;
    return [wallUs, cpuUs];
  };
  await runFor(roundMs / 4);
  const results = [];
  for (let round = 0; round < rounds; round++) results.push(await runFor(roundMs));
  const wall = summary(results.map(([wallUs]) => wallUs));
  const cpu = summary(results.map(([, cpuUs]) => cpuUs));
  return { median: `${wall.median} (${cpu.median})`, best: `${wall.best} (${cpu.best})` };
}

const splicePath = process.argv.includes('--splice')
  ? process.argv[process.argv.indexOf('--splice') + 1]
  : null;
const startedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const loadBefore = os.loadavg();

const rows = [
  ['Promise.resolve() awaited (the loop alone, no work)', 'async'],
  ['crc32c, one stream (crc32cSingleStream)', 'sync'],
  ['crc32c, three streams (crc32c)', 'sync'],
  ['crc32cAsync, latency (1 in flight)', 'async'],
  [`crc32cAsync, throughput (${inFlight} in flight)`, 'async'],
  ['xorInto (1 source)', 'sync'],
  ['xorIntoAsync (1 source), latency', 'async'],
  [`xorIntoAsync (1 source), ${inFlight} in flight`, 'async'],
  ['Buffer.copy', 'sync'],
  ['copyAsync, latency', 'async'],
  [`copyAsync, ${inFlight} in flight`, 'async'],
];
const medianTable = rows.map(([name]) => [name]);
const bestTable = rows.map(([name]) => [name]);

for (const [, length] of sizes) {
  const sources = Array.from({ length: inFlight }, (_unused, slot) => filled(length, slot + 1));
  const targets = Array.from({ length: inFlight }, (_unused, slot) => filled(length, slot + 101));
  const [source, target] = [sources[0], targets[0]];
  const cells = [
    await timeAsync(() => Promise.resolve(), 1),
    timeSync(() => crc32cSingleStream(source)),
    timeSync(() => crc32c(source)),
    await timeAsync((slot) => asyncKernels.crc32cAsync(sources[slot]), 1),
    await timeAsync((slot) => asyncKernels.crc32cAsync(sources[slot]), inFlight),
    timeSync(() => xorInto(target, source)),
    await timeAsync((slot) => asyncKernels.xorIntoAsync(targets[slot], sources[slot]), 1),
    await timeAsync((slot) => asyncKernels.xorIntoAsync(targets[slot], sources[slot]), inFlight),
    timeSync(() => source.copy(target)),
    await timeAsync((slot) => asyncKernels.copyAsync(targets[slot], sources[slot]), 1),
    await timeAsync((slot) => asyncKernels.copyAsync(targets[slot], sources[slot]), inFlight),
  ];
  cells.forEach((cell, row) => {
    medianTable[row].push(cell.median);
    bestTable[row].push(cell.best);
  });
}

const loadAfter = os.loadavg();
const implementation = nativeAddonOrNull?.crc32cImplementation ?? 'typescript';
const formatLoad = (loads) => loads.map((load) => load.toFixed(2)).join(' ');
const machine =
  `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores, ` +
  `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, kernel ${os.release()}, node ${process.version}`;
const setup =
  `kernels ${kernelImplementation} (crc32c ${implementation}), asynchronous forms on ` +
  `${nativeAsyncKernelsOrNull ? "the addon's thread-pool work" : 'the TypeScript fallback'}, ` +
  `UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}`;
const tableLinesOf = (title, table) => [
  `| ${title} | ${sizes.map(([label]) => label).join(' | ')} |`,
  `|---|${sizes.map(() => '---:').join('|')}|`,
  ...table.map((row) => `| ${row.join(' | ')} |`),
];
const tableLines = [
  ...tableLinesOf(
    `µs per call, median of ${rounds} rounds (async: wall (JS thread CPU))`,
    medianTable,
  ),
  '',
  ...tableLinesOf(`µs per call, best of ${rounds} rounds (async: wall (JS thread CPU))`, bestTable),
];

console.log(`# byte kernels: ${machine}; ${setup}`);
console.log(
  `# load average before / after: ${formatLoad(loadBefore)} / ${formatLoad(loadAfter)}; ` +
    `median of ${rounds} rounds of ${roundMs} ms per cell`,
);
console.log('');
for (const line of tableLines) console.log(line);

if (splicePath !== null) {
  let commit = 'unknown';
  try {
    const hash = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      encoding: 'utf8',
    }).trim();
    commit = `${hash}${dirty ? ' (with uncommitted changes)' : ' (clean tree)'}`;
  } catch {
    // Not a git checkout: the commit stays unknown.
  }
  const commandEnvironment = ['ROUNDS', 'ROUND_MS', 'UV_THREADPOOL_SIZE']
    .filter((name) => process.env[name] !== undefined)
    .map((name) => `${name}=${process.env[name]} `)
    .join('');
  const section = [
    '## Byte kernels',
    '',
    `Measured by \`${commandEnvironment}node bench/kernels.mjs --splice ${splicePath}\` (after \`npx tsc -p tsconfig.json\`) ` +
      `at ${startedAt}, git ${commit}; not part of \`make bench\` (bench/report.mjs keeps this ` +
      'section when it rewrites the file).',
    '',
    `- Machine: ${machine}`,
    `- ${setup}`,
    `- Load average before / after: ${formatLoad(loadBefore)} / ${formatLoad(loadAfter)} ` +
      '(other work on the machine shows in the asynchronous rows first)',
    `- Each cell: median (first table) and best (second table) of ${rounds} rounds of about ` +
      `${roundMs} ms; the best round is the nearer to the cost on a machine left alone. ` +
      'Asynchronous cells: wall-clock ' +
      'µs per call, and in brackets the CPU µs the JavaScript thread itself spent per call ' +
      "(/proc/self/task/PID/schedstat). The asynchronous rows call the addon's own forms, which " +
      'always go to the pool; the exported crc32cAsync, xorIntoAsync and copyAsync work at once ' +
      'on the calling thread below `asyncThresholdBytes` (256 KiB).',
    "- Reading: the pool pays where the JavaScript thread's CPU for an asynchronous call (in " +
      'brackets) is below the synchronous row of the same size; that is what ' +
      '`asyncThresholdBytes` in src/native/native-kernels.ts is set from.',
    '',
    ...tableLines,
    '',
  ].join('\n');
  const report = existsSync(splicePath)
    ? readFileSync(splicePath, 'utf8')
    : '# lunfs benchmarks\n\n';
  const start = report.search(/^## Byte kernels\s*$/m);
  let spliced;
  if (start >= 0) {
    const rest = report.slice(start + 3);
    const next = rest.search(/^## /m);
    spliced = report.slice(0, start) + section + '\n' + (next >= 0 ? rest.slice(next) : '');
  } else {
    const before = report.search(/^## Results per job\s*$/m);
    spliced =
      before >= 0
        ? report.slice(0, before) + section + '\n' + report.slice(before)
        : report.replace(/\n*$/, '\n\n') + section;
  }
  writeFileSync(splicePath, spliced);
  console.log(`\nByte kernels section: ${splicePath}`);
}
