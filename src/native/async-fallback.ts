// TypeScript twins of the addon's asynchronous kernels (native/src/byte_jobs.c): the same
// argument checks with the same TypeError messages, the work done at once on the calling thread
// and handed back as a settled promise (a rejected one for bad arguments, nothing changed). Used
// where the addon is not loaded and, with the addon's synchronous kernels, below the size where
// a hop to libuv's thread pool pays (native-kernels.ts); tests compare them with the addon.

import { isUint8Array } from 'node:util/types';
import {
  checkCrc32cArguments,
  checkCrc32cBlocksArguments,
  crc32cBlocksTypescript,
  crc32cTypescript,
} from './crc32c-fallback.js';
import { xorIntoTypescript } from './xor-fallback.js';

/** The addon's limit on xorIntoAsync's sources (far above any RAID row's member count). */
export const maxXorSources = 64;

/** Runs work now; its value or its exception becomes the promise's outcome. */
export function settleNow<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error as Error);
  }
}

/** Throws the addon's TypeError unless xorIntoAsync(target, ...sources) may run. */
export function checkXorIntoAsyncArguments(target: Uint8Array, sources: Uint8Array[]): void {
  if (sources.length < 1) {
    throw new TypeError(
      'xorIntoAsync: expected a target and at least one source (target, ...sources)',
    );
  }
  if (sources.length > maxXorSources) {
    throw new TypeError(`xorIntoAsync: at most ${maxXorSources} sources, got ${sources.length}`);
  }
  if (!isUint8Array(target)) {
    throw new TypeError('xorIntoAsync: target must be a Buffer or Uint8Array');
  }
  sources.forEach((source, index) => {
    if (!isUint8Array(source)) {
      throw new TypeError(`xorIntoAsync: source ${index + 1} must be a Buffer or Uint8Array`);
    }
    if (source.length !== target.length) {
      throw new TypeError(
        `xorIntoAsync: every source must have the target's length (target ${target.length} bytes, source ${index + 1} has ${source.length} bytes)`,
      );
    }
  });
}

/** Throws the addon's TypeError unless copyAsync(target, source) may run. */
export function checkCopyAsyncArguments(target: Uint8Array, source: Uint8Array): void {
  if (!isUint8Array(target)) {
    throw new TypeError('copyAsync: target must be a Buffer or Uint8Array');
  }
  if (!isUint8Array(source)) {
    throw new TypeError('copyAsync: source must be a Buffer or Uint8Array');
  }
  if (source.length !== target.length) {
    throw new TypeError(
      `copyAsync: target and source must have the same length (target ${target.length} bytes, source ${source.length} bytes)`,
    );
  }
}

export function crc32cAsyncTypescript(data: Uint8Array, seed = 0): Promise<number> {
  return settleNow(() => {
    checkCrc32cArguments('crc32cAsync', data, seed);
    return crc32cTypescript(data, seed);
  });
}

export function crc32cBlocksAsyncTypescript(
  data: Uint8Array,
  blockBytes: number,
  out: Uint32Array,
): Promise<void> {
  return settleNow(() => {
    checkCrc32cBlocksArguments('crc32cBlocksAsync', data, blockBytes, out);
    crc32cBlocksTypescript(data, blockBytes, out);
  });
}

/** target ^= each source in turn (a source overlapping the target is read as it is at its turn). */
export function xorIntoAsyncTypescript(
  target: Uint8Array,
  ...sources: Uint8Array[]
): Promise<void> {
  return settleNow(() => {
    checkXorIntoAsyncArguments(target, sources);
    for (const source of sources) xorIntoTypescript(target, source);
  });
}

/** target.set(source): overlapping ranges copy as if through a temporary, like memmove. */
export function copyAsyncTypescript(target: Uint8Array, source: Uint8Array): Promise<void> {
  return settleNow(() => {
    checkCopyAsyncArguments(target, source);
    target.set(source);
  });
}
