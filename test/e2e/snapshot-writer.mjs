// The load generator of snapshot-fio.test.ts (fio is not needed): a separate process that writes
// random 4 KiB-block ranges to a LUN file through FUSE, several writes in flight at once, and keeps
// a journal of what it did, so that the test can tell, for any instant, which writes had completed
// and which had been issued.
//
//   node snapshot-writer.mjs FILE JOURNAL RUN_ID REGION_OFFSET REGION_BLOCKS MAX_BLOCKS QUEUE_DEPTH
//
// Every 4 KiB block written carries a header:
//   0..8    magic 'LUNFSBLK'
//   8..12   run id (u32 LE)
//   12..16  block index in the region (u32 LE)
//   16..20  write sequence number (u32 LE; the first write is 1)
//   20..32  zero
//   32..64  sha256 of bytes 0..32 and 64..4096 (so a torn or mixed block is recognised)
//   64..    random bytes
// Journal: 16-byte records (u32 LE each) KIND, SEQ, FIRST_BLOCK, BLOCK_COUNT, appended with one
// write(2) each: KIND 1 = issued (appended BEFORE the write is handed to the kernel), KIND 2 =
// completed (appended AFTER the write returned). Two writes in flight never share a block, so the
// writes of one block complete in sequence order.
//
// It runs until its stdin closes or it gets SIGTERM, waits for the writes in flight, prints one
// JSON line {issued, completed} and exits 0. A failed write (the server was killed) prints the
// error on stderr and exits 3.

import { createHash, randomBytes, randomInt } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';

// The block and journal format; snapshot-fio.test.ts imports it to read what this writes.
export const blockBytes = 4096;
export const headerBytes = 64;
export const magic = Buffer.from('LUNFSBLK');
export const journalRecordBytes = 16;
export const issuedKind = 1;
export const completedKind = 2;

function blockHash(block) {
  return createHash('sha256')
    .update(block.subarray(0, 32))
    .update(block.subarray(headerBytes))
    .digest();
}

function fillBlock(block, runId, blockIndex, seq) {
  randomBytes(blockBytes - headerBytes).copy(block, headerBytes);
  magic.copy(block, 0);
  block.writeUInt32LE(runId, 8);
  block.writeUInt32LE(blockIndex, 12);
  block.writeUInt32LE(seq, 16);
  block.fill(0, 20, 32);
  blockHash(block).copy(block, 32);
}

async function main() {
  const [file, journalPath, runIdText, offsetText, blocksText, maxText, depthText] =
    process.argv.slice(2);
  const runId = Number(runIdText);
  const regionOffset = Number(offsetText);
  const regionBlocks = Number(blocksText);
  const maxBlocks = Number(maxText);
  const queueDepth = Number(depthText);
  const handle = await open(file, 'r+');
  const journal = openSync(journalPath, 'a');
  const record = Buffer.alloc(journalRecordBytes);
  const log = (kind, seq, first, count) => {
    record.writeUInt32LE(kind, 0);
    record.writeUInt32LE(seq, 4);
    record.writeUInt32LE(first, 8);
    record.writeUInt32LE(count, 12);
    writeSync(journal, record);
  };

  let issued = 0;
  let completed = 0;
  let stopping = false;
  let failed;
  const inFlight = new Map(); // seq -> [first, count]
  let wake;
  process.stdin
    .on('data', () => {})
    .on('end', () => {
      stopping = true;
      wake?.();
    })
    .on('error', () => {
      stopping = true;
      wake?.();
    });
  process.on('SIGTERM', () => {
    stopping = true;
    wake?.();
  });

  const overlaps = (first, count) => {
    for (const [otherFirst, otherCount] of inFlight.values())
      if (first < otherFirst + otherCount && otherFirst < first + count) return true;
    return false;
  };
  const pick = () => {
    for (;;) {
      // Mostly single blocks; sometimes runs that may cross 128 KiB chunk boundaries; sometimes
      // one whole 128 KiB cache page (which a server on memory drives writes through).
      let count = randomInt(4) === 0 ? 1 + randomInt(maxBlocks) : 1;
      let first = randomInt(regionBlocks - count + 1);
      if (randomInt(8) === 0 && regionBlocks >= 32) {
        count = 32;
        first = 32 * randomInt(Math.floor(regionBlocks / 32));
      }
      if (!overlaps(first, count)) return [first, count];
    }
  };
  const issue = () => {
    const [first, count] = pick();
    issued += 1;
    const seq = issued;
    const buffer = Buffer.alloc(count * blockBytes);
    for (let index = 0; index < count; index += 1)
      fillBlock(
        buffer.subarray(index * blockBytes, (index + 1) * blockBytes),
        runId,
        first + index,
        seq,
      );
    inFlight.set(seq, [first, count]);
    log(issuedKind, seq, first, count);
    handle
      .write(buffer, 0, buffer.length, regionOffset + first * blockBytes)
      .then(({ bytesWritten }) => {
        if (bytesWritten !== buffer.length)
          throw new Error(
            `short write: ${bytesWritten} of ${buffer.length} bytes at block ${first}`,
          );
        log(completedKind, seq, first, count);
        completed += 1;
        inFlight.delete(seq);
        wake?.();
      })
      .catch((error) => {
        failed ??= error;
        inFlight.delete(seq);
        wake?.();
      });
  };

  while (!stopping && !failed) {
    while (inFlight.size < queueDepth && !stopping && !failed) issue();
    await new Promise((resolve) => (wake = resolve));
    wake = undefined;
  }
  while (inFlight.size > 0) {
    await new Promise((resolve) => (wake = resolve));
    wake = undefined;
  }
  closeSync(journal);
  if (failed) {
    process.stderr.write(`snapshot-writer: ${failed.stack ?? failed}\n`);
    process.exit(3);
  }
  await handle.close();
  process.stdout.write(JSON.stringify({ issued, completed }) + '\n');
  process.exit(0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    process.stderr.write(`snapshot-writer: ${error.stack ?? error}\n`);
    process.exit(2);
  });
}
