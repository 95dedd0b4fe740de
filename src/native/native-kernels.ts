// The one entry point lunfs uses for its hot byte kernels, crc32c, crc32cBlocks and xorInto, and
// their asynchronous forms crc32cAsync, crc32cBlocksAsync, xorIntoAsync and copyAsync (the work
// on libuv's thread pool, so the JavaScript thread only plans). It loads the C addon
// native/build/Release/lunfs_native.node (built by `npx node-gyp rebuild --directory native`) and
// falls back to the TypeScript twins when the addon is missing, fails to load, or
// LUNFS_NO_NATIVE=1 is set. Both implementations give identical results and identical TypeError
// messages. An older addon without crc32cBlocks or the asynchronous forms is still used for the
// others, with the TypeScript twins of what it lacks.
//
// An asynchronous form below asyncThresholdBytes does its work at once on the calling thread (the
// hop to the pool costs more than the work) and returns a settled promise. Either way the caller
// must neither write the bytes nor transfer their ArrayBuffers until the promise settles.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isUint8Array } from 'node:util/types';
import {
  checkCopyAsyncArguments,
  checkXorIntoAsyncArguments,
  copyAsyncTypescript,
  crc32cAsyncTypescript,
  crc32cBlocksAsyncTypescript,
  settleNow,
  xorIntoAsyncTypescript,
} from './async-fallback.js';
import {
  checkCrc32cArguments,
  checkCrc32cBlocksArguments,
  crc32cBlocksTypescript,
  crc32cTypescript,
} from './crc32c-fallback.js';
import { xorIntoTypescript } from './xor-fallback.js';

/** The kernels one implementation provides. */
export interface ByteKernels {
  /** CRC-32C of data continuing from seed (a previous result, 0 to start); unsigned 32-bit. */
  crc32c(data: Uint8Array, seed?: number): number;
  /**
   * out[i] = crc32c of block i of data (blockBytes each, seed 0 for every block); data.length a
   * multiple of blockBytes, out at least one entry per block. One call for a whole request.
   */
  crc32cBlocks(data: Uint8Array, blockBytes: number, out: Uint32Array): void;
  /** target[i] ^= source[i]; both of the same length. */
  xorInto(target: Uint8Array, source: Uint8Array): void;
}

/**
 * The asynchronous forms: the same work, done on libuv's thread pool by the addon. Bad arguments
 * give a rejected promise with the synchronous kernels' TypeError (naming the async function).
 */
export interface AsyncByteKernels {
  /** CRC-32C of data continuing from seed. */
  crc32cAsync(data: Uint8Array, seed?: number): Promise<number>;
  /** crc32cBlocks, resolved once out is filled. */
  crc32cBlocksAsync(data: Uint8Array, blockBytes: number, out: Uint32Array): Promise<void>;
  /** target ^= every source (1 to 64, each of the target's length): RAID parity, reconstruction. */
  xorIntoAsync(target: Uint8Array, ...sources: Uint8Array[]): Promise<void>;
  /** target.set(source) for equal lengths (overlap allowed, as memmove). */
  copyAsync(target: Uint8Array, source: Uint8Array): Promise<void>;
}

/** What the addon's exports look like (see native/src/lunfs_native.c and byte_jobs.c). */
interface NativeAddonExports extends AsyncByteKernels {
  crc32c(data: Uint8Array, seed?: number): number;
  crc32cBlocks(data: Uint8Array, blockBytes: number, out: Uint32Array): void;
  xorInto(target: Uint8Array, source: Uint8Array): void;
}

/**
 * Below this many bytes an asynchronous form works at once on the calling thread. Measured with
 * bench/kernels.mjs on the 2-core test machine: a hop to the pool costs the JavaScript thread
 * 6-8 us of CPU (issue, completion, promise), like an fs.read; crc32c does 128 KiB in about 5 us
 * and XOR in about 4, so the hop starts to pay between 128 and 256 KiB (a copy of memory in cache
 * later still). Below that the pool would only add CPU on the very thread it is meant to spare.
 */
export const asyncThresholdBytes = 256 * 1024;

export const nativeAddonRelativePath = join('native', 'build', 'Release', 'lunfs_native.node');

export const typescriptKernels: ByteKernels = {
  crc32c: crc32cTypescript,
  crc32cBlocks: crc32cBlocksTypescript,
  xorInto: xorIntoTypescript,
};

export const typescriptAsyncKernels: AsyncByteKernels = {
  crc32cAsync: crc32cAsyncTypescript,
  crc32cBlocksAsync: crc32cBlocksAsyncTypescript,
  xorIntoAsync: xorIntoAsyncTypescript,
  copyAsync: copyAsyncTypescript,
};

const nativeLoadResult = loadNativeKernels();

/** The addon's kernels, or null when the addon is not in use. */
export const nativeKernelsOrNull: ByteKernels | null = nativeLoadResult.kernels;

/** Why the addon is not in use (null when it is): shown by tests and diagnostics. */
export const nativeUnavailableReason: string | null = nativeLoadResult.unavailableReason;

/** The loaded addon's exports, or null (for the OS calls in os-calls.ts). */
export const nativeAddonOrNull: Record<string, unknown> | null = nativeLoadResult.addon ?? null;

export const kernelImplementation: 'native' | 'typescript' =
  nativeKernelsOrNull === null ? 'typescript' : 'native';

const activeKernels: ByteKernels = nativeKernelsOrNull ?? typescriptKernels;

const singleStreamCrc32c: (data: Uint8Array, seed?: number) => number =
  typeof nativeLoadResult.addon?.['crc32cSingleStream'] === 'function'
    ? (nativeLoadResult.addon['crc32cSingleStream'] as (data: Uint8Array, seed?: number) => number)
    : crc32cTypescript;

/** CRC-32C (Castagnoli) of data continuing from seed: crc32c(b, crc32c(a)) === crc32c(a + b). */
export function crc32c(data: Uint8Array, seed = 0): number {
  return activeKernels.crc32c(data, seed);
}

/**
 * crc32c through one CRC register: the path crc32c took before it ran three interleaved streams
 * (the addon's crc32cSingleStream, or the TypeScript twin). Same results; kept so the benchmark
 * (bench/kernels.mjs) can compare the two and the tests can check both.
 */
export function crc32cSingleStream(data: Uint8Array, seed = 0): number {
  return singleStreamCrc32c(data, seed);
}

/**
 * out[i] = crc32c of the i-th blockBytes-long block of data (data checksums, one call per request).
 */
export function crc32cBlocks(data: Uint8Array, blockBytes: number, out: Uint32Array): void {
  activeKernels.crc32cBlocks(data, blockBytes, out);
}

/** target[i] ^= source[i] for equal-length byte arrays (RAID parity). */
export function xorInto(target: Uint8Array, source: Uint8Array): void {
  activeKernels.xorInto(target, source);
}

/** The addon's asynchronous forms (always on the pool, whatever the size), or null. */
export const nativeAsyncKernelsOrNull: AsyncByteKernels | null = nativeAsyncKernels(
  nativeLoadResult.addon,
);

/**
 * CRC-32C of data from seed; from asyncThresholdBytes on computed on libuv's thread pool.
 * Resolves to what crc32c(data, seed) returns.
 */
export function crc32cAsync(data: Uint8Array, seed = 0): Promise<number> {
  if (nativeAsyncKernelsOrNull !== null && isUint8Array(data) && data.length >= asyncThresholdBytes)
    return nativeAsyncKernelsOrNull.crc32cAsync(data, seed);
  return settleNow(() => {
    checkCrc32cArguments('crc32cAsync', data, seed);
    return activeKernels.crc32c(data, seed);
  });
}

/** crc32cBlocks(data, blockBytes, out), from asyncThresholdBytes of data on the thread pool. */
export function crc32cBlocksAsync(
  data: Uint8Array,
  blockBytes: number,
  out: Uint32Array,
): Promise<void> {
  if (nativeAsyncKernelsOrNull !== null && isUint8Array(data) && data.length >= asyncThresholdBytes)
    return nativeAsyncKernelsOrNull.crc32cBlocksAsync(data, blockBytes, out);
  return settleNow(() => {
    checkCrc32cBlocksArguments('crc32cBlocksAsync', data, blockBytes, out);
    activeKernels.crc32cBlocks(data, blockBytes, out);
  });
}

/**
 * target ^= sources[0] ^ sources[1] ^ ... (each of the target's length): RAID-5 parity and
 * reconstruction, from asyncThresholdBytes of target on the thread pool.
 */
export function xorIntoAsync(target: Uint8Array, ...sources: Uint8Array[]): Promise<void> {
  if (
    nativeAsyncKernelsOrNull !== null &&
    isUint8Array(target) &&
    target.length >= asyncThresholdBytes
  )
    return nativeAsyncKernelsOrNull.xorIntoAsync(target, ...sources);
  return settleNow(() => {
    checkXorIntoAsyncArguments(target, sources);
    for (const source of sources) activeKernels.xorInto(target, source);
  });
}

/** target.set(source) for equal lengths, from asyncThresholdBytes on the thread pool. */
export function copyAsync(target: Uint8Array, source: Uint8Array): Promise<void> {
  if (
    nativeAsyncKernelsOrNull !== null &&
    isUint8Array(target) &&
    target.length >= asyncThresholdBytes
  )
    return nativeAsyncKernelsOrNull.copyAsync(target, source);
  return settleNow(() => {
    checkCopyAsyncArguments(target, source);
    target.set(source);
  });
}

/**
 * The addon's asynchronous exports, each turning a synchronous throw (bad arguments, checked
 * before anything is queued) into a rejected promise; null when the addon lacks them.
 */
function nativeAsyncKernels(addon: Record<string, unknown> | undefined): AsyncByteKernels | null {
  const exports = addon as Partial<NativeAddonExports> | undefined;
  const { crc32cAsync, crc32cBlocksAsync, xorIntoAsync, copyAsync } = exports ?? {};
  if (
    typeof crc32cAsync !== 'function' ||
    typeof crc32cBlocksAsync !== 'function' ||
    typeof xorIntoAsync !== 'function' ||
    typeof copyAsync !== 'function'
  ) {
    return null;
  }
  return {
    crc32cAsync: (data, seed) => rejectOnThrow(() => crc32cAsync(data, seed)),
    crc32cBlocksAsync: (data, blockBytes, out) =>
      rejectOnThrow(() => crc32cBlocksAsync(data, blockBytes, out)),
    xorIntoAsync: (target, ...sources) => rejectOnThrow(() => xorIntoAsync(target, ...sources)),
    copyAsync: (target, source) => rejectOnThrow(() => copyAsync(target, source)),
  };
}

/** start()'s promise, or a promise rejected with what start threw. */
function rejectOnThrow<T>(start: () => Promise<T>): Promise<T> {
  try {
    return start();
  } catch (error) {
    return Promise.reject(error as Error);
  }
}

/** The first folder at or above startFolder whose package.json names the package "lunfs". */
function findPackageRoot(startFolder: string): string | null {
  let folder = startFolder;
  for (;;) {
    const packageJsonPath = join(folder, 'package.json');
    if (existsSync(packageJsonPath)) {
      try {
        const packageJson = JSON.parse(readFileSync(packageJsonPath, 'utf8')) as { name?: unknown };
        if (packageJson.name === 'lunfs') return folder;
      } catch {
        // An unreadable or malformed package.json is not ours; keep walking up.
      }
    }
    const parentFolder = dirname(folder);
    if (parentFolder === folder) return null;
    folder = parentFolder;
  }
}

interface NativeLoadResult {
  kernels: ByteKernels | null;
  unavailableReason: string | null;
  /** The addon's whole export object (its OS calls are read by src/native/os-calls.ts). */
  addon?: Record<string, unknown>;
}

function unavailable(reason: string): NativeLoadResult {
  return { kernels: null, unavailableReason: reason };
}

function loadNativeKernels(): NativeLoadResult {
  if (process.env['LUNFS_NO_NATIVE'] === '1') {
    return unavailable('disabled by LUNFS_NO_NATIVE=1');
  }
  const thisFile = fileURLToPath(import.meta.url);
  const packageRoot = findPackageRoot(dirname(thisFile));
  if (packageRoot === null) {
    return unavailable(`no package.json named "lunfs" in any folder above ${thisFile}`);
  }
  const addonPath = join(packageRoot, nativeAddonRelativePath);
  if (!existsSync(addonPath)) {
    return unavailable(
      `${addonPath} does not exist (build it with: npx node-gyp rebuild --directory native)`,
    );
  }
  let addon: Partial<NativeAddonExports>;
  try {
    addon = createRequire(import.meta.url)(addonPath) as Partial<NativeAddonExports>;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return unavailable(`${addonPath} failed to load: ${message}`);
  }
  if (typeof addon.crc32c !== 'function' || typeof addon.xorInto !== 'function') {
    return unavailable(`${addonPath} does not export the functions crc32c and xorInto`);
  }
  // The addon validates its own arguments and treats a missing seed as 0, so its functions are
  // used as they are, without a wrapper. An addon built before crc32cBlocks existed lacks it.
  const crc32cBlocksKernel =
    typeof addon.crc32cBlocks === 'function' ? addon.crc32cBlocks : crc32cBlocksTypescript;
  return {
    kernels: { crc32c: addon.crc32c, crc32cBlocks: crc32cBlocksKernel, xorInto: addon.xorInto },
    unavailableReason: null,
    addon: addon as Record<string, unknown>,
  };
}
