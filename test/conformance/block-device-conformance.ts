// The one conformance suite for the BlockDevice interface (src/block/block-device.ts). Every
// layer runs it: drives, RStores, thin volumes and the full LUN stack. It is black-box: it keeps a
// shadow image of what the device must hold, drives the device, and compares bytes.
//
// What it holds a device to:
// - a write is read back exactly, at aligned and unaligned offsets and lengths, across the
//   boundaries the layer cuts at (sectors, stripe units, allocation units, cache pages), at the
//   first and the last byte; neighbouring bytes never change;
// - never-written space reads as zeros where the layer promises it (thin and cache layers);
// - a range past the end (or negative, or not an integer) rejects with LunfsError EINVAL and
//   changes nothing, and zero-length requests at the very end are accepted;
// - flush resolves and keeps the contents; discard makes exactly its range read zeros;
// - writes awaited one after the other: the last wins, byte for byte;
// - writes issued together and then awaited: every byte holds the value of one of the writes that
//   covered it, and each 512-byte sector of a region covered by the same writes comes whole from
//   one write (no layer splits a write inside a sector); reading it twice gives the same bytes;
// - a read issued together with a write sees, per byte, the old or the new value;
// - optionally, a power cut right after flush loses nothing.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/block-device.js';
import { isLunfsError } from '../../src/util/errors.js';
import { firstDifference, isAllZero, patternBytes, readAll, readRange } from '../support/bytes.js';

export interface ConformanceSubject {
  device: BlockDevice;
  /** Simulates a power cut (after the suite has flushed) and returns the device as reopened. */
  powerCycle?: () => Promise<BlockDevice>;
  /** Releases the device; may also check that nothing outside the device was touched. */
  close(): Promise<void>;
}

export interface ConformanceOptions {
  /** Whether never-written space must read as zeros (thin volumes and everything above them). */
  readsZerosWhenUnwritten: boolean;
  /** Offsets where the layer cuts requests (stripe units, allocation units, pages...). */
  boundariesBytes: readonly number[];
  /** Whether the subject offers powerCycle (simulated drives underneath). */
  survivesPowerCut: boolean;
}

interface Range {
  offsetBytes: number;
  lengthBytes: number;
  label: string;
}

const sectorBytes = 512;

/**
 * The ranges worth writing on a device of sizeBytes with these cut points, clipped to the device.
 */
export function interestingRanges(sizeBytes: number, boundariesBytes: readonly number[]): Range[] {
  const ranges: Range[] = [
    { offsetBytes: 0, lengthBytes: 1, label: 'first byte' },
    { offsetBytes: sizeBytes - 1, lengthBytes: 1, label: 'last byte' },
    { offsetBytes: 1, lengthBytes: 511, label: '511 bytes at 1' },
    { offsetBytes: 511, lengthBytes: 2, label: 'across the first sector boundary' },
    { offsetBytes: 4096, lengthBytes: 4096, label: 'one aligned 4 KiB block' },
    { offsetBytes: 4095, lengthBytes: 4097, label: '4097 bytes at 4095' },
    { offsetBytes: 8193, lengthBytes: 4095, label: '4095 bytes at 8193' },
    { offsetBytes: 3 * 4096 + 100, lengthBytes: 511, label: '511 bytes inside a block' },
    { offsetBytes: sizeBytes - 511, lengthBytes: 511, label: 'last 511 bytes' },
    { offsetBytes: sizeBytes - 4097, lengthBytes: 4097, label: 'last 4097 bytes' },
    { offsetBytes: sizeBytes - 9000, lengthBytes: 5000, label: '5000 bytes near the end' },
  ];
  for (const boundary of new Set(boundariesBytes)) {
    for (
      let multiple = boundary;
      multiple < sizeBytes && multiple <= 3 * boundary;
      multiple += boundary
    ) {
      ranges.push(
        { offsetBytes: multiple - 1, lengthBytes: 2, label: `2 bytes across ${multiple}` },
        { offsetBytes: multiple - 4096, lengthBytes: 8192, label: `8 KiB centred on ${multiple}` },
        {
          offsetBytes: multiple - 700,
          lengthBytes: 4097 + 700,
          label: `4797 bytes across ${multiple}`,
        },
        { offsetBytes: multiple, lengthBytes: 511, label: `511 bytes at ${multiple}` },
      );
    }
    if (2 * boundary + 3 <= sizeBytes)
      ranges.push({
        offsetBytes: 3,
        lengthBytes: 2 * boundary,
        label: `two units (${boundary}) at 3`,
      });
  }
  return ranges
    .map((range) => ({
      ...range,
      lengthBytes: Math.min(range.lengthBytes, sizeBytes - range.offsetBytes),
    }))
    .filter((range) => range.offsetBytes >= 0 && range.lengthBytes > 0);
}

export function describeBlockDeviceConformance(
  name: string,
  makeDevice: () => Promise<ConformanceSubject>,
  options: ConformanceOptions,
): void {
  describe(`${name}: BlockDevice conformance`, () => {
    let subject: ConformanceSubject;
    let device: BlockDevice;
    /** What the device must hold. */
    let shadow: Buffer;

    beforeEach(async () => {
      subject = await makeDevice();
      device = subject.device;
      shadow = await readAll(device);
    });

    afterEach(async () => {
      await subject.close();
    });

    async function writeAndShadow(offsetBytes: number, data: Buffer): Promise<void> {
      await device.write(offsetBytes, data);
      data.copy(shadow, offsetBytes);
    }

    async function expectMatchesShadow(context: string): Promise<void> {
      const image = await readAll(device);
      const difference = firstDifference(image, shadow);
      expect(difference, `${name}: ${context}`).toBeUndefined();
    }

    async function expectWindowMatchesShadow(
      offsetBytes: number,
      lengthBytes: number,
      context: string,
    ): Promise<void> {
      const from = Math.max(0, offsetBytes - 700);
      const to = Math.min(device.sizeBytes, offsetBytes + lengthBytes + 700);
      const window = await readRange(device, from, to - from);
      expect(
        firstDifference(window, shadow.subarray(from, to), from),
        `${name}: ${context}`,
      ).toBeUndefined();
    }

    it('has a positive whole size', () => {
      expect(Number.isSafeInteger(device.sizeBytes)).toBe(true);
      expect(device.sizeBytes).toBeGreaterThan(0);
    });

    if (options.readsZerosWhenUnwritten) {
      it('reads never-written space as zeros', async () => {
        expect(isAllZero(shadow), `${name}: a new device must read as zeros`).toBe(true);
        await writeAndShadow(4096, patternBytes(4096, 7));
        await writeAndShadow(device.sizeBytes - 100, patternBytes(100, 8));
        await expectMatchesShadow('after two small writes, everything else still reads zeros');
      });
    }

    it('reads back writes at aligned and unaligned offsets and lengths, across every boundary', async () => {
      const ranges = interestingRanges(device.sizeBytes, options.boundariesBytes);
      for (const [index, range] of ranges.entries()) {
        const data = patternBytes(range.lengthBytes, 1000 + index);
        await writeAndShadow(range.offsetBytes, data);
        const back = await readRange(device, range.offsetBytes, range.lengthBytes);
        expect(
          firstDifference(back, data, range.offsetBytes),
          `${name}: read back ${range.label}`,
        ).toBeUndefined();
        await expectWindowMatchesShadow(
          range.offsetBytes,
          range.lengthBytes,
          `neighbours of ${range.label}`,
        );
      }
      await expectMatchesShadow('whole device after every range was written');
      await device.flush();
      await expectMatchesShadow('whole device after flush');
    });

    it('rejects a range past the end (or negative, or fractional) with EINVAL and changes nothing', async () => {
      const size = device.sizeBytes;
      await writeAndShadow(size - 8192, patternBytes(8192, 42));
      await writeAndShadow(0, patternBytes(4096, 43));
      const bad: Array<[string, () => Promise<unknown>]> = [
        [
          'write ending one byte past the end',
          () => device.write(size - 10, Buffer.alloc(11, 0xee)),
        ],
        ['write at the end', () => device.write(size, Buffer.alloc(1, 0xee))],
        ['write far past the end', () => device.write(size + (1 << 20), Buffer.alloc(4096, 0xee))],
        ['write at a negative offset', () => device.write(-1, Buffer.alloc(2, 0xee))],
        ['write at a fractional offset', () => device.write(1.5, Buffer.alloc(2, 0xee))],
        ['write at NaN', () => device.write(Number.NaN, Buffer.alloc(2, 0xee))],
        ['write at an unsafe offset', () => device.write(2 ** 60, Buffer.alloc(2, 0xee))],
        ['read ending past the end', () => device.read(size - 1, Buffer.alloc(2))],
        ['read at the end', () => device.read(size, Buffer.alloc(1))],
        ['read at a negative offset', () => device.read(-4096, Buffer.alloc(4096))],
        ['discard ending past the end', () => device.discard(size - 512, 1024)],
        ['discard of more than the device', () => device.discard(0, size + 1)],
        ['discard at a negative offset', () => device.discard(-512, 512)],
        ['discard of a negative length', () => device.discard(0, -512)],
      ];
      for (const [label, request] of bad) {
        let outcome: unknown = 'resolved';
        try {
          await request();
        } catch (error) {
          outcome = error;
        }
        expect(
          isLunfsError(outcome, 'EINVAL'),
          `${name}: ${label} must reject with EINVAL, got ${String(outcome)}`,
        ).toBe(true);
      }
      if (device.prepareWrite) {
        expect(
          () => device.prepareWrite!(size - 1, 2),
          `${name}: prepareWrite past the end`,
        ).toThrowError(expect.objectContaining({ code: 'EINVAL' }));
      }
      await expectMatchesShadow('after the rejected requests');
      await device.flush();
      await expectMatchesShadow('after the rejected requests and a flush');
    });

    it('accepts zero-length requests at the very end', async () => {
      const size = device.sizeBytes;
      await device.write(size, Buffer.alloc(0));
      await device.read(size, Buffer.alloc(0));
      await device.discard(size, 0);
      await device.discard(0, 0);
      await expectMatchesShadow('after zero-length requests');
    });

    it('flush resolves and keeps every byte', async () => {
      await writeAndShadow(100, patternBytes(70_000, 5));
      await device.flush();
      await device.flush();
      await expectMatchesShadow('after two flushes');
    });

    it('discard makes exactly its range read zeros', async () => {
      const size = device.sizeBytes;
      const unit = Math.max(...options.boundariesBytes, 4096);
      const regionLength = Math.min(size, 3 * unit + 5000);
      await writeAndShadow(0, patternBytes(regionLength, 77));
      await writeAndShadow(size - 9000, patternBytes(9000, 78));
      const discards: Range[] = [
        { offsetBytes: unit, lengthBytes: unit, label: 'one whole aligned unit' },
        { offsetBytes: 1, lengthBytes: 1, label: 'one byte' },
        { offsetBytes: 4096 + 3, lengthBytes: unit - 6, label: 'unaligned inside the first unit' },
        { offsetBytes: 2 * unit - 700, lengthBytes: unit + 1400, label: 'across two boundaries' },
        { offsetBytes: 0, lengthBytes: 1, label: 'the first byte' },
        { offsetBytes: size - 1, lengthBytes: 1, label: 'the last byte' },
        { offsetBytes: size - 4097, lengthBytes: 4000, label: 'near the end' },
      ];
      for (const range of discards) {
        if (range.offsetBytes + range.lengthBytes > size) continue;
        await device.discard(range.offsetBytes, range.lengthBytes);
        shadow.fill(0, range.offsetBytes, range.offsetBytes + range.lengthBytes);
        await expectWindowMatchesShadow(
          range.offsetBytes,
          range.lengthBytes,
          `after discard of ${range.label}`,
        );
      }
      await expectMatchesShadow('after every discard');
      await writeAndShadow(unit + 10, patternBytes(3000, 79));
      await expectMatchesShadow('after writing into a discarded unit again');
      await device.flush();
      await expectMatchesShadow('after flush');
    });

    it('writes awaited one after the other: the last one wins', async () => {
      const unit = Math.max(...options.boundariesBytes, 4096);
      const base = Math.max(0, Math.min(unit - 5000, device.sizeBytes - 3 * 4096 - 20_000));
      const writes: Array<[number, number]> = [
        [base, 12_000],
        [base + 3, 100],
        [base + 4000, 9000],
        [base + 512, 512],
        [base + 11_999, 2],
        [base, 1],
      ];
      for (const [index, [offset, length]] of writes.entries()) {
        const clipped = Math.min(length, device.sizeBytes - offset);
        await writeAndShadow(offset, patternBytes(clipped, 300 + index));
      }
      await expectMatchesShadow('after sequential overlapping writes');
    });

    it('writes issued together: each byte holds one of the values written to it, no sector torn', async () => {
      const size = device.sizeBytes;
      const unit = Math.max(...options.boundariesBytes, 4096);
      const base = Math.max(0, Math.min(unit - 6000, size - 40_000));
      const requests: Array<[number, number]> = [
        [base, 20_000],
        [base + 100, 300],
        [base + 4096, 4096],
        [base + 2000, 15_000],
        [base + 19_999, 7000],
        [base + 511, 1026],
      ].map(([offset, length]) => [offset!, Math.min(length!, size - offset!)]);
      const fills = requests.map((_, index) => 0x21 + index * 0x1d);
      const before = Buffer.from(shadow);
      await Promise.all(
        requests.map(([offset, length], index) =>
          device.write(offset, Buffer.alloc(length, fills[index])),
        ),
      );
      const image = await readAll(device);
      const again = await readAll(device);
      expect(
        firstDifference(again, image),
        `${name}: two reads after concurrent writes disagree`,
      ).toBeUndefined();
      // Cut the region at every write boundary and every sector boundary: inside each piece the
      // same writes apply, so the piece must be uniformly one of their fills.
      const cuts = new Set<number>([0, size]);
      for (const [offset, length] of requests) cuts.add(offset).add(offset + length);
      for (let sector = 0; sector <= size; sector += sectorBytes) cuts.add(sector);
      const sortedCuts = [...cuts].filter((cut) => cut <= size).sort((a, b) => a - b);
      for (let index = 0; index + 1 < sortedCuts.length; index += 1) {
        const from = sortedCuts[index]!;
        const to = sortedCuts[index + 1]!;
        const covering = requests.flatMap(([offset, length], writeIndex) =>
          offset <= from && to <= offset + length ? [fills[writeIndex]!] : [],
        );
        const piece = image.subarray(from, to);
        if (covering.length === 0) {
          expect(
            firstDifference(piece, before.subarray(from, to), from),
            `${name}: bytes no write covered changed`,
          ).toBeUndefined();
          continue;
        }
        const value = piece[0]!;
        const uniform = piece.every((byte) => byte === value);
        expect(
          uniform && covering.includes(value),
          `${name}: bytes ${from}..${to} hold ${piece.subarray(0, 8).toString('hex')}, not one of the fills ${covering.join(',')} written there`,
        ).toBe(true);
      }
      image.copy(shadow);
      await device.flush();
      await expectMatchesShadow('after flushing concurrent writes');
    });

    it('a read issued with a write sees, per byte, the old or the new value', async () => {
      const offset = Math.max(
        0,
        Math.min(options.boundariesBytes[0] ?? 4096, device.sizeBytes - 20_000) - 3000,
      );
      const length = Math.min(10_000, device.sizeBytes - offset);
      await writeAndShadow(offset, Buffer.alloc(length, 0x5a));
      const target = Buffer.alloc(length + 2000);
      const readFrom = Math.max(0, offset - 1000);
      const readLength = Math.min(target.length, device.sizeBytes - readFrom);
      await Promise.all([
        device.write(offset, Buffer.alloc(length, 0xa5)),
        device.read(readFrom, target.subarray(0, readLength)),
      ]);
      for (let index = 0; index < readLength; index += 1) {
        const position = readFrom + index;
        const old = shadow[position]!;
        const inWrite = position >= offset && position < offset + length;
        const ok = target[index] === old || (inWrite && target[index] === 0xa5);
        if (!ok)
          expect.fail(
            `${name}: byte ${position} read ${target[index]} during a write, neither old ${old} nor new 0xa5`,
          );
      }
      shadow.fill(0xa5, offset, offset + length);
      await expectMatchesShadow('after the write that raced a read');
    });

    if (options.survivesPowerCut)
      it('after flush, a power cut loses nothing', async () => {
        expect(subject.powerCycle, `${name}: survivesPowerCut needs powerCycle`).toBeDefined();
        const ranges = interestingRanges(device.sizeBytes, options.boundariesBytes);
        for (const [index, range] of ranges.entries())
          await writeAndShadow(range.offsetBytes, patternBytes(range.lengthBytes, 5000 + index));
        await device.discard(0, Math.min(device.sizeBytes, 4096 + 17));
        shadow.fill(0, 0, Math.min(device.sizeBytes, 4096 + 17));
        await device.flush();
        device = await subject.powerCycle!();
        await expectMatchesShadow('after a power cut that followed a flush');
      });
  });
}
