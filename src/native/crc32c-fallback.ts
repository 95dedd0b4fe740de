// TypeScript twins of the native crc32c and crc32cBlocks kernels (native/src/lunfs_native.c):
// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) with slicing-by-8 tables. Used when the
// addon is not loaded, and by tests as the reference the addon must agree with.

import { isUint32Array, isUint8Array } from 'node:util/types';

const reflectedPolynomial = 0x82f63b78;

/**
 * Eight 256-entry tables laid end to end: entry [slice * 256 + byte] is the CRC register after
 * feeding `byte` followed by `slice` zero bytes. Slice 0 is the classic byte-at-a-time table.
 */
const slicingTables = buildSlicingTables();

function buildSlicingTables(): Int32Array {
  const tables = new Int32Array(8 * 256);
  for (let byteValue = 0; byteValue < 256; byteValue++) {
    let register = byteValue;
    for (let bit = 0; bit < 8; bit++) {
      register = register & 1 ? (register >>> 1) ^ reflectedPolynomial : register >>> 1;
    }
    tables[byteValue] = register;
  }
  for (let byteValue = 0; byteValue < 256; byteValue++) {
    let register = tables[byteValue];
    for (let slice = 1; slice < 8; slice++) {
      register = (register >>> 8) ^ tables[register & 0xff];
      tables[slice * 256 + byteValue] = register;
    }
  }
  return tables;
}

/**
 * Throws the addon's TypeError (naming functionName) unless data is a Uint8Array and seed an
 * integer in 0..0xFFFFFFFF.
 */
export function checkCrc32cArguments(functionName: string, data: Uint8Array, seed: number): void {
  if (!isUint8Array(data)) {
    throw new TypeError(`${functionName}: data must be a Buffer or Uint8Array`);
  }
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new TypeError(
      `${functionName}: seed must be an integer from 0 to 4294967295 (a previous crc32c result)`,
    );
  }
}

/** Throws the addon's TypeError (naming functionName) unless crc32cBlocks may run on these. */
export function checkCrc32cBlocksArguments(
  functionName: string,
  data: Uint8Array,
  blockBytes: number,
  out: Uint32Array,
): void {
  if (!isUint8Array(data)) {
    throw new TypeError(`${functionName}: data must be a Buffer or Uint8Array`);
  }
  if (
    typeof blockBytes !== 'number' ||
    !Number.isInteger(blockBytes) ||
    blockBytes < 1 ||
    blockBytes > 0xffffffff
  ) {
    throw new TypeError(`${functionName}: blockBytes must be an integer from 1 to 4294967295`);
  }
  if (!isUint32Array(out)) {
    throw new TypeError(`${functionName}: out must be a Uint32Array`);
  }
  if (data.length % blockBytes !== 0) {
    throw new TypeError(
      `${functionName}: data length ${data.length} is not a multiple of blockBytes ${blockBytes}`,
    );
  }
  const blockCount = data.length / blockBytes;
  if (out.length < blockCount) {
    throw new TypeError(
      `${functionName}: out has ${out.length} entries, fewer than the ${blockCount} blocks of data`,
    );
  }
}

/**
 * CRC-32C of `data`, continuing from `seed` (a previous result, 0 to start):
 * crc32c(b, crc32c(a)) === crc32c(a followed by b). Returns an unsigned 32-bit integer.
 */
export function crc32cTypescript(data: Uint8Array, seed = 0): number {
  checkCrc32cArguments('crc32c', data, seed);
  return ~updateRegister(~seed, data, 0, data.length) >>> 0;
}

/**
 * out[i] = crc32c of block i of data (blockBytes bytes each, every block from seed 0), the twin
 * of the addon's crc32cBlocks. data.length must be a multiple of blockBytes; out needs at least
 * one entry per block (later entries are left alone). Throws the addon's TypeErrors otherwise.
 */
export function crc32cBlocksTypescript(
  data: Uint8Array,
  blockBytes: number,
  out: Uint32Array,
): void {
  checkCrc32cBlocksArguments('crc32cBlocks', data, blockBytes, out);
  const blockCount = data.length / blockBytes;
  for (let block = 0; block < blockCount; block++) {
    const start = block * blockBytes;
    out[block] = ~updateRegister(~0, data, start, start + blockBytes) >>> 0;
  }
}

/** Feeds data[start, end) into a raw (inverted) CRC register and returns the new register. */
function updateRegister(
  initialRegister: number,
  data: Uint8Array,
  start: number,
  end: number,
): number {
  const tables = slicingTables;
  let register = initialRegister;
  let index = start;
  const slicedEnd = end - ((end - start) & 7);
  while (index < slicedEnd) {
    const low =
      register ^
      (data[index] | (data[index + 1] << 8) | (data[index + 2] << 16) | (data[index + 3] << 24));
    const high =
      data[index + 4] | (data[index + 5] << 8) | (data[index + 6] << 16) | (data[index + 7] << 24);
    register =
      tables[7 * 256 + (low & 0xff)] ^
      tables[6 * 256 + ((low >>> 8) & 0xff)] ^
      tables[5 * 256 + ((low >>> 16) & 0xff)] ^
      tables[4 * 256 + (low >>> 24)] ^
      tables[3 * 256 + (high & 0xff)] ^
      tables[2 * 256 + ((high >>> 8) & 0xff)] ^
      tables[256 + ((high >>> 16) & 0xff)] ^
      tables[high >>> 24];
    index += 8;
  }
  while (index < end) {
    register = (register >>> 8) ^ tables[(register ^ data[index]) & 0xff];
    index++;
  }
  return register;
}
