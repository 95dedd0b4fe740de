// ChecksumDrive over a MemoryDrive, black-box: write and read through the filter, damage the
// simulated drive underneath (flipBit in the data or in a table page, power cuts), and check
// what the filter reports and that it heals. Also: the pool layout leaves room for the table of
// every PSEG, and the BlockDevice conformance suite runs on two geometries.

import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkRange, type BlockDevice } from '../../src/block/block-device.js';
import {
  ChecksumDrive,
  ChecksumError,
  checksumGeometryOf,
  isChecksumError,
  type ChecksumGeometry,
} from '../../src/drive/checksum-drive.js';
import {
  checksumBlockBytes,
  checksumTableBytesFor,
  decodeTablePage,
  encodeTablePage,
  entriesPerTablePage,
  storedChecksum,
  tablePageBytes,
} from '../../src/drive/checksum-table.js';
import type { Drive } from '../../src/drive/drive.js';
import { FileDrive } from '../../src/drive/file-drive.js';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import type { DriveHeader } from '../../src/meta/drive-header.js';
import { formatVersion } from '../../src/meta/checksum.js';
import { crc32c } from '../../src/native/native-kernels.js';
import { SeededRandom } from '../../src/util/clock.js';
import { isLunfsError, LunfsError } from '../../src/util/errors.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { planLayout, psegCountFor } from '../../src/pool/pool-layout.js';
import { rowLogBytesFor } from '../../src/raid/row-log.js';
import { patternBytes } from '../support/bytes.js';
import { describeBlockDeviceConformance } from '../conformance/block-device-conformance.js';

const block = checksumBlockBytes;
// Header-like pass-through area, two table pages (the data area's 1024 blocks need 1023 + 1),
// the data area, and a pass-through tail: none of it a multiple of the MemoryDrive's 64 KiB page.
const geometry: ChecksumGeometry = {
  dataOffsetBytes: 128 * KiB,
  dataBytes: 1024 * block,
  tableOffsetBytes: 68 * KiB,
  tableBytes: 2 * tablePageBytes,
};
const dataEnd = geometry.dataOffsetBytes + geometry.dataBytes;
const driveBytes = dataEnd + 20 * KiB + 512;

function makeDrive(): { memory: MemoryDrive; drive: ChecksumDrive } {
  const memory = new MemoryDrive('mem-checksum', driveBytes);
  return { memory, drive: new ChecksumDrive(memory, geometry) };
}

/** A second filter over the same simulated drive: what a restart sees. */
function reopen(memory: MemoryDrive): ChecksumDrive {
  memory.reopen();
  return new ChecksumDrive(memory, geometry);
}

function blockOffset(index: number): number {
  return geometry.dataOffsetBytes + index * block;
}

async function readBack(drive: Drive, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const buffer = Buffer.alloc(lengthBytes);
  await drive.read(offsetBytes, buffer);
  return buffer;
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the request to fail');
}

describe('ChecksumDrive', () => {
  it('round-trips aligned and unaligned writes of several sizes, and verifies them after a restart', async () => {
    const { memory, drive } = makeDrive();
    const shadow = Buffer.alloc(geometry.dataBytes);
    const random = new SeededRandom(11);
    let seed = 1;
    for (const lengthBytes of [1, 511, 4095, 4096, 4097, 8192, 12_289, 128 * KiB, 200_000]) {
      for (const alignedStart of [true, false]) {
        const start = alignedStart
          ? random.integer(geometry.dataBytes / block - 60) * block
          : random.integer(geometry.dataBytes - lengthBytes);
        const data = patternBytes(lengthBytes, seed++);
        await drive.write(geometry.dataOffsetBytes + start, data);
        data.copy(shadow, start);
        const back = await readBack(drive, geometry.dataOffsetBytes + start, lengthBytes);
        expect(back.equals(data), `read back ${lengthBytes} bytes at ${start}`).toBe(true);
        const window = Math.max(0, start - 5000);
        const around = await readBack(
          drive,
          geometry.dataOffsetBytes + window,
          Math.min(geometry.dataBytes - window, lengthBytes + 10_000),
        );
        expect(
          around.equals(shadow.subarray(window, window + around.length)),
          `neighbours of ${lengthBytes} bytes at ${start}`,
        ).toBe(true);
      }
    }
    expect(drive.counters.mismatches).toBe(0);
    await drive.flush();
    expect(drive.dirtyTablePageCount).toBe(0);

    const again = reopen(memory);
    expect(
      (await readBack(again, geometry.dataOffsetBytes, geometry.dataBytes)).equals(shadow),
    ).toBe(true);
    expect(again.counters.verifiedBlocks).toBeGreaterThan(100);
    expect(again.counters).toMatchObject({ mismatches: 0, tablePagesDamaged: 0 });
    expect(await again.verify(geometry.dataOffsetBytes, geometry.dataBytes)).toEqual([]);
  });

  it('reads a fresh all-zero drive without errors and without a format step', async () => {
    const { drive } = makeDrive();
    const image = await readBack(drive, 0, driveBytes);
    expect(image.every((byte) => byte === 0)).toBe(true);
    expect(await drive.verify(geometry.dataOffsetBytes, geometry.dataBytes)).toEqual([]);
    expect(drive.counters).toEqual({ mismatches: 0, tablePagesDamaged: 0, verifiedBlocks: 0 });
    expect(drive.dirtyTablePageCount).toBe(0);
  });

  it('detects a flipped bit on read, names the bad blocks, and heals when the block is written again', async () => {
    const { memory, drive } = makeDrive();
    const data = patternBytes(10 * block, 3);
    await drive.write(blockOffset(20), data);
    memory.flipBit(blockOffset(23) + 17, 2);
    memory.flipBit(blockOffset(27) + block - 1, 7);

    const error = await caught(drive.read(blockOffset(20), Buffer.alloc(10 * block)));
    expect(isChecksumError(error)).toBe(true);
    expect(error).toBeInstanceOf(ChecksumError);
    expect(isLunfsError(error, 'EIO')).toBe(true);
    const checksumError = error as ChecksumError;
    expect(checksumError.badBlocks).toEqual([blockOffset(23), blockOffset(27)]);
    expect(checksumError.driveOffsetBytes).toBe(blockOffset(23));
    expect(checksumError.lengthBytes).toBe(5 * block);
    expect(checksumError.message).toMatch(/mem-checksum/);
    expect(drive.counters.mismatches).toBe(2);

    // An unaligned read inside a bad block fails; one beside it does not.
    const inside = await caught(drive.read(blockOffset(23) + 100, Buffer.alloc(10)));
    expect((inside as ChecksumError).badBlocks).toEqual([blockOffset(23)]);
    expect(
      (await readBack(drive, blockOffset(24) + 1, 3 * block - 2)).equals(
        data.subarray(4 * block + 1, 7 * block - 1),
      ),
    ).toBe(true);

    // A partial write into a bad block needs the rest of the block: it fails and writes nothing.
    const before = await readBack(memory, blockOffset(27), block);
    const partial = await caught(drive.write(blockOffset(27) + 8, Buffer.alloc(8, 0xee)));
    expect((partial as ChecksumError).badBlocks).toEqual([blockOffset(27)]);
    expect((await readBack(memory, blockOffset(27), block)).equals(before)).toBe(true);

    // What the RStore does with the error: rebuild the blocks and write them back.
    for (const bad of checksumError.badBlocks) {
      const index = (bad - blockOffset(20)) / block;
      await drive.write(bad, data.subarray(index * block, (index + 1) * block));
    }
    expect((await readBack(drive, blockOffset(20), 10 * block)).equals(data)).toBe(true);
    expect(await drive.verify(geometry.dataOffsetBytes, geometry.dataBytes)).toEqual([]);
  });

  it('verify lists exactly the flipped blocks, in a range or over the whole area, and never throws', async () => {
    const { memory, drive } = makeDrive();
    await drive.write(geometry.dataOffsetBytes, patternBytes(geometry.dataBytes, 5));
    await drive.flush();
    const random = new SeededRandom(99);
    const flipped = new Set<number>();
    while (flipped.size < 25) flipped.add(random.integer(geometry.dataBytes / block));
    for (const index of flipped)
      memory.flipBit(blockOffset(index) + random.integer(block), random.integer(8));
    const expected = [...flipped].sort((a, b) => a - b).map(blockOffset);
    const fresh = reopen(memory);
    expect(await fresh.verify(geometry.dataOffsetBytes, geometry.dataBytes)).toEqual(expected);
    expect(fresh.counters.mismatches).toBe(25);
    const from = blockOffset(300) + 5;
    const to = blockOffset(700) - 5;
    expect(await fresh.verify(from, to - from)).toEqual(
      expected.filter((offset) => offset + block > from && offset < to),
    );
    await expect(fresh.verify(0, block)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('a table page is its entries little-endian and a crc32c seal; it decodes to the same entries and fails its seal when damaged', () => {
    const random = new SeededRandom(0x7ab1e);
    const entries = new Uint32Array(entriesPerTablePage);
    for (let index = 0; index < entries.length; index += 1)
      entries[index] = random.integer(0x100000000);
    const page = encodeTablePage(entries);
    expect(page.length).toBe(tablePageBytes);
    for (const index of [0, 1, 511, entriesPerTablePage - 1])
      expect(page.readUInt32LE(index * 4)).toBe(entries[index]);
    expect(page.readUInt32LE(entriesPerTablePage * 4)).toBe(
      crc32c(page.subarray(0, entriesPerTablePage * 4)),
    );
    expect(decodeTablePage(page)).toEqual(entries);
    expect(decodeTablePage(Buffer.alloc(tablePageBytes))).toEqual(
      new Uint32Array(entriesPerTablePage),
    );
    page[100] = page[100]! ^ 0x10;
    expect(decodeTablePage(page)).toBeNull();
  });

  it('a damaged table page is counted, its entries lost (its blocks fail their check until written), and rewritten sealed at the next flush', async () => {
    const { memory, drive } = makeDrive();
    const data = patternBytes(8 * block, 8);
    // blocks 1016..1022 are the end of page 0, 1023 is page 1
    await drive.write(blockOffset(1016), data);
    await drive.flush();
    memory.flipBit(geometry.tableOffsetBytes + 40, 1); // page 0

    const damaged = reopen(memory);
    // Nothing vouches for page 0's blocks any more: a read fails (the RStore above rebuilds them
    // from redundancy; without it the read is EIO), page 1's block still reads.
    await expect(readBack(damaged, blockOffset(1016), 7 * block)).rejects.toThrowError(
      ChecksumError,
    );
    expect(
      (await readBack(damaged, blockOffset(1023), block)).equals(data.subarray(7 * block)),
    ).toBe(true);
    expect(damaged.counters.tablePagesDamaged).toBe(1);
    expect(damaged.dirtyTablePageCount).toBe(1);
    memory.flipBit(blockOffset(1023), 0);
    expect(await damaged.verify(blockOffset(1016), 8 * block)).toEqual(
      [...Array(8).keys()].map((index) => blockOffset(1016 + index)),
    );
    await damaged.write(blockOffset(1021), data.subarray(5 * block, 6 * block));
    await damaged.write(blockOffset(1023), data.subarray(7 * block, 8 * block));
    await damaged.flush();
    expect(damaged.dirtyTablePageCount).toBe(0);

    const rawPage = await readBack(memory, geometry.tableOffsetBytes, tablePageBytes);
    expect(decodeTablePage(rawPage)).not.toBeNull();
    const healed = reopen(memory);
    expect(healed.counters.tablePagesDamaged).toBe(0);
    // The lost entries stay lost across the rewrite; the rewritten blocks are protected again.
    expect(await healed.verify(blockOffset(1016), 8 * block)).toEqual(
      [1016, 1017, 1018, 1019, 1020, 1022].map(blockOffset),
    );
    expect(
      (await readBack(healed, blockOffset(1021), block)).equals(
        data.subarray(5 * block, 6 * block),
      ),
    ).toBe(true);
    memory.flipBit(blockOffset(1021) + 9, 4);
    expect(await healed.verify(blockOffset(1021), block)).toEqual([blockOffset(1021)]);
    // recomputeLost takes the lost blocks' data as it is (after an unclean shutdown, no
    // redundancy).
    // every block of page 0 but the rewritten one
    expect(await healed.recomputeLost()).toBe(entriesPerTablePage - 1);
    expect(
      (await readBack(healed, blockOffset(1016), 5 * block)).equals(data.subarray(0, 5 * block)),
    ).toBe(true);
  });

  it('after a power cut, recompute makes every block verify again', async () => {
    let sawMismatch = false;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const { memory, drive } = makeDrive();
      await drive.write(geometry.dataOffsetBytes, patternBytes(64 * block, seed));
      await drive.flush();
      // Writes in flight at the power cut: data and table may disagree afterwards.
      for (let index = 0; index < 64; index += 4)
        await drive.write(blockOffset(index), patternBytes(4 * block, 100 + seed * 64 + index));
      await drive.write(blockOffset(70) + 300, patternBytes(5000, seed + 7));
      memory.crash(new SeededRandom(seed));

      const after = reopen(memory);
      const bad = await after.verify(geometry.dataOffsetBytes, 80 * block);
      if (bad.length > 0) sawMismatch = true;
      await after.recompute(geometry.dataOffsetBytes, 80 * block);
      expect(
        await after.verify(geometry.dataOffsetBytes, geometry.dataBytes),
        `seed ${seed}`,
      ).toEqual([]);
      const image = await readBack(after, geometry.dataOffsetBytes, 80 * block);
      await after.flush();
      const later = reopen(memory);
      expect(
        (await readBack(later, geometry.dataOffsetBytes, 80 * block)).equals(image),
        `seed ${seed}: after a restart`,
      ).toBe(true);
      expect(later.counters.mismatches).toBe(0);
    }
    expect(
      sawMismatch,
      'some power cut left data and table disagreeing (else the test shows nothing)',
    ).toBe(true);
  });

  it('passes reads and writes outside the data area straight through, unverified, and keeps the table to itself', async () => {
    const { memory, drive } = makeDrive();
    const header = patternBytes(4096, 21);
    const tail = patternBytes(3000, 22);
    await drive.write(0, header);
    await drive.write(dataEnd + 100, tail);
    expect((await readBack(memory, 0, 4096)).equals(header)).toBe(true);
    memory.flipBit(10, 3);
    memory.flipBit(dataEnd + 200, 3);
    header[10] = header[10]! ^ 8;
    tail[100] = tail[100]! ^ 8;
    expect((await readBack(drive, 0, 4096)).equals(header)).toBe(true);
    expect((await readBack(drive, dataEnd + 100, 3000)).equals(tail)).toBe(true);
    expect(drive.counters).toEqual({ mismatches: 0, tablePagesDamaged: 0, verifiedBlocks: 0 });
    expect(drive.dirtyTablePageCount).toBe(0);

    // A request across the edge of the data area: only the data part is checked.
    const across = patternBytes(3 * block, 23);
    await drive.write(dataEnd - block - 7, across);
    memory.flipBit(dataEnd + 50, 0);
    across[block + 57] = across[block + 57]! ^ 1;
    expect((await readBack(drive, dataEnd - block - 7, 3 * block)).equals(across)).toBe(true);
    memory.flipBit(dataEnd - 3, 0);
    expect(
      ((await caught(drive.read(dataEnd - block - 7, Buffer.alloc(3 * block)))) as ChecksumError)
        .badBlocks,
    ).toEqual([dataEnd - block]);

    // The table area reads through, but only the filter writes it.
    const tablePage = await readBack(drive, geometry.tableOffsetBytes, tablePageBytes);
    expect(
      tablePage.equals(await readBack(memory, geometry.tableOffsetBytes, tablePageBytes)),
    ).toBe(true);
    for (const [offset, length] of [
      [geometry.tableOffsetBytes, 1],
      [geometry.tableOffsetBytes - 10, 11],
      [geometry.tableOffsetBytes + geometry.tableBytes - 1, 100],
    ] as const) {
      await expect(drive.write(offset, Buffer.alloc(length))).rejects.toMatchObject({
        code: 'EINVAL',
      });
      await expect(drive.discard(offset, length)).rejects.toMatchObject({ code: 'EINVAL' });
    }
    await drive.write(geometry.tableOffsetBytes + geometry.tableBytes, Buffer.alloc(10, 1));
    await drive.write(geometry.tableOffsetBytes, Buffer.alloc(0));
  });

  it('discard records the checksum of zeros (a later flip is caught); forget makes blocks unknown', async () => {
    const { memory, drive } = makeDrive();
    await drive.write(blockOffset(0), patternBytes(16 * block, 31));
    await drive.discard(blockOffset(2), 3 * block); // aligned
    await drive.discard(blockOffset(8) + 100, block); // unaligned: the ends of blocks 8 and 9 stay
    await drive.flush();
    const expected = patternBytes(16 * block, 31);
    expected.fill(0, 2 * block, 5 * block);
    expected.fill(0, 8 * block + 100, 9 * block + 100);
    const again = reopen(memory);
    expect((await readBack(again, blockOffset(0), 16 * block)).equals(expected)).toBe(true);
    memory.flipBit(blockOffset(3) + 1, 1);
    memory.flipBit(blockOffset(9) + 4000, 1);
    expect(await again.verify(blockOffset(0), 16 * block)).toEqual([
      blockOffset(3),
      blockOffset(9),
    ]);

    await again.forget(blockOffset(3), block);
    await again.forget(blockOffset(9) + 5, 1); // the whole enclosing block
    expect(await again.verify(blockOffset(0), 16 * block)).toEqual([]);
    await again.read(blockOffset(0), Buffer.alloc(16 * block));
    await again.flush();
    expect(await reopen(memory).verify(blockOffset(0), 16 * block)).toEqual([]);
  });

  it('protects a block whose crc32c is 0 (stored as 1, since 0 means unknown)', async () => {
    const zeroCrcBlock = blockWithCrc32cZero(patternBytes(block - 4, 41));
    expect(crc32c(zeroCrcBlock)).toBe(0);
    expect(storedChecksum(0)).toBe(1);
    expect(storedChecksum(0xdeadbeef)).toBe(0xdeadbeef);
    const { memory, drive } = makeDrive();
    await drive.write(blockOffset(5), zeroCrcBlock);
    await drive.flush();
    const again = reopen(memory);
    expect((await readBack(again, blockOffset(5), block)).equals(zeroCrcBlock)).toBe(true);
    expect(again.counters.verifiedBlocks).toBe(1);
    memory.flipBit(blockOffset(5) + 77, 5);
    expect(await again.verify(blockOffset(5), block)).toEqual([blockOffset(5)]);
  });

  it('serialises requests on the same block: racing reads never see a new checksum with old data', async () => {
    const { drive } = makeDrive();
    const random = new SeededRandom(77);
    const requests: Array<Promise<unknown>> = [];
    for (let round = 0; round < 300; round += 1) {
      const offset = blockOffset(random.integer(12)) + random.integer(block);
      const length = 1 + random.integer(3 * block);
      if (random.chance(0.5)) requests.push(drive.write(offset, patternBytes(length, round)));
      else requests.push(drive.read(offset, Buffer.alloc(length)));
      if (random.chance(0.05)) requests.push(drive.flush());
    }
    await Promise.all(requests);
    expect(drive.counters.mismatches).toBe(0);
    expect(await drive.verify(geometry.dataOffsetBytes, 20 * block)).toEqual([]);
  });

  it('a child write that fails leaves its blocks unknown (never a false mismatch), and EIO passes up as it is', async () => {
    const memory = new MemoryDrive('mem-torn', driveBytes);
    const tearing = new TearingDrive(memory);
    const drive = new ChecksumDrive(tearing, geometry);
    await drive.write(blockOffset(0), patternBytes(4 * block, 51));
    tearing.tearNextWrite = true;
    const error = await caught(drive.write(blockOffset(0), patternBytes(4 * block, 52)));
    expect(isLunfsError(error, 'EIO') && !isChecksumError(error)).toBe(true);
    await drive.read(blockOffset(0), Buffer.alloc(4 * block));
    expect(drive.counters.mismatches).toBe(0);
    memory.fail();
    await expect(drive.read(blockOffset(0), Buffer.alloc(block))).rejects.toSatisfy(
      (failure: unknown) => isLunfsError(failure, 'EIO') && !isChecksumError(failure),
    );
  });

  it('rejects ranges past the end of the drive (or negative, or fractional) with EINVAL', async () => {
    const { drive } = makeDrive();
    for (const request of [
      () => drive.read(driveBytes - 1, Buffer.alloc(2)),
      () => drive.write(driveBytes, Buffer.alloc(1)),
      () => drive.write(-1, Buffer.alloc(1)),
      () => drive.write(1.5, Buffer.alloc(1)),
      () => drive.discard(driveBytes - 10, 11),
      () => drive.recompute(dataEnd - 10, 11),
      () => drive.forget(geometry.dataOffsetBytes - 1, 2),
      () => drive.verify(dataEnd, 1),
    ]) {
      await expect(request()).rejects.toMatchObject({ code: 'EINVAL' });
    }
    await drive.read(driveBytes, Buffer.alloc(0));
    await drive.write(driveBytes, Buffer.alloc(0));
    await drive.discard(0, 0);
    expect(await drive.verify(dataEnd, 0)).toEqual([]);
  });

  it('refuses a geometry that does not fit the drive', () => {
    const small = new MemoryDrive('small', dataEnd - 1);
    expect(() => new ChecksumDrive(small, geometry)).toThrowError(LunfsError);
    expect(
      () =>
        new ChecksumDrive(new MemoryDrive('tiny-table', driveBytes), {
          ...geometry,
          tableBytes: tablePageBytes,
        }),
    ).toThrowError(/cannot hold/);
  });
});

// On tmpfs a FileDrive serves requests up to 32 KiB with sync calls, and ChecksumDrive then does a
// whole-block request at once, without a lock (nothing can run between its steps), when no request
// holds its blocks; larger requests take the lock and the thread pool.
describe('ChecksumDrive over a FileDrive on tmpfs', () => {
  const folders: string[] = [];
  afterAll(async () =>
    Promise.all(folders.map((folder) => rm(folder, { recursive: true, force: true }))),
  );

  async function fileChecksumDrive(): Promise<{ path: string; drive: ChecksumDrive }> {
    const folder = await mkdtemp('/dev/shm/lunfs-checksum-drive-');
    folders.push(folder);
    const path = join(folder, 'drive.img');
    const file = await FileDrive.createSparse(path, driveBytes);
    expect(file.inline).toBe(true);
    return { path, drive: new ChecksumDrive(file, geometry) };
  }

  it('a read of blocks that a larger write holds waits for it, never old data against the new checksum', async () => {
    const { drive } = await fileChecksumDrive();
    await drive.write(blockOffset(0), patternBytes(64 * block, 1));
    // 256 KiB goes to the thread pool: its checksums are recorded, its data not yet written
    const writing = drive.write(blockOffset(0), patternBytes(64 * block, 2));
    const target = Buffer.alloc(block);
    const reading = drive.read(blockOffset(9), target);
    await Promise.all([writing, reading]);
    expect(target.equals(patternBytes(64 * block, 2).subarray(9 * block, 10 * block))).toBe(true);
    expect(drive.counters.mismatches).toBe(0);
  });

  it('serialises inline requests with those through the thread pool: racing reads never see a new checksum with old data', async () => {
    const { drive } = await fileChecksumDrive();
    const random = new SeededRandom(78);
    const requests: Array<Promise<unknown>> = [];
    const expected = Buffer.alloc(40 * block);
    for (let round = 0; round < 400; round += 1) {
      // whole blocks, 4 KiB to 64 KiB: inline up to 32 KiB, the thread pool above
      const first = random.integer(24);
      const length = (1 + random.integer(16)) * block;
      if (random.chance(0.5)) {
        const data = patternBytes(length, round);
        data.copy(expected, first * block);
        requests.push(drive.write(blockOffset(first), data));
      } else {
        requests.push(drive.read(blockOffset(first), Buffer.alloc(length)));
      }
      if (random.chance(0.05)) requests.push(drive.flush());
    }
    await Promise.all(requests);
    expect(drive.counters.mismatches).toBe(0);
    const all = Buffer.alloc(40 * block);
    await drive.read(blockOffset(0), all);
    expect(all.equals(expected)).toBe(true);
  });

  it('flush writes the table pages through the inline path: a restart still catches a flipped bit on each page', async () => {
    const { path, drive } = await fileChecksumDrive();
    // one block under each of the two table pages (1023 entries each)
    await drive.write(blockOffset(5), patternBytes(block, 7));
    await drive.write(blockOffset(1019), patternBytes(5 * block, 8));
    await drive.flush();
    await drive.close();
    const fd = openSync(path, 'r+');
    try {
      for (const offset of [blockOffset(5) + 1, blockOffset(1023) + 2]) {
        const byte = Buffer.alloc(1);
        readSync(fd, byte, 0, 1, offset);
        writeSync(fd, Buffer.from([byte[0]! ^ 0xa5]), 0, 1, offset);
      }
    } finally {
      closeSync(fd);
    }
    const again = new ChecksumDrive(await FileDrive.open(path), geometry);
    const first = await caught(again.read(blockOffset(5), Buffer.alloc(block)));
    expect(isChecksumError(first) && (first as ChecksumError).badBlocks).toEqual([blockOffset(5)]);
    const second = await caught(again.read(blockOffset(1019), Buffer.alloc(5 * block)));
    expect(isChecksumError(second) && (second as ChecksumError).badBlocks).toEqual([
      blockOffset(1023),
    ]);
    expect(again.counters.tablePagesDamaged).toBe(0);
    await again.close();
  });

  it('an inline read catches a flipped bit and names the block; a write heals it', async () => {
    const { path, drive } = await fileChecksumDrive();
    await drive.write(blockOffset(3), patternBytes(2 * block, 5));
    const fd = openSync(path, 'r+');
    try {
      writeSync(
        fd,
        Buffer.from([0xff ^ patternBytes(2 * block, 5)[block + 10]!]),
        0,
        1,
        blockOffset(4) + 10,
      );
    } finally {
      closeSync(fd);
    }
    const error = await caught(drive.read(blockOffset(3), Buffer.alloc(2 * block)));
    expect(isChecksumError(error) && (error as ChecksumError).badBlocks).toEqual([blockOffset(4)]);
    await drive.write(blockOffset(4), patternBytes(block, 6));
    const healed = Buffer.alloc(block);
    await drive.read(blockOffset(4), healed);
    expect(healed.equals(patternBytes(block, 6))).toBe(true);
  });
});

describe('pool layout with a checksum table', () => {
  it('puts the row log right after the journal, the table right after it and the PSEG area at the next MiB, the table big enough for every PSEG of the largest drive', () => {
    for (const sizes of [
      [4 * MiB],
      [6 * MiB],
      [64 * MiB, 1024 * MiB + 12_345],
      [3 * 1024 * MiB, 5 * 1024 * MiB + 4096, 256 * MiB],
      [12 * 1024 * 1024 * MiB],
    ]) {
      for (const [psegSizeBytes, allocationUnitBytes] of [
        [256 * KiB, 64 * KiB],
        [2 * MiB, MiB],
        [64 * MiB, MiB],
      ] as const) {
        const layout = planLayout(sizes, psegSizeBytes, allocationUnitBytes, allocationUnitBytes);
        const journalEnd =
          layout.quorumOffsetBytes + 2 * layout.checkpointSlotBytes + layout.journalBytes;
        expect(layout.rowLogOffsetBytes).toBe(journalEnd);
        expect(layout.rowLogBytes).toBe(rowLogBytesFor(allocationUnitBytes, Math.min(...sizes)));
        expect(layout.checksumTableOffsetBytes).toBe(journalEnd + layout.rowLogBytes);
        expect(layout.checksumTableOffsetBytes % tablePageBytes).toBe(0);
        expect(layout.checksumTableBytes % tablePageBytes).toBe(0);
        expect(layout.psegAreaOffsetBytes % MiB).toBe(0);
        expect(layout.psegAreaOffsetBytes).toBeGreaterThanOrEqual(
          layout.checksumTableOffsetBytes + layout.checksumTableBytes,
        );
        expect(layout.psegAreaOffsetBytes).toBeLessThan(
          layout.checksumTableOffsetBytes + layout.checksumTableBytes + MiB,
        );
        for (const sizeBytes of sizes) {
          const psegCount = psegCountFor(sizeBytes, layout, psegSizeBytes);
          expect(checksumTableBytesFor(psegCount * psegSizeBytes)).toBeLessThanOrEqual(
            layout.checksumTableBytes,
          );
        }
        // An upper bound, but a tight one: at most a page more than the largest drive needs.
        expect(layout.checksumTableBytes).toBeLessThanOrEqual(
          checksumTableBytesFor(Math.max(...sizes)) + tablePageBytes,
        );
      }
    }
    // A small drive loses no PSEG to the table: it fits in the slack before the MiB boundary.
    const small = planLayout([6 * MiB, 6 * MiB, 6 * MiB], 256 * KiB, 64 * KiB, 64 * KiB);
    expect(small.psegAreaOffsetBytes).toBe(3 * MiB);
    // The last 4 KiB holds the tail label (a format-4 pool's PSEGs reached the end).
    expect(psegCountFor(6 * MiB + 4096, small, 256 * KiB)).toBe(12);
    expect(psegCountFor(6 * MiB, small, 256 * KiB)).toBe(11);
    expect(psegCountFor(6 * MiB, small, 256 * KiB, false)).toBe(12);
  });

  it('checksumGeometryOf gives a geometry a ChecksumDrive accepts on every drive of the pool', async () => {
    const sizes = [96 * MiB + 512, 80 * MiB];
    const psegSizeBytes = 2 * MiB;
    const layout = planLayout(sizes, psegSizeBytes, MiB, 128 * KiB);
    for (const sizeBytes of sizes) {
      const header: DriveHeader = {
        poolUuid: 'p',
        driveUuid: 'd',
        driveIndex: 0,
        driveCount: 2,
        driveSizeBytes: sizeBytes,
        psegSizeBytes,
        psegCount: psegCountFor(sizeBytes, layout, psegSizeBytes),
        ...layout,
        holdsQuorumCopy: true,
        createdAtMs: 0,
        formatVersion,
      };
      const drivesGeometry = checksumGeometryOf(header);
      expect(drivesGeometry).toEqual({
        dataOffsetBytes: layout.psegAreaOffsetBytes,
        dataBytes: header.psegCount * psegSizeBytes,
        tableOffsetBytes: layout.checksumTableOffsetBytes,
        tableBytes: layout.checksumTableBytes,
      });
      const drive = new ChecksumDrive(new MemoryDrive('layout', sizeBytes), drivesGeometry);
      const last = drivesGeometry.dataOffsetBytes + drivesGeometry.dataBytes - block;
      await drive.write(last, patternBytes(block, 1));
      await drive.flush();
      expect(await drive.verify(last, block)).toEqual([]);
    }
    expect(entriesPerTablePage * 4 + 4).toBe(tablePageBytes);
  });
});

// Two geometries under the conformance suite. The suite compares every byte of the device with
// what it wrote, but the table changes under it at each flush (and only the filter may write it):
// so the suite gets the drive up to the table, which lies at the drive's end, through a view that
// checks ranges against its own end. The edges of the data area lie on boundaries it writes across.
const conformanceGeometries: Array<{
  label: string;
  viewBytes: number;
  dataOffsetBytes: number;
  dataBytes: number;
  boundariesBytes: number[];
}> = [
  {
    label: 'data area 64 KiB..576 KiB between pass-through head and tail',
    viewBytes: MiB + 1536,
    dataOffsetBytes: 64 * KiB,
    dataBytes: 512 * KiB,
    boundariesBytes: [64 * KiB, 512, 4096, 192 * KiB],
  },
  {
    label: 'data area from offset 0',
    viewBytes: 512 * KiB + 1536,
    dataOffsetBytes: 0,
    dataBytes: 128 * KiB,
    boundariesBytes: [64 * KiB, 512, 4096],
  },
];

for (const {
  label,
  viewBytes,
  dataOffsetBytes,
  dataBytes,
  boundariesBytes,
} of conformanceGeometries) {
  const tableOffsetBytes = Math.ceil(viewBytes / tablePageBytes) * tablePageBytes;
  const subjectGeometry: ChecksumGeometry = {
    dataOffsetBytes,
    dataBytes,
    tableOffsetBytes,
    tableBytes: checksumTableBytesFor(dataBytes),
  };
  describeBlockDeviceConformance(
    `ChecksumDrive (${label})`,
    async () => {
      const memory = new MemoryDrive(
        'mem-checksum-conformance',
        tableOffsetBytes + subjectGeometry.tableBytes,
      );
      let drive = new ChecksumDrive(memory, subjectGeometry);
      return {
        device: new PrefixView(() => drive, viewBytes),
        powerCycle: async () => {
          memory.crash(new SeededRandom(viewBytes));
          drive = new ChecksumDrive(memory, subjectGeometry);
          return new PrefixView(() => drive, viewBytes);
        },
        close: async () => {
          // Nothing the suite did may leave a block disagreeing with its checksum.
          expect(await drive.verify(dataOffsetBytes, dataBytes)).toEqual([]);
          expect(drive.counters.mismatches).toBe(0);
          await drive.close();
        },
      };
    },
    { readsZerosWhenUnwritten: true, boundariesBytes, survivesPowerCut: true },
  );
}

/** The first sizeBytes of a device, with ranges checked against that end. */
class PrefixView implements BlockDevice {
  constructor(
    private readonly device: () => BlockDevice,
    readonly sizeBytes: number,
  ) {}

  read(offsetBytes: number, target: Buffer): Promise<void> {
    checkRange(this, offsetBytes, target.length);
    return this.device().read(offsetBytes, target);
  }

  write(offsetBytes: number, data: Buffer): Promise<void> {
    checkRange(this, offsetBytes, data.length);
    return this.device().write(offsetBytes, data);
  }

  flush(): Promise<void> {
    return this.device().flush();
  }

  discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkRange(this, offsetBytes, lengthBytes);
    return this.device().discard(offsetBytes, lengthBytes);
  }
}

/** A drive whose next write, when told, reaches the medium only in part and then fails (EIO). */
class TearingDrive implements Drive {
  tearNextWrite = false;

  constructor(private readonly child: MemoryDrive) {}

  get sizeBytes(): number {
    return this.child.sizeBytes;
  }

  get path(): string {
    return this.child.path;
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    return this.child.read(offsetBytes, target);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    if (!this.tearNextWrite) return this.child.write(offsetBytes, data);
    this.tearNextWrite = false;
    await this.child.write(offsetBytes, data.subarray(0, Math.floor(data.length / 2)));
    throw new LunfsError('EIO', `write failed on drive ${this.path}: simulated torn write`);
  }

  flush(): Promise<void> {
    return this.child.flush();
  }

  discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.child.discard(offsetBytes, lengthBytes);
  }

  close(): Promise<void> {
    return this.child.close();
  }
}

/**
 * prefix followed by the 4 bytes that make the crc32c of the whole 0: feeding 4 bytes b to a
 * CRC register R gives the same register as feeding 4 zero bytes to R ^ b, and 4 zero-byte
 * steps can be run backwards (the top bytes of the CRC table's entries are all different).
 */
function blockWithCrc32cZero(prefix: Buffer): Buffer {
  const table = new Uint32Array(256);
  for (let value = 0; value < 256; value += 1) {
    let register = value;
    for (let bit = 0; bit < 8; bit += 1)
      register = register & 1 ? (register >>> 1) ^ 0x82f63b78 : register >>> 1;
    table[value] = register >>> 0;
  }
  // The register (before the final inversion) must end as 0xFFFFFFFF for a crc32c of 0.
  let register = 0xffffffff;
  for (let step = 0; step < 4; step += 1) {
    const index = table.findIndex((entry) => entry >>> 24 === register >>> 24);
    register = ((((register ^ table[index]!) >>> 0) << 8) | index) >>> 0;
  }
  const registerAfterPrefix = ~crc32c(prefix) >>> 0;
  const suffix = Buffer.alloc(4);
  suffix.writeUInt32LE((register ^ registerAfterPrefix) >>> 0, 0);
  return Buffer.concat([prefix, suffix]);
}
