// Checks the crc32c, crc32cBlocks and xorInto kernels: known CRC-32C vectors and chaining for both
// implementations, crc32cBlocks against one crc32c per block, and property tests that the C addon
// and the TypeScript twins agree byte for
// byte. A missing addon fails the comparisons (the project builds it in set-up) unless
// LUNFS_NO_NATIVE=1 is set, which skips them.

import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  crc32c,
  crc32cBlocks,
  crc32cSingleStream,
  kernelImplementation,
  nativeAddonRelativePath,
  nativeKernelsOrNull,
  nativeUnavailableReason,
  typescriptKernels,
  xorInto,
  type ByteKernels,
} from '../../src/native/native-kernels.js';
import { pseudoRandomBytes } from '../support/bytes.js';

const nativeDisabled = process.env['LUNFS_NO_NATIVE'] === '1';
const packageRoot = fileURLToPath(new URL('../../', import.meta.url));

/** The addon's kernels; throws (failing the test) when the addon did not load. */
function requireNativeKernels(): ByteKernels {
  if (nativeKernelsOrNull === null) {
    throw new Error(
      `native addon not loaded: ${nativeUnavailableReason ?? 'unknown reason'}. ` +
        'Set LUNFS_NO_NATIVE=1 to skip the native comparisons on purpose.',
    );
  }
  return nativeKernelsOrNull;
}

/** Byte-for-byte equality without vitest's slow element-wise diff on large arrays. */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  const equal = Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(
    Buffer.from(expected.buffer, expected.byteOffset, expected.length),
  );
  if (!equal) expect(actual).toEqual(expected);
}

/** A Uint8Array of the given length starting `offset` bytes into a fresh ArrayBuffer. */
function bytesAtOffset(length: number, offset: number, seed: number): Uint8Array {
  const backing = new Uint8Array(length + offset + 8);
  backing.set(pseudoRandomBytes(backing.length, seed));
  return backing.subarray(offset, offset + length);
}

const lengthArbitrary = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.integer({ min: 0, max: 4096 }),
  fc.integer({ min: 0, max: 70_000 }),
);
const offsetArbitrary = fc.integer({ min: 0, max: 15 });
const fillSeedArbitrary = fc.integer({ min: 1, max: 0x7fffffff });
const crcSeedArbitrary = fc.oneof(
  fc.constantFrom(0, 1, 0xffffffff, 0x80000000),
  fc.integer({ min: 0, max: 0xffffffff }),
);

const implementations: Array<[string, () => ByteKernels]> = [
  ['typescript', () => typescriptKernels],
  ['exported (active)', () => ({ crc32c, crc32cBlocks, xorInto })],
];
if (!nativeDisabled) implementations.push(['native', requireNativeKernels]);

describe.each(implementations)('%s kernels', (_name, getKernels) => {
  it('gives the known CRC-32C vectors', () => {
    const kernels = getKernels();
    expect(kernels.crc32c(Buffer.from('123456789'), 0)).toBe(0xe3069283);
    expect(kernels.crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(kernels.crc32c(new Uint8Array(0), 0)).toBe(0);
    expect(kernels.crc32c(new Uint8Array(32), 0)).toBe(0x8a9136aa);
    expect(kernels.crc32c(new Uint8Array(32).fill(0xff), 0)).toBe(0x62a8ab43);
    // RFC 3720 (iSCSI) B.4: 32 bytes counting up 0x00..0x1F.
    const ascending = Uint8Array.from({ length: 32 }, (_value, index) => index);
    expect(kernels.crc32c(ascending, 0)).toBe(0x46dd794e);
  });

  it('returns the seed for empty data', () => {
    const kernels = getKernels();
    expect(kernels.crc32c(new Uint8Array(0), 0xdeadbeef)).toBe(0xdeadbeef);
  });

  it('chains: crc32c(b, crc32c(a)) === crc32c(a followed by b)', () => {
    const kernels = getKernels();
    fc.assert(
      fc.property(lengthArbitrary, fc.nat(), fillSeedArbitrary, (length, splitChoice, fillSeed) => {
        const whole = pseudoRandomBytes(length, fillSeed);
        const split = length === 0 ? 0 : splitChoice % (length + 1);
        const first = whole.subarray(0, split);
        const second = whole.subarray(split);
        expect(kernels.crc32c(second, kernels.crc32c(first, 0))).toBe(kernels.crc32c(whole, 0));
      }),
      { numRuns: 60 },
    );
  });

  it('crc32cBlocks gives crc32c of each block, from seed 0, and leaves later entries alone', () => {
    const kernels = getKernels();
    fc.assert(
      fc.property(
        fc.constantFrom(1, 7, 512, 4096),
        fc.integer({ min: 0, max: 40 }),
        offsetArbitrary,
        fillSeedArbitrary,
        (blockBytes, blockCount, offset, fillSeed) => {
          const data = bytesAtOffset(blockBytes * blockCount, offset, fillSeed);
          const out = new Uint32Array(blockCount + 2).fill(0xabcdef01);
          kernels.crc32cBlocks(data, blockBytes, out);
          for (let block = 0; block < blockCount; block++) {
            const expected = kernels.crc32c(
              data.subarray(block * blockBytes, (block + 1) * blockBytes),
              0,
            );
            expect(out[block]).toBe(expected);
          }
          expect([out[blockCount], out[blockCount + 1]]).toEqual([0xabcdef01, 0xabcdef01]);
        },
      ),
      { numRuns: 60 },
    );
    const zeros = new Uint32Array(2);
    kernels.crc32cBlocks(new Uint8Array(64), 32, zeros);
    expect([...zeros]).toEqual([0x8a9136aa, 0x8a9136aa]);
  });

  it('crc32cBlocks throws TypeError on bad arguments instead of crashing', () => {
    const kernels = getKernels();
    const loose = kernels as unknown as { crc32cBlocks(...values: unknown[]): void };
    const data = new Uint8Array(8192);
    const out = new Uint32Array(2);
    for (const notBytes of [undefined, null, 'text', 42, new Uint16Array(4), new ArrayBuffer(8)]) {
      expect(() => loose.crc32cBlocks(notBytes, 4096, out)).toThrow(/data must be a Buffer/);
    }
    for (const badBlockBytes of [0, -4096, 1.5, Number.NaN, 2 ** 32, '4096', undefined]) {
      expect(() => loose.crc32cBlocks(data, badBlockBytes, out)).toThrow(
        /blockBytes must be an integer/,
      );
    }
    for (const notEntries of [
      undefined,
      [0, 0],
      new Int32Array(2),
      new Uint8Array(8),
      new Float64Array(2),
    ]) {
      expect(() => loose.crc32cBlocks(data, 4096, notEntries)).toThrow(/out must be a Uint32Array/);
    }
    expect(() => loose.crc32cBlocks(data, 3000, new Uint32Array(4))).toThrow(
      /not a multiple of blockBytes/,
    );
    expect(() => loose.crc32cBlocks(data, 4096, new Uint32Array(1))).toThrow(
      /fewer than the 2 blocks/,
    );
    expect(() => loose.crc32cBlocks(data, 4096, out)).not.toThrow();
  });

  it('xorInto twice restores the original', () => {
    const kernels = getKernels();
    fc.assert(
      fc.property(
        lengthArbitrary,
        offsetArbitrary,
        offsetArbitrary,
        fillSeedArbitrary,
        (length, targetOffset, sourceOffset, fillSeed) => {
          const target = bytesAtOffset(length, targetOffset, fillSeed);
          const source = bytesAtOffset(length, sourceOffset, fillSeed ^ 0x5bd1e995);
          const original = Uint8Array.from(target);
          const sourceBefore = Uint8Array.from(source);
          kernels.xorInto(target, source);
          kernels.xorInto(target, source);
          expectSameBytes(target, original);
          expectSameBytes(source, sourceBefore);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('xorInto of an array with itself gives zeros', () => {
    const kernels = getKernels();
    const bytes = pseudoRandomBytes(1000, 7);
    kernels.xorInto(bytes, bytes);
    expect(bytes.every((byte) => byte === 0)).toBe(true);
  });

  it('xorInto with overlapping ranges uses the source as it was before the call', () => {
    const kernels = getKernels();
    for (const [targetStart, sourceStart] of [
      [0, 1],
      [1, 0],
      [3, 11],
      [16, 8],
    ] as const) {
      const backing = pseudoRandomBytes(200, 99);
      const expected = Uint8Array.from(backing.subarray(targetStart, targetStart + 100));
      const sourceBefore = Uint8Array.from(backing.subarray(sourceStart, sourceStart + 100));
      for (let index = 0; index < 100; index++) expected[index]! ^= sourceBefore[index]!;
      kernels.xorInto(
        backing.subarray(targetStart, targetStart + 100),
        backing.subarray(sourceStart, sourceStart + 100),
      );
      expect(backing.subarray(targetStart, targetStart + 100)).toEqual(expected);
    }
  });

  it('throws TypeError on bad arguments instead of crashing', () => {
    const kernels = getKernels();
    const loose = kernels as unknown as {
      crc32c(...values: unknown[]): number;
      xorInto(...values: unknown[]): void;
    };
    const notByteArrays = [
      undefined,
      null,
      'text',
      42,
      {},
      [1, 2],
      new Uint16Array(4),
      new Uint8ClampedArray(4),
      new ArrayBuffer(4),
      new DataView(new ArrayBuffer(4)),
    ];
    for (const notBytes of notByteArrays) {
      expect(() => loose.crc32c(notBytes, 0)).toThrow(TypeError);
      expect(() => loose.xorInto(notBytes, new Uint8Array(4))).toThrow(/target must be/);
      expect(() => loose.xorInto(new Uint8Array(4), notBytes)).toThrow(/source must be/);
    }
    for (const badSeed of [-1, 1.5, 2 ** 32, Number.NaN, Number.POSITIVE_INFINITY, '1', 1n, null]) {
      expect(() => loose.crc32c(new Uint8Array(4), badSeed)).toThrow(/seed must be an integer/);
    }
    expect(() => loose.xorInto(new Uint8Array(4), new Uint8Array(5))).toThrow(TypeError);
    expect(() => loose.xorInto(new Uint8Array(4), new Uint8Array(5))).toThrow(/same length/);
    expect(() => loose.xorInto()).toThrow(TypeError);
  });
});

describe('kernel selection', () => {
  it('uses TypeScript when LUNFS_NO_NATIVE=1 (checked in a child process)', () => {
    if (nativeDisabled) {
      expect(kernelImplementation).toBe('typescript');
      expect(nativeKernelsOrNull).toBeNull();
      return;
    }
    // The compiled module (make test builds dist/ first): Node 20 cannot import TypeScript itself.
    const moduleUrl = new URL('../../dist/native/native-kernels.js', import.meta.url).href;
    const output = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const k = await import(${JSON.stringify(moduleUrl)}); console.log(k.kernelImplementation, k.nativeKernelsOrNull === null, k.crc32c(Buffer.from('123456789')))`,
      ],
      { env: { ...process.env, LUNFS_NO_NATIVE: '1' }, encoding: 'utf8' },
    );
    expect(output.trim()).toBe(`typescript true ${0xe3069283}`);
  });

  it.runIf(!nativeDisabled)('uses the native addon (it is built in set-up)', () => {
    requireNativeKernels();
    expect(kernelImplementation).toBe('native');
  });
});

if (nativeDisabled) {
  console.warn('LUNFS_NO_NATIVE=1: skipping the native-vs-TypeScript comparisons.');
}

describe.skipIf(nativeDisabled)('native and TypeScript agree', () => {
  it('crc32c on random buffers, lengths 0..70000, unaligned offsets, random seeds', () => {
    const native = requireNativeKernels();
    fc.assert(
      fc.property(
        lengthArbitrary,
        offsetArbitrary,
        fillSeedArbitrary,
        crcSeedArbitrary,
        (length, offset, fillSeed, crcSeed) => {
          const data = bytesAtOffset(length, offset, fillSeed);
          expect(native.crc32c(data, crcSeed)).toBe(typescriptKernels.crc32c(data, crcSeed));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('crc32c on short shrinkable buffers', () => {
    const native = requireNativeKernels();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), crcSeedArbitrary, (data, crcSeed) => {
        expect(native.crc32c(data, crcSeed)).toBe(typescriptKernels.crc32c(data, crcSeed));
      }),
      { numRuns: 300 },
    );
  });

  it("the addon's table fallback agrees with its SSE4.2 path and with TypeScript", () => {
    requireNativeKernels();
    const addon = createRequire(import.meta.url)(join(packageRoot, nativeAddonRelativePath)) as {
      crc32cWithTables(data: Uint8Array, seed?: number): number;
      crc32cImplementation: string;
    };
    expect(['sse4.2-three-streams', 'slicing-by-8']).toContain(addon.crc32cImplementation);
    fc.assert(
      fc.property(
        lengthArbitrary,
        offsetArbitrary,
        fillSeedArbitrary,
        crcSeedArbitrary,
        (length, offset, fillSeed, crcSeed) => {
          const data = bytesAtOffset(length, offset, fillSeed);
          expect(addon.crc32cWithTables(data, crcSeed)).toBe(
            typescriptKernels.crc32c(data, crcSeed),
          );
        },
      ),
      { numRuns: 100 },
    );
  });

  it('takes the three-stream SSE4.2 path wherever /proc/cpuinfo lists sse4_2', () => {
    requireNativeKernels();
    const addon = createRequire(import.meta.url)(join(packageRoot, nativeAddonRelativePath)) as {
      crc32cImplementation: string;
    };
    let cpuHasSse42 = false;
    try {
      cpuHasSse42 = /\bsse4_2\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
    } catch {
      // No /proc (not Linux): only the name's form is checked below.
    }
    if (cpuHasSse42) expect(addon.crc32cImplementation).toBe('sse4.2-three-streams');
    else expect(['sse4.2-three-streams', 'slicing-by-8']).toContain(addon.crc32cImplementation);
  });

  it('crc32c with three streams agrees with TypeScript and the single stream, 0..300 KiB', () => {
    requireNativeKernels();
    // Lengths around the round sizes (3 x 256 and 3 x 8192 bytes) are where the lanes and the
    // single-stream tail meet; the rest are spread over 0..300 KiB with every offset mod 16.
    const roundEdges = [768, 24_576, 2 * 24_576 + 768, 5 * 24_576 + 10 * 768].flatMap((edge) =>
      [-9, -8, -1, 0, 1, 7, 8, 9].map((delta) => edge + delta),
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.constantFrom(...roundEdges),
          fc.integer({ min: 0, max: 4096 }),
          fc.integer({ min: 0, max: 300 * 1024 }),
        ),
        offsetArbitrary,
        fillSeedArbitrary,
        crcSeedArbitrary,
        (length, offset, fillSeed, crcSeed) => {
          const data = bytesAtOffset(length, offset, fillSeed);
          const expected = typescriptKernels.crc32c(data, crcSeed);
          expect(crc32c(data, crcSeed)).toBe(expected);
          expect(crc32cSingleStream(data, crcSeed)).toBe(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('crc32cBlocks of the addon itself agrees with TypeScript on random blocks', () => {
    requireNativeKernels();
    // The addon's own export, not the active kernel (which falls back to TypeScript for an addon
    // built before crc32cBlocks existed): the project builds the addon, so it must have it.
    const addon = createRequire(import.meta.url)(join(packageRoot, nativeAddonRelativePath)) as {
      crc32cBlocks?: ByteKernels['crc32cBlocks'];
    };
    expect(typeof addon.crc32cBlocks, 'the addon exports crc32cBlocks').toBe('function');
    fc.assert(
      fc.property(
        fc.oneof(fc.constantFrom(4096, 512, 1), fc.integer({ min: 1, max: 9000 })),
        fc.integer({ min: 0, max: 34 }),
        offsetArbitrary,
        fillSeedArbitrary,
        (blockBytes, blockCount, offset, fillSeed) => {
          const data = bytesAtOffset(
            Math.min(blockBytes * blockCount, 300_000 - (300_000 % blockBytes)),
            offset,
            fillSeed,
          );
          const count = data.length / blockBytes;
          const fromNative = new Uint32Array(count + 1).fill(7);
          const fromTypescript = new Uint32Array(count + 1).fill(7);
          addon.crc32cBlocks!(data, blockBytes, fromNative);
          typescriptKernels.crc32cBlocks(data, blockBytes, fromTypescript);
          expect([...fromNative]).toEqual([...fromTypescript]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('xorInto on random buffers, lengths 0..70000, unaligned offsets', () => {
    const native = requireNativeKernels();
    fc.assert(
      fc.property(
        lengthArbitrary,
        offsetArbitrary,
        offsetArbitrary,
        fillSeedArbitrary,
        (length, targetOffset, sourceOffset, fillSeed) => {
          const nativeTarget = bytesAtOffset(length, targetOffset, fillSeed);
          const typescriptTarget = bytesAtOffset(length, targetOffset, fillSeed);
          const source = bytesAtOffset(length, sourceOffset, fillSeed ^ 0x2545f491);
          native.xorInto(nativeTarget, source);
          typescriptKernels.xorInto(typescriptTarget, source);
          // Whole backing buffers, so a write outside the subarray would show up too.
          expectSameBytes(
            new Uint8Array(nativeTarget.buffer),
            new Uint8Array(typescriptTarget.buffer),
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it('both throw the same TypeError messages', () => {
    const native = requireNativeKernels();
    const cases: Array<(kernels: ByteKernels) => unknown> = [
      (kernels) => kernels.crc32c('x' as unknown as Uint8Array),
      (kernels) => kernels.crc32c(new Uint8Array(1), -1),
      (kernels) => kernels.crc32cBlocks(new Uint8Array(10), 4, new Uint32Array(4)),
      (kernels) => kernels.crc32cBlocks(new Uint8Array(16), 4, new Uint32Array(3)),
      (kernels) => kernels.crc32cBlocks(new Uint8Array(16), 0, new Uint32Array(4)),
      (kernels) =>
        kernels.crc32cBlocks(new Uint8Array(16), 4, new Int32Array(4) as unknown as Uint32Array),
      (kernels) => kernels.xorInto(new Uint8Array(3), new Uint8Array(4)),
      (kernels) => kernels.xorInto(new Uint8Array(3), {} as Uint8Array),
    ];
    for (const call of cases) {
      const messageOf = (kernels: ByteKernels): string => {
        try {
          call(kernels);
        } catch (error) {
          expect(error).toBeInstanceOf(TypeError);
          return (error as Error).message;
        }
        throw new Error('expected a TypeError');
      };
      expect(messageOf(native)).toBe(messageOf(typescriptKernels));
    }
  });
});
