// Byte helpers for tests: reproducible patterns, whole-device reads, and a first-difference
// message that says where two images part (a bare "buffers differ" helps nobody).

import type { BlockDevice } from '../../src/block/block-device.js';
import { SeededRandom } from '../../src/util/clock.js';

/** lengthBytes of pseudo-random bytes that depend only on seed. */
export function patternBytes(lengthBytes: number, seed: number): Buffer {
  const buffer = Buffer.alloc(lengthBytes);
  const random = new SeededRandom(seed);
  let index = 0;
  for (; index + 4 <= lengthBytes; index += 4)
    buffer.writeUInt32LE(Math.floor(random.next() * 0x100000000), index);
  for (; index < lengthBytes; index += 1) buffer[index] = random.integer(256);
  return buffer;
}

/**
 * length deterministic pseudo-random bytes (xorshift32) of seed: cheap enough for property tests
 * over many lengths, and a failing case replays from its seed.
 */
export function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = seed | 1;
  for (let index = 0; index < length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = state & 0xff;
  }
  return bytes;
}

/** Reads the whole device in pieces of at most chunkBytes. */
export async function readAll(device: BlockDevice, chunkBytes = 1 << 20): Promise<Buffer> {
  const image = Buffer.alloc(device.sizeBytes);
  for (let offset = 0; offset < image.length; offset += chunkBytes) {
    await device.read(offset, image.subarray(offset, Math.min(offset + chunkBytes, image.length)));
  }
  return image;
}

export async function readRange(
  device: BlockDevice,
  offsetBytes: number,
  lengthBytes: number,
): Promise<Buffer> {
  const buffer = Buffer.alloc(lengthBytes);
  await device.read(offsetBytes, buffer);
  return buffer;
}

/** undefined when equal, else a description of the first differing byte (offsets from base). */
export function firstDifference(
  actual: Buffer,
  expected: Buffer,
  baseOffsetBytes = 0,
): string | undefined {
  if (actual.length !== expected.length)
    return `length ${actual.length} != expected ${expected.length}`;
  if (actual.equals(expected)) return undefined;
  let index = 0;
  while (actual[index] === expected[index]) index += 1;
  let end = index;
  while (end < actual.length && actual[end] !== expected[end]) end += 1;
  return (
    `first difference at byte ${baseOffsetBytes + index} (run of ${end - index} differing bytes): ` +
    `got ${actual.subarray(index, index + 8).toString('hex')}, expected ${expected.subarray(index, index + 8).toString('hex')}`
  );
}

export function isAllZero(buffer: Buffer): boolean {
  for (let index = 0; index < buffer.length; index += 1) if (buffer[index] !== 0) return false;
  return true;
}
