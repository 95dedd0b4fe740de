// The load of the crash soak (soak.test.ts), run as a separate process so that it can be killed
// with the server: it writes files on the ext4 that sits on LUN `db`, and raw blocks to LUN `raw`,
// and records what it made durable in two record files kept OUTSIDE the pool (in the sandbox):
//
//   node soak-load.mjs DATA_DIRECTORY RAW_FILE FILE_RECORD RAW_RECORD SEED CYCLE REGION_BLOCKS
//
// Files (DATA_DIRECTORY/f/CYCLE-N, N = 1, 2, ...): each written whole with deterministic content
// (fileContent), then the file and its directory fsync'ed, and only then `F CYCLE N SIZE` appended
// to FILE_RECORD. To keep the ext4 from filling up, the oldest files beyond `liveFilesMax` are
// deleted: `D CYCLE N` is appended BEFORE the unlink (after it the file may or may not be there).
// Raw blocks (4 KiB, in the first REGION_BLOCKS blocks of RAW_FILE): one write at a time, each a
// run of blocks with deterministic content (rawBlock) that names its cycle, sequence number and
// block, so that a block read back tells which write it holds. RAW_RECORD gets, with one write(2)
// each: `I CYCLE SEQ FIRST COUNT` before the pwrite, `W CYCLE SEQ` after it returned, `S CYCLE SEQ`
// after the fdatasync that followed returned.
//
// It runs until it is killed (the soak kills it with the server) or an I/O fails (then it prints
// the error and exits 3: expected once the server is dead). The exports are the content and record
// formats, which soak.test.ts uses to check what it reads back.

import { createHash } from 'node:crypto';
import { openSync, writeSync } from 'node:fs';
import { mkdir, open, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const blockBytes = 4096;
export const headerBytes = 24;
export const blockMagic = Buffer.from('SOAKBLK1');
export const liveFilesMax = 120;
export const rawWriteBlocksMax = 32;

/** A small seeded generator (mulberry32): the same numbers from the same seed, on every run. */
export function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit seed derived from several numbers (the soak seed, a cycle, a sequence number...). */
export function deriveSeed(...parts) {
  return createHash('sha256').update(parts.join(':')).digest().readUInt32LE(0);
}

function fill(buffer, seed) {
  const next = generator(seed);
  const words = Math.floor(buffer.length / 4);
  for (let index = 0; index < words; index += 1)
    buffer.writeUInt32LE(Math.floor(next() * 4294967296), index * 4);
  for (let index = words * 4; index < buffer.length; index += 1)
    buffer[index] = Math.floor(next() * 256);
}

/** The content of file CYCLE-N of a soak with this seed. */
export function fileContent(seed, cycle, number, size) {
  const buffer = Buffer.alloc(size);
  fill(buffer, deriveSeed(seed, 'file', cycle, number));
  return buffer;
}

/** The size of file CYCLE-N: 1 byte to 192 KiB, often not a multiple of the block size. */
export function fileSize(seed, cycle, number) {
  const next = generator(deriveSeed(seed, 'size', cycle, number));
  return 1 + Math.floor(next() * 192 * 1024);
}

/** What raw write CYCLE/SEQ puts in block BLOCK: a header naming it, then seeded bytes. */
export function rawBlock(seed, cycle, sequence, block) {
  const buffer = Buffer.alloc(blockBytes);
  fill(buffer.subarray(headerBytes), deriveSeed(seed, 'raw', cycle, sequence, block));
  blockMagic.copy(buffer, 0);
  buffer.writeUInt32LE(seed >>> 0, 8);
  buffer.writeUInt32LE(cycle, 12);
  buffer.writeUInt32LE(sequence, 16);
  buffer.writeUInt32LE(block, 20);
  return buffer;
}

function appendRecord(descriptor, line) {
  writeSync(descriptor, line + '\n');
}

async function fsyncDirectory(directory) {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Names under f/ as [cycle, number], oldest first. */
async function existingFiles(directory) {
  const names = await readdir(directory);
  return names
    .map((name) => name.split('-').map(Number))
    .filter((parts) => parts.length === 2 && parts.every(Number.isInteger))
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

async function fileLoop(dataDirectory, recordPath, seed, cycle) {
  const directory = join(dataDirectory, 'f');
  await mkdir(directory, { recursive: true });
  const record = openSync(recordPath, 'a');
  const live = await existingFiles(directory);
  for (let number = 1; ; number += 1) {
    const size = fileSize(seed, cycle, number);
    const path = join(directory, `${cycle}-${number}`);
    const handle = await open(path, 'wx');
    try {
      await handle.write(fileContent(seed, cycle, number, size), 0, size, 0);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsyncDirectory(directory);
    appendRecord(record, `F ${cycle} ${number} ${size}`);
    live.push([cycle, number]);
    while (live.length > liveFilesMax) {
      const [oldCycle, oldNumber] = live.shift();
      appendRecord(record, `D ${oldCycle} ${oldNumber}`);
      await unlink(join(directory, `${oldCycle}-${oldNumber}`));
    }
  }
}

async function rawLoop(rawFile, recordPath, seed, cycle, regionBlocks) {
  const record = openSync(recordPath, 'a');
  const handle = await open(rawFile, 'r+');
  const next = generator(deriveSeed(seed, 'raw-schedule', cycle));
  for (let sequence = 1; ; sequence += 1) {
    const count = next() < 0.5 ? 1 : 1 + Math.floor(next() * rawWriteBlocksMax);
    const first = Math.floor(next() * (regionBlocks - count + 1));
    const buffer = Buffer.concat(
      Array.from({ length: count }, (_, index) => rawBlock(seed, cycle, sequence, first + index)),
    );
    appendRecord(record, `I ${cycle} ${sequence} ${first} ${count}`);
    const { bytesWritten } = await handle.write(buffer, 0, buffer.length, first * blockBytes);
    if (bytesWritten !== buffer.length)
      throw new Error(
        `short raw write: ${bytesWritten} of ${buffer.length} bytes at block ${first}`,
      );
    appendRecord(record, `W ${cycle} ${sequence}`);
    await handle.datasync();
    appendRecord(record, `S ${cycle} ${sequence}`);
  }
}

async function main() {
  const [dataDirectory, rawFile, fileRecord, rawRecord, seedText, cycleText, regionText] =
    process.argv.slice(2);
  const seed = Number(seedText);
  const cycle = Number(cycleText);
  await Promise.all([
    fileLoop(dataDirectory, fileRecord, seed, cycle),
    rawLoop(rawFile, rawRecord, seed, cycle, Number(regionText)),
  ]);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write('soak-load: running\n');
  main().catch((error) => {
    process.stderr.write(`soak-load: ${error.stack ?? error}\n`);
    process.exit(3);
  });
}
