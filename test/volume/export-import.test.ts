// Export and import of volumes (issue 16) between two simulated pools, through the controller.
// What it proves:
// - a chain of 10 snapshots, exported as one full stream and 9 incremental ones (--since the
//   previous snapshot) and imported into another pool, reproduces every snapshot byte for byte,
//   and each incremental stream is within 10 % of the bytes that changed;
// - a snap-point map gives incremental streams of the live LUN, applied on top of the export made
//   after the map started;
// - an export of a snapshot is exact while its LUN is written;
// - bad streams (cut short, a flipped byte, the wrong base, a LUN changed since its base, a full
//   stream onto an existing LUN) are refused with a clear message and change nothing.

import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/util/clock.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import type { Controller } from '../../src/volume/controller.js';
import {
  exportVolume,
  importVolume,
  undoInterruptedImports,
} from '../../src/volume/volume-export.js';
import { Pool } from '../../src/pool/pool.js';
import { silentLogger } from '../../src/util/logger.js';
import { FakeClock } from '../support/fake-clock.js';
import { formatPoolOn, makeMemoryDrives, powerCut, sessionViews } from '../support/memory-pool.js';
import { encodeEnd, encodeRecord } from '../../src/volume/export-stream.js';
import { firstDifference, patternBytes, readAll } from '../support/bytes.js';
import { formatMemoryPool } from '../support/memory-pool.js';
import { controllerFor, errorCode } from '../support/controllers.js';

async function exported(
  controller: Controller,
  spec: string,
  since?: string,
): Promise<{ stream: Buffer; dataBytes: number }> {
  const parts: Buffer[] = [];
  const result = await exportVolume(
    controller,
    spec,
    since === undefined ? {} : { since },
    async (chunk) => {
      parts.push(Buffer.from(chunk));
    },
  );
  const stream = Buffer.concat(parts);
  expect(stream.length).toBe(result.streamBytes);
  return { stream, dataBytes: result.dataBytes };
}

async function* chunksOf(stream: Buffer, size = 64 * KiB): AsyncGenerator<Buffer> {
  for (let offset = 0; offset < stream.length; offset += size)
    yield stream.subarray(offset, offset + size);
}

async function twoPools(): Promise<{ a: Controller; b: Controller }> {
  const poolA = await formatMemoryPool({ raidLevel: 5, driveSizeBytes: 32 * MiB });
  const poolB = await formatMemoryPool({ raidLevel: 1, driveSizeBytes: 32 * MiB });
  return { a: await controllerFor(poolA.pool), b: await controllerFor(poolB.pool) };
}

function sameBytes(actual: Buffer, expected: Buffer, what: string): void {
  const difference = firstDifference(actual, expected);
  expect(difference, `${what}: ${difference}`).toBeUndefined();
}

describe('export and import', () => {
  it('carry a chain of 10 snapshots to another pool, each increment near its changed bytes', async () => {
    const { a, b } = await twoPools();
    const size = 6 * MiB;
    await a.createLun('db', size);
    const db = a.stack('db').cache;
    await db.write(0, patternBytes(4 * MiB, 1)); // the last 2 MiB stay zeros (thin)
    const random = new SeededRandom(10);
    const images: Buffer[] = [];
    for (let index = 1; index <= 10; index += 1) {
      if (index > 1) {
        // random 4 KiB-aligned writes, some repeated, one discard
        for (let write = 0; write < 20; write += 1) {
          const offset = random.integer(size / (4 * KiB) - 8) * 4 * KiB;
          await db.write(
            offset,
            patternBytes((1 + random.integer(8)) * 4 * KiB, index * 100 + write),
          );
        }
        await db.discard(random.integer(size / MiB - 1) * MiB, 64 * KiB);
      }
      await a.createSnapshot(`db@s${index}`);
      images.push(await readAll(a.snapshotVolume(`db@s${index}`)));
    }
    await db.write(0, patternBytes(size, 99)); // the LUN moves on: the snapshots do not
    for (let index = 1; index <= 10; index += 1) {
      const { stream, dataBytes } = await exported(
        a,
        `db@s${index}`,
        index === 1 ? undefined : `s${index - 1}`,
      );
      const result = await importVolume(b, 'copy', chunksOf(stream));
      expect(result.snapshot).toBe(`copy@s${index}`);
      expect(result.created).toBe(index === 1);
      sameBytes(await readAll(b.stack('copy').cache), images[index - 1]!, `copy after s${index}`);
      sameBytes(await readAll(b.snapshotVolume(`copy@s${index}`)), images[index - 1]!, `s${index}`);
      if (index === 1) {
        expect(dataBytes).toBe(4 * MiB); // the zeros are not sent
        continue;
      }
      let changed = 0;
      const before = images[index - 2]!;
      const after = images[index - 1]!;
      for (let offset = 0; offset < size; offset += 4 * KiB)
        if (
          !before
            .subarray(offset, offset + 4 * KiB)
            .equals(after.subarray(offset, offset + 4 * KiB))
        )
          changed += 4 * KiB;
      expect(changed).toBeGreaterThan(0);
      // zero records carry no data: the stream is data, headers and zero records
      expect(stream.length).toBeLessThanOrEqual(changed * 1.1);
      expect(stream.length).toBeGreaterThanOrEqual(dataBytes);
    }
    await a.close();
    await b.close();
  });

  it('send what a snap-point map marks, on top of the export made after it started', async () => {
    const { a, b } = await twoPools();
    await a.createLun('db', 4 * MiB);
    const db = a.stack('db').cache;
    await db.write(0, patternBytes(4 * MiB, 1));
    await a.snapPoints.create('db@p');
    await importVolume(b, 'copy', chunksOf((await exported(a, 'db')).stream)); // the live LUN
    for (let round = 1; round <= 3; round += 1) {
      await db.write(round * 300 * KiB, patternBytes(100 * KiB, round + 10));
      await db.discard(3 * MiB, 128 * KiB);
      const { stream } = await exported(a, 'db', 'p');
      // the map keeps every change since it started: the stream holds them all, each round
      expect(stream.length).toBeLessThan(MiB);
      const result = await importVolume(b, 'copy', chunksOf(stream));
      expect(result.created).toBe(false);
      sameBytes(await readAll(b.stack('copy').cache), await readAll(db), `round ${round}`);
    }
    // a state older than the map is no base for it
    await a.createSnapshot('db@late');
    const staleMap = await a.snapPoints.create('db@p2');
    expect(staleMap.changedBytes).toBe(0);
    expect(await errorCode(() => exported(a, 'db@late', 'p2'))).toBe('EINVAL');
    await a.close();
    await b.close();
  });

  it('export a snapshot exactly while its LUN is written', async () => {
    const { a, b } = await twoPools();
    await a.createLun('db', 4 * MiB);
    const db = a.stack('db').cache;
    await db.write(0, patternBytes(4 * MiB, 1));
    await a.createSnapshot('db@s');
    const image = await readAll(a.snapshotVolume('db@s'));
    let writing = true;
    const writer = (async () => {
      for (let round = 0; writing; round += 1) {
        await db.write((round * 64 * KiB) % (4 * MiB), patternBytes(64 * KiB, round + 5));
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const { stream } = await exported(a, 'db@s');
    writing = false;
    await writer;
    await importVolume(b, 'copy', chunksOf(stream));
    sameBytes(await readAll(b.stack('copy').cache), image, 'copy');
    await a.close();
    await b.close();
  });

  it('refuse bad streams and wrong bases, and change nothing', async () => {
    const { a, b } = await twoPools();
    await a.createLun('db', 2 * MiB);
    const db = a.stack('db').cache;
    await db.write(0, patternBytes(2 * MiB, 1));
    await a.createSnapshot('db@s1');
    await db.write(512 * KiB, patternBytes(8 * KiB, 2));
    await a.createSnapshot('db@s2');
    await db.write(MiB, patternBytes(8 * KiB, 3));
    await a.createSnapshot('db@s3');
    const full = (await exported(a, 'db@s1')).stream;
    const step2 = (await exported(a, 'db@s2', 's1')).stream;
    const step3 = (await exported(a, 'db@s3', 'db@s2')).stream;

    // full streams: cut short, a flipped data byte, not a stream at all
    expect(
      await errorCode(() => importVolume(b, 'copy', chunksOf(full.subarray(0, full.length - 100)))),
    ).toBe('EINVAL');
    const flipped = Buffer.from(full);
    flipped[flipped.length - 5000] ^= 1;
    expect(await errorCode(() => importVolume(b, 'copy', chunksOf(flipped)))).toBe('EINVAL');
    expect(await errorCode(() => importVolume(b, 'copy', chunksOf(Buffer.from('hello'))))).toBe(
      'EINVAL',
    );
    expect(b.pool.hasLun('copy')).toBe(false); // nothing left behind
    expect(await errorCode(() => importVolume(b, 'bad/name', chunksOf(full)))).toBe('EINVAL');

    // an increment before its base, and onto the wrong base
    expect(await errorCode(() => importVolume(b, 'copy', chunksOf(step2)))).toBe('ENOENT');
    await importVolume(b, 'copy', chunksOf(full));
    expect(await errorCode(() => importVolume(b, 'copy', chunksOf(full)))).toBe('EEXIST');
    expect(await errorCode(() => importVolume(b, 'copy', chunksOf(step3)))).toBe('EINVAL');
    const atS1 = await readAll(b.stack('copy').cache);

    // the LUN changed since its base: refused until rolled back
    await b.stack('copy').cache.write(4096, patternBytes(4096, 7));
    const changed = await readAll(b.stack('copy').cache);
    expect(await errorCode(() => importVolume(b, 'copy', chunksOf(step2)))).toBe('EINVAL');
    sameBytes(await readAll(b.stack('copy').cache), changed, 'copy after a refused import');
    await b.rollback('copy@s1');
    sameBytes(await readAll(b.stack('copy').cache), atS1, 'copy rolled back');

    // an increment cut short is undone: the LUN is back at its base, and the whole one applies
    const cut = step2.subarray(0, step2.length - 30);
    expect(await errorCode(() => importVolume(b, 'copy', chunksOf(cut)))).toBe('EINVAL');
    sameBytes(await readAll(b.stack('copy').cache), atS1, 'copy after a cut increment');
    await importVolume(b, 'copy', chunksOf(step2));
    await importVolume(b, 'copy', chunksOf(step3));
    sameBytes(
      await readAll(b.stack('copy').cache),
      await readAll(a.snapshotVolume('db@s3')),
      'copy',
    );

    // a zero record whose must-be-zero fields are not: refused like any other damage
    const header = full.subarray(0, 16 + full.readUInt32LE(12) + 4);
    const zero = encodeRecord(2, 0, 4096);
    zero.writeUInt32LE(1, 16);
    const forged = Buffer.concat([header, zero, encodeEnd(1, 0)]);
    expect(await errorCode(() => importVolume(b, 'other', chunksOf(forged)))).toBe('EINVAL');
    expect(b.pool.hasLun('other')).toBe(false);

    // bad export requests
    expect(await errorCode(() => exported(a, 'db@nope'))).toBe('ENOENT');
    expect(await errorCode(() => exported(a, 'db@s2', 'nope'))).toBe('ENOENT');
    expect(await errorCode(() => exported(a, 'db@s2', 'other@s1'))).toBe('EINVAL');
    expect(await errorCode(() => exported(a, 'nolun'))).toBe('ENOENT');
    expect(a.listSnapshots().map((snapshot) => snapshot.name)).toEqual(['db@s1', 'db@s2', 'db@s3']);
    await a.close();
    await b.close();
  });

  it('undo an import a power cut interrupted, at the next open', async () => {
    for (const incremental of [false, true]) {
      const { a, b: unused } = await twoPools();
      await unused.close();
      const drives = makeMemoryDrives(2, 32 * MiB);
      let views = sessionViews(drives);
      let b = await controllerFor(await formatPoolOn(views, { raidLevel: 1 }));
      await a.createLun('db', 2 * MiB);
      await a.stack('db').cache.write(0, patternBytes(2 * MiB, 1));
      await a.createSnapshot('db@s1');
      await a.stack('db').cache.write(0, patternBytes(MiB, 2));
      await a.createSnapshot('db@s2');
      const full = (await exported(a, 'db@s1')).stream;
      const step = (await exported(a, 'db@s2', 's1')).stream;
      if (incremental) await importVolume(b, 'copy', chunksOf(full));
      const atBase = incremental ? await readAll(b.stack('copy').cache) : undefined;
      // the stream stops half-way and never ends: the power goes meanwhile
      const stream = incremental ? step : full;
      let sent = 0;
      const stalled = (async function* (): AsyncGenerator<Buffer> {
        for (let offset = 0; offset < stream.length / 2; offset += 64 * KiB) {
          yield stream.subarray(offset, Math.min(offset + 64 * KiB, stream.length / 2));
          sent += 1;
        }
        await new Promise(() => {});
      })();
      void importVolume(b, 'copy', stalled).catch(() => {});
      while (sent < 4) await new Promise((resolve) => setImmediate(resolve));
      for (let turn = 0; turn < 50; turn += 1)
        await new Promise((resolve) => setImmediate(resolve));
      expect(b.pool.lunByName('copy').importing).toBeDefined();
      views = powerCut(views, new SeededRandom(incremental ? 2 : 1));
      b = await controllerFor(
        await Pool.open(views, { clock: new FakeClock(), log: silentLogger() }),
      );
      // opens and new imports are refused until the undo
      expect(await errorCode(async () => b.opened('copy'))).toBe('EBUSY');
      expect(await errorCode(() => importVolume(b, 'copy', chunksOf(step)))).toBe('EBUSY');
      await undoInterruptedImports(b);
      if (!incremental) expect(b.pool.hasLun('copy')).toBe(false);
      else {
        expect(b.pool.lunByName('copy').importing).toBeUndefined();
        sameBytes(await readAll(b.stack('copy').cache), atBase!, 'copy after the undo');
        await importVolume(b, 'copy', chunksOf(step)); // the whole one applies now
        sameBytes(
          await readAll(b.stack('copy').cache),
          await readAll(a.snapshotVolume('db@s2')),
          'copy',
        );
      }
      await a.close();
      await b.close();
    }
  });
});
