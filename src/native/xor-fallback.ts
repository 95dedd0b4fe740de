// TypeScript twin of the native xorInto kernel (native/src/lunfs_native.c): the XOR used for RAID
// parity, target[i] ^= source[i]. Works on 32-bit words when both arrays are 4-byte aligned in
// their ArrayBuffer and byte by byte otherwise.

import { isUint8Array } from 'node:util/types';

/**
 * target[i] ^= source[i] for every i. Both must be Uint8Arrays (Buffers) of the same length.
 * If the two ranges overlap in memory, the result is as if source were copied first.
 */
export function xorIntoTypescript(target: Uint8Array, source: Uint8Array): void {
  if (!isUint8Array(target)) {
    throw new TypeError('xorInto: target must be a Buffer or Uint8Array');
  }
  if (!isUint8Array(source)) {
    throw new TypeError('xorInto: source must be a Buffer or Uint8Array');
  }
  const length = target.length;
  if (source.length !== length) {
    throw new TypeError(
      `xorInto: target and source must have the same length (target ${length} bytes, source ${source.length} bytes)`,
    );
  }
  if (length === 0) return;

  let sourceBytes = source;
  if (target.buffer === source.buffer && target.byteOffset !== source.byteOffset) {
    const overlap =
      target.byteOffset < source.byteOffset + length &&
      source.byteOffset < target.byteOffset + length;
    if (overlap) sourceBytes = source.slice();
  }

  let index = 0;
  if ((target.byteOffset & 3) === 0 && (sourceBytes.byteOffset & 3) === 0) {
    const wordCount = length >>> 2;
    const targetWords = new Uint32Array(target.buffer, target.byteOffset, wordCount);
    const sourceWords = new Uint32Array(sourceBytes.buffer, sourceBytes.byteOffset, wordCount);
    for (let word = 0; word < wordCount; word++) {
      targetWords[word] ^= sourceWords[word];
    }
    index = wordCount << 2;
  }
  for (; index < length; index++) {
    target[index] ^= sourceBytes[index];
  }
}
