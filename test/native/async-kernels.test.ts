// Checks the asynchronous byte kernels (crc32cAsync, crc32cBlocksAsync, xorIntoAsync, copyAsync):
// the addon's forms on libuv's thread pool, their TypeScript twins and the exported dispatchers
// (synchronous below asyncThresholdBytes) all give what the synchronous TypeScript kernels give;
// many jobs in flight at once on distinct buffers, with garbage collections in between, all come
// out right; the work really leaves the JavaScript thread; bad arguments reject with the same
// TypeError everywhere (the addon's own functions throw it synchronously), changing nothing.
// A missing addon fails the native cases unless LUNFS_NO_NATIVE=1 is set, which skips them.

import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  asyncThresholdBytes,
  copyAsync,
  crc32cAsync,
  crc32cBlocksAsync,
  nativeAddonRelativePath,
  nativeAsyncKernelsOrNull,
  nativeUnavailableReason,
  typescriptAsyncKernels,
  typescriptKernels,
  xorIntoAsync,
  type AsyncByteKernels,
} from '../../src/native/native-kernels.js';
import { pseudoRandomBytes } from '../support/bytes.js';

const nativeDisabled = process.env['LUNFS_NO_NATIVE'] === '1';
const packageRoot = fileURLToPath(new URL('../../', import.meta.url));

function requireNativeAsyncKernels(): AsyncByteKernels {
  if (nativeAsyncKernelsOrNull === null) {
    throw new Error(
      `native asynchronous kernels not loaded: ${nativeUnavailableReason ?? 'the addon lacks them'}`,
    );
  }
  return nativeAsyncKernelsOrNull;
}

/** A Uint8Array of the given length `offset` bytes into a fresh ArrayBuffer with slack after. */
function bytesAtOffset(length: number, offset: number, seed: number): Uint8Array {
  const backing = pseudoRandomBytes(length + offset + 8, seed);
  return backing.subarray(offset, offset + length);
}

function sameBytes(first: Uint8Array, second: Uint8Array): boolean {
  return Buffer.from(first.buffer, first.byteOffset, first.length).equals(
    Buffer.from(second.buffer, second.byteOffset, second.length),
  );
}

/** The whole ArrayBuffer behind a view, so writes outside the view show up too. */
function wholeBacking(view: Uint8Array): Uint8Array {
  return new Uint8Array(view.buffer);
}

const lengthArbitrary = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.integer({ min: asyncThresholdBytes - 9, max: asyncThresholdBytes + 9 }),
  fc.integer({ min: 0, max: 300 * 1024 }),
);
const offsetArbitrary = fc.integer({ min: 0, max: 15 });
const fillSeedArbitrary = fc.integer({ min: 1, max: 0x7fffffff });
const crcSeedArbitrary = fc.oneof(
  fc.constantFrom(0, 0xffffffff),
  fc.integer({ min: 0, max: 0xffffffff }),
);

const implementations: Array<[string, () => AsyncByteKernels]> = [
  ['typescript', () => typescriptAsyncKernels],
  ['exported (threshold)', () => ({ crc32cAsync, crc32cBlocksAsync, xorIntoAsync, copyAsync })],
];
if (!nativeDisabled) implementations.push(['native (always the pool)', requireNativeAsyncKernels]);

describe.each(implementations)('%s asynchronous kernels', (_name, getKernels) => {
  it('crc32cAsync gives the synchronous TypeScript crc32c, 0..300 KiB, any offset and seed', async () => {
    const kernels = getKernels();
    expect(await kernels.crc32cAsync(Buffer.from('123456789'))).toBe(0xe3069283);
    await fc.assert(
      fc.asyncProperty(
        lengthArbitrary,
        offsetArbitrary,
        fillSeedArbitrary,
        crcSeedArbitrary,
        async (length, offset, fillSeed, crcSeed) => {
          const data = bytesAtOffset(length, offset, fillSeed);
          expect(await kernels.crc32cAsync(data, crcSeed)).toBe(
            typescriptKernels.crc32c(data, crcSeed),
          );
        },
      ),
      { numRuns: 120 },
    );
  });

  it('crc32cBlocksAsync gives the synchronous TypeScript crc32cBlocks', async () => {
    const kernels = getKernels();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constantFrom(4096, 512, 1), fc.integer({ min: 1, max: 9000 })),
        fc.integer({ min: 0, max: 40 }),
        offsetArbitrary,
        fillSeedArbitrary,
        async (blockBytes, blockCount, offset, fillSeed) => {
          const data = bytesAtOffset(blockBytes * blockCount, offset, fillSeed);
          const fromAsync = new Uint32Array(blockCount + 1).fill(7);
          const expected = new Uint32Array(blockCount + 1).fill(7);
          await kernels.crc32cBlocksAsync(data, blockBytes, fromAsync);
          typescriptKernels.crc32cBlocks(data, blockBytes, expected);
          expect([...fromAsync]).toEqual([...expected]);
        },
      ),
      { numRuns: 80 },
    );
  });

  it('xorIntoAsync of 1 to 5 sources gives one synchronous xorInto per source', async () => {
    const kernels = getKernels();
    await fc.assert(
      fc.asyncProperty(
        lengthArbitrary,
        fc.integer({ min: 1, max: 5 }),
        offsetArbitrary,
        fillSeedArbitrary,
        async (length, sourceCount, offset, fillSeed) => {
          const target = bytesAtOffset(length, offset, fillSeed);
          const expected = bytesAtOffset(length, offset, fillSeed);
          const sources = Array.from({ length: sourceCount }, (_unused, index) =>
            bytesAtOffset(length, (offset + 3 * index) % 16, fillSeed + index + 1),
          );
          await kernels.xorIntoAsync(target, ...sources);
          for (const source of sources) typescriptKernels.xorInto(expected, source);
          expect(sameBytes(wholeBacking(target), wholeBacking(expected))).toBe(true);
        },
      ),
      { numRuns: 80 },
    );
  });

  it('xorIntoAsync with a source that is or overlaps the target reads it at its turn', async () => {
    const kernels = getKernels();
    for (const length of [100, 3 * asyncThresholdBytes + 5]) {
      const backing = pseudoRandomBytes(length * 2 + 32, length);
      const target = backing.subarray(8, 8 + length);
      const overlapping = backing.subarray(19, 19 + length);
      const other = pseudoRandomBytes(length, 5);
      const expectedBacking = Uint8Array.from(backing);
      const expectedTarget = expectedBacking.subarray(8, 8 + length);
      for (const source of [other, expectedBacking.subarray(19, 19 + length), expectedTarget]) {
        typescriptKernels.xorInto(expectedTarget, source);
      }
      await kernels.xorIntoAsync(target, other, overlapping, target);
      expect(sameBytes(backing, expectedBacking)).toBe(true);
      expect(target.every((byte) => byte === 0)).toBe(true);
    }
  });

  it('copyAsync copies like set(), overlapping ranges included', async () => {
    const kernels = getKernels();
    for (const length of [0, 1, 4095, asyncThresholdBytes, 200_001]) {
      const source = bytesAtOffset(length, 3, length + 1);
      const target = bytesAtOffset(length, 5, length + 2);
      const expected = Uint8Array.from(wholeBacking(target));
      expected.set(source, 5);
      await kernels.copyAsync(target, source);
      expect(sameBytes(wholeBacking(target), expected)).toBe(true);
      for (const [targetStart, sourceStart] of [
        [0, 7],
        [7, 0],
      ] as const) {
        const backing = pseudoRandomBytes(length + 16, length + 3);
        const expectedBacking = Uint8Array.from(backing);
        expectedBacking.copyWithin(targetStart, sourceStart, sourceStart + length);
        await kernels.copyAsync(
          backing.subarray(targetStart, targetStart + length),
          backing.subarray(sourceStart, sourceStart + length),
        );
        expect(sameBytes(backing, expectedBacking)).toBe(true);
      }
    }
  });

  it('many jobs in flight at once on distinct buffers all come out right', async () => {
    const kernels = getKernels();
    const checks: Array<Promise<void>> = [];
    for (let job = 0; job < 96; job++) {
      const length = [asyncThresholdBytes, 128 * 1024, 1 << 20, 4096 * 37][job % 4]!;
      const data = pseudoRandomBytes(length, job + 1);
      switch (job % 4) {
        case 0: {
          const expected = typescriptKernels.crc32c(data, job);
          checks.push(kernels.crc32cAsync(data, job).then((crc) => expect(crc).toBe(expected)));
          break;
        }
        case 1: {
          const target = pseudoRandomBytes(length, job + 1000);
          const other = pseudoRandomBytes(length, job + 2000);
          const expected = Uint8Array.from(target);
          typescriptKernels.xorInto(expected, data);
          typescriptKernels.xorInto(expected, other);
          checks.push(
            kernels
              .xorIntoAsync(target, data, other)
              .then(() => expect(sameBytes(target, expected)).toBe(true)),
          );
          break;
        }
        case 2: {
          const target = new Uint8Array(length);
          checks.push(
            kernels.copyAsync(target, data).then(() => expect(sameBytes(target, data)).toBe(true)),
          );
          break;
        }
        default: {
          const out = new Uint32Array(length / 4096);
          const expected = new Uint32Array(length / 4096);
          typescriptKernels.crc32cBlocks(data, 4096, expected);
          checks.push(
            kernels
              .crc32cBlocksAsync(data, 4096, out)
              .then(() => expect([...out]).toEqual([...expected])),
          );
        }
      }
    }
    await Promise.all(checks);
  });

  it('bad arguments reject with a TypeError and change nothing', async () => {
    const kernels = getKernels();
    const loose = kernels as unknown as Record<string, (...values: unknown[]) => Promise<unknown>>;
    const big = asyncThresholdBytes * 2;
    const target = pseudoRandomBytes(big, 1);
    const targetBefore = Uint8Array.from(target);
    const cases: Array<[string, unknown[], RegExp]> = [
      ['crc32cAsync', ['text'], /crc32cAsync: data must be a Buffer or Uint8Array/],
      ['crc32cAsync', [new Uint16Array(big)], /data must be a Buffer/],
      ['crc32cAsync', [target, -1], /crc32cAsync: seed must be an integer/],
      ['crc32cAsync', [target, 2 ** 32], /seed must be an integer/],
      ['crc32cBlocksAsync', [target, 3000, new Uint32Array(99)], /not a multiple of blockBytes/],
      [
        'crc32cBlocksAsync',
        [target, 4096, new Uint32Array(big / 4096 - 1)],
        new RegExp(`fewer than the ${big / 4096} blocks`),
      ],
      ['crc32cBlocksAsync', [target, 4096, new Int32Array(8)], /out must be a Uint32Array/],
      ['crc32cBlocksAsync', [target, 0, new Uint32Array(8)], /blockBytes must be an integer/],
      ['xorIntoAsync', [target], /expected a target and at least one source/],
      ['xorIntoAsync', [new ArrayBuffer(big), target], /xorIntoAsync: target must be/],
      ['xorIntoAsync', [target, target, 'x'], /source 2 must be a Buffer/],
      [
        'xorIntoAsync',
        [target, new Uint8Array(big), new Uint8Array(big - 1)],
        new RegExp(`source 2 has ${big - 1} bytes`),
      ],
      [
        'xorIntoAsync',
        [target, ...Array.from({ length: 65 }, () => new Uint8Array(big))],
        /at most 64 sources, got 65/,
      ],
      ['copyAsync', [target, null], /copyAsync: source must be a Buffer/],
      ['copyAsync', [{}, target], /copyAsync: target must be a Buffer/],
      [
        'copyAsync',
        [target, new Uint8Array(big + 1)],
        new RegExp(`same length \\(target ${big} bytes`),
      ],
    ];
    for (const [functionName, values, message] of cases) {
      const outcome = loose[functionName]!(...values);
      expect(outcome).toBeInstanceOf(Promise);
      await expect(outcome).rejects.toThrow(TypeError);
      await expect(loose[functionName]!(...values)).rejects.toThrow(message);
    }
    expect(sameBytes(target, targetBefore)).toBe(true);
  });
});

if (nativeDisabled) {
  console.warn('LUNFS_NO_NATIVE=1: skipping the native asynchronous kernels.');
}

describe.skipIf(nativeDisabled)('native asynchronous kernels', () => {
  /** The addon's own exports, not the promise-wrapping ones. */
  function rawAddon(): Record<string, (...values: unknown[]) => unknown> {
    requireNativeAsyncKernels();
    return createRequire(import.meta.url)(join(packageRoot, nativeAddonRelativePath)) as Record<
      string,
      (...values: unknown[]) => unknown
    >;
  }

  it("the addon's functions throw a TypeError at once for bad arguments, never crash", () => {
    const addon = rawAddon();
    const bytes = new Uint8Array(64);
    const calls: Array<[string, unknown[]]> = [
      ['crc32cAsync', []],
      ['crc32cAsync', [undefined]],
      ['crc32cAsync', [bytes, '1']],
      ['crc32cBlocksAsync', [bytes, 64]],
      ['crc32cBlocksAsync', [bytes, Number.NaN, new Uint32Array(1)]],
      ['xorIntoAsync', []],
      ['xorIntoAsync', [bytes, new Uint8Array(63)]],
      ['xorIntoAsync', [bytes, ...Array.from({ length: 200 }, () => bytes)]],
      ['copyAsync', [bytes]],
      ['copyAsync', [bytes, new DataView(new ArrayBuffer(64))]],
    ];
    for (const [functionName, values] of calls) {
      expect(() => addon[functionName]!(...values), `${functionName}`).toThrow(TypeError);
    }
  });

  it('gives the same TypeError messages as the TypeScript twins', async () => {
    const native = requireNativeAsyncKernels();
    const big = asyncThresholdBytes * 2;
    const cases: Array<(kernels: AsyncByteKernels) => Promise<unknown>> = [
      (kernels) => kernels.crc32cAsync(new Uint8Array(big), 1.5),
      (kernels) => kernels.crc32cBlocksAsync(new Uint8Array(big), 3, new Uint32Array(99_999)),
      (kernels) => kernels.crc32cBlocksAsync(new Uint8Array(big), 4096, new Uint32Array(1)),
      (kernels) => kernels.xorIntoAsync(new Uint8Array(big)),
      (kernels) =>
        kernels.xorIntoAsync(new Uint8Array(big), new Uint8Array(big), new Uint8Array(1)),
      (kernels) => kernels.copyAsync(new Uint8Array(big), new Uint8Array(3)),
    ];
    for (const call of cases) {
      const messageOf = async (kernels: AsyncByteKernels): Promise<string> => {
        const error = await call(kernels).then(
          () => new Error('expected a rejection'),
          (reason: unknown) => reason as Error,
        );
        expect(error).toBeInstanceOf(TypeError);
        return error.message;
      };
      expect(await messageOf(native)).toBe(await messageOf(typescriptAsyncKernels));
    }
  });

  it('does the work off the JavaScript thread from the threshold on, at once below it', async () => {
    const length = 64 << 20;
    const source = new Uint8Array(length).fill(0xa5);
    const target = new Uint8Array(length);
    const pending = copyAsync(target, source);
    // Right after the call a pool thread has copied at most a sliver, from one end or the other.
    const copiedAlready = target[0] === 0xa5 && target[length - 1] === 0xa5;
    await pending;
    expect(copiedAlready).toBe(false);
    expect(sameBytes(target, source)).toBe(true);

    const small = new Uint8Array(asyncThresholdBytes - 1).fill(0x3c);
    const smallTarget = new Uint8Array(small.length);
    const smallPending = copyAsync(smallTarget, small);
    expect(sameBytes(smallTarget, small)).toBe(true);
    await smallPending;
  });

  it('keeps the Buffers alive while the pool works, through garbage collections', async () => {
    setFlagsFromString('--expose-gc');
    const collectGarbage = runInNewContext('gc') as () => void;
    const native = requireNativeAsyncKernels();
    // First keep every pool thread busy for a while (each of these XORs 64 x 8 MiB), so the jobs
    // below are still queued while the collections run.
    const busyTarget = new Uint8Array(8 << 20);
    const busySources = Array.from({ length: 64 }, () => busyTarget);
    const busy = Array.from({ length: 8 }, () =>
      native.xorIntoAsync(new Uint8Array(8 << 20), ...busySources),
    );
    const checks: Array<Promise<void>> = [];
    for (let job = 0; job < 24; job++) {
      // Only the promise is kept: the buffers are reachable from the addon's references alone.
      const data = Buffer.alloc(4 << 20, job + 1);
      const expected = typescriptKernels.crc32c(data.subarray(0, 4096), 0);
      const blocks = new Uint32Array(1024);
      checks.push(
        native
          .crc32cBlocksAsync(data, 4096, blocks)
          .then(() => expect(blocks.every((crc) => crc === expected)).toBe(true)),
      );
    }
    for (let round = 0; round < 3; round++) {
      collectGarbage();
      Buffer.alloc(32 << 20, round);
    }
    await Promise.all([...checks, ...busy]);
  });
});
