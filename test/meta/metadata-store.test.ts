// The metadata store on simulated drives with a tiny quorum area (64 KiB slots, a 64 KiB journal
// that holds sixteen 4 KiB records), so that wrapping the journal and damaging copies are cheap.
// What it proves:
// - commit + reopen replays exactly the committed ops, in order; a full journal turns into a
//   checkpoint of the next generation, and a batch larger than the journal goes straight there;
// - a power cut during a commit: a torn record ends replay at the last complete record, on every
//   copy; a record that reached one copy only is taken from that copy, and the others are stale;
// - one damaged copy: open works from the others and the report names the bad copy;
// - every copy damaged: ECORRUPT, and the message names each drive and what is wrong with it;
// - never an older state when newer committed metadata is known to exist but cannot be read
//   (damaged newest checkpoint, damaged record in the middle of the journal): ECORRUPT;
// - format on drives that held another pool leaves nothing of the old metadata to be replayed;
// - through the pool, the controller status names the bad copy, and a clean close heals it.

import { describe, expect, it } from 'vitest';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import type { Drive } from '../../src/drive/drive.js';
import {
  MetadataStore,
  recordHeaderBytes,
  type CopyReport,
  type QuorumCopy,
  type QuorumLayout,
} from '../../src/meta/metadata-store.js';
import {
  applyMetadataOp,
  type MetadataOp,
  type PoolMetadata,
  type RStoreRecord,
} from '../../src/meta/pool-metadata.js';
import { isLunfsError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { decodeDriveHeader, driveHeaderBytes } from '../../src/meta/drive-header.js';
import { Controller } from '../../src/volume/controller.js';
import { FakeClock } from '../support/fake-clock.js';
import { describeMetadata, formatMemoryPool, reopenMemoryPool } from '../support/memory-pool.js';
import { ScriptedCrash } from '../support/scripted-crash.js';
import { SessionDrive } from '../support/session-drive.js';

const layout: QuorumLayout = {
  quorumOffsetBytes: 4096,
  checkpointSlotBytes: 64 * KiB,
  journalBytes: 64 * KiB,
};
const journalStartBytes = layout.quorumOffsetBytes + 2 * layout.checkpointSlotBytes;
const driveSizeBytes = 512 * KiB;
const log = silentLogger();

function slotOffsetBytes(slot: number): number {
  return layout.quorumOffsetBytes + slot * layout.checkpointSlotBytes;
}

function emptyMetadata(poolUuid = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'): PoolMetadata {
  return {
    config: {
      poolUuid,
      createdAtMs: 1,
      raidLevel: 0,
      psegSizeBytes: 256 * KiB,
      allocationUnitBytes: 64 * KiB,
      stripeUnitBytes: 16 * KiB,
      lmapEntryCount: 2048,
    },
    drives: [0, 1, 2].map((index) => ({
      index,
      uuid: `drive-${index}`,
      sizeBytes: driveSizeBytes,
      psegCount: 8,
      zeroedAtCreation: true,
      rssId: 0,
    })),
    rss: [{ id: 0, driveIndexes: [0, 1, 2] }],
    rstores: new Map(),
    luns: new Map(),
    snapshots: new Map(),
    nextLunId: 1,
    nextRStoreId: 1,
    nextSnapshotId: 1,
    snapPoints: new Map(),
    nextSnapPointId: 1,
    cleanShutdown: true,
  };
}

function rstore(id: number): RStoreRecord {
  return {
    id,
    rssId: 0,
    raidLevel: 0,
    members: [0, 1, 2].map((driveIndex) => ({ driveIndex, psegIndex: id - 1 })),
    rsegCount: 12,
    rsegFresh: '1'.repeat(12),
  };
}

/** Batch number k (1-based): a new RStore and a LUN, and a few mappings of earlier LUNs. */
function batch(k: number, mapOps = 3): MetadataOp[] {
  const ops: MetadataOp[] = [
    { kind: 'rstore-create', rstore: rstore(k) },
    { kind: 'lun-create', lunId: k, name: `lun-${k}`, sizeBytes: 1 << 20, createdAtMs: 1000 + k },
  ];
  for (let index = 0; index < mapOps; index += 1)
    ops.push({
      kind: 'map',
      lunId: k,
      unitIndex: index % 16,
      rstoreId: k,
      rsegIndex: index % 12,
      flags: 0,
    });
  return ops;
}

function applied(batches: MetadataOp[][], base = emptyMetadata()): PoolMetadata {
  for (const ops of batches) for (const op of ops) applyMetadataOp(base, op);
  return base;
}

function copiesOf(drives: Drive[]): QuorumCopy[] {
  return drives.map((drive, driveIndex) => ({ drive, driveIndex }));
}

function makeDrives(name = 'meta'): MemoryDrive[] {
  return [0, 1, 2].map((index) => new MemoryDrive(`${name}${index}`, driveSizeBytes));
}

async function openOn(
  drives: Drive[],
): Promise<{ store: MetadataStore; metadata: PoolMetadata; reports: CopyReport[] }> {
  return MetadataStore.open(copiesOf(drives), layout, log);
}

function statesOf(reports: CopyReport[]): string[] {
  return reports.map((report) => report.state);
}

/**
 * Starts a commit, parks it with its records written but not flushed, and cuts the power with one
 * scripted fate per drive.
 */
async function crashDuringCommit(
  store: MetadataStore,
  views: SessionDrive[],
  ops: MetadataOp[],
  fates: ScriptedCrash[],
): Promise<SessionDrive[]> {
  for (const view of views) view.holdFlushes();
  const commit = store.commit(ops).then(
    () => 'committed',
    (error: unknown) => error,
  );
  for (let turn = 0; turn < 100 && views.some((view) => view.heldFlushCount === 0); turn += 1)
    await Promise.resolve();
  expect(
    views.map((view) => view.heldFlushCount),
    'every copy has its record written and its flush parked',
  ).toEqual([1, 1, 1]);
  expect(views.map((view) => view.inner.unflushedWriteCount)).toEqual([1, 1, 1]);
  for (const view of views) view.fence();
  views.forEach((view, index) => view.inner.crash(fates[index]!));
  expect(isLunfsError(await commit, 'EIO'), 'the interrupted commit is never acknowledged').toBe(
    true,
  );
  return views.map((view) => new SessionDrive(view.inner));
}

function reopenedDrive(drive: MemoryDrive): MemoryDrive {
  drive.reopen();
  return drive;
}

describe('MetadataStore', () => {
  it('replays every committed batch after reopen, in order', async () => {
    const drives = makeDrives();
    const store = await MetadataStore.format(copiesOf(drives), layout, emptyMetadata(), log);
    const batches = [1, 2, 3, 4, 5].map((k) => batch(k));
    batches.push([
      { kind: 'unmap', lunId: 2, unitIndex: 1 },
      { kind: 'lun-resize', lunId: 3, sizeBytes: 4 << 20 },
      { kind: 'lun-remove', lunId: 4 },
    ]);
    for (const ops of batches) await store.commit(ops);
    const { metadata, reports } = await openOn(drives);
    expect(describeMetadata(metadata)).toEqual(describeMetadata(applied(batches)));
    expect(statesOf(reports)).toEqual(['good', 'good', 'good']);
    expect(reports.map((report) => [report.generation, report.sequence])).toEqual([
      [1, 6],
      [1, 6],
      [1, 6],
    ]);
    expect(reports.flatMap((report) => report.problems)).toEqual([]);
  });

  it('turns a full journal into a checkpoint of the next generation, and loses nothing across the wrap', async () => {
    const drives = makeDrives();
    const store = await MetadataStore.format(copiesOf(drives), layout, emptyMetadata(), log);
    const batches: MetadataOp[][] = [];
    const journalRecords = layout.journalBytes / 4096;
    for (let k = 1; k <= 2 * journalRecords + 5; k += 1) {
      batches.push(batch(k, 1));
      await store.commit(batches.at(-1)!);
      expect(store.journalFillRatio).toBeLessThanOrEqual(1);
      if (k === journalRecords || k === journalRecords + 1 || k % 7 === 0) {
        const { metadata, reports } = await openOn(drives);
        expect(describeMetadata(metadata), `after batch ${k}`).toEqual(
          describeMetadata(applied(batches)),
        );
        expect(statesOf(reports)).toEqual(['good', 'good', 'good']);
      }
    }
    const { metadata, reports } = await openOn(drives);
    expect(reports[0]!.generation, 'the journal wrapped into checkpoints').toBeGreaterThanOrEqual(
      3,
    );
    expect(describeMetadata(metadata)).toEqual(describeMetadata(applied(batches)));
  });

  it('writes a batch larger than the whole journal as a checkpoint', async () => {
    const drives = makeDrives();
    const store = await MetadataStore.format(copiesOf(drives), layout, emptyMetadata(), log);
    const big = batch(1, 0);
    for (let unit = 0; unit < 1000; unit += 1)
      big.push({
        kind: 'map',
        lunId: 1,
        unitIndex: unit % 16,
        rstoreId: 1,
        rsegIndex: unit % 12,
        flags: unit % 3,
      });
    expect(Buffer.byteLength(JSON.stringify(big))).toBeGreaterThan(layout.journalBytes);
    await store.commit(big);
    await store.commit(batch(2));
    const { metadata, reports } = await openOn(drives);
    expect(describeMetadata(metadata)).toEqual(describeMetadata(applied([big, batch(2)])));
    expect(reports.map((report) => [report.generation, report.sequence])).toEqual([
      [2, 1],
      [2, 1],
      [2, 1],
    ]);
  });

  describe('a power cut during a commit', () => {
    async function storeWithThreeBatches(): Promise<{
      store: MetadataStore;
      views: SessionDrive[];
      batches: MetadataOp[][];
    }> {
      const views = makeDrives('torn').map((drive) => new SessionDrive(drive));
      const store = await MetadataStore.format(copiesOf(views), layout, emptyMetadata(), log);
      const batches = [batch(1), batch(2), batch(3)];
      for (const ops of batches) await store.commit(ops);
      return { store, views, batches };
    }

    const bigBatch = batch(4, 60); // a record of several 512-byte sectors
    const tears: Array<[string, (sector: number) => boolean]> = [
      ['header landed, a payload sector lost', (sector) => sector !== 3],
      ['header lost, the payload landed', (sector) => sector !== 0],
      ['every other sector landed', (sector) => sector % 2 === 0],
    ];
    for (const [label, lands] of tears) {
      it(`a torn record (${label}) ends replay at the last complete record, and later commits go on from there`, async () => {
        const { store, views, batches } = await storeWithThreeBatches();
        expect(Buffer.byteLength(JSON.stringify(bigBatch)) + recordHeaderBytes).toBeGreaterThan(
          4 * 512,
        );
        const after = await crashDuringCommit(
          store,
          views,
          bigBatch,
          [0, 1, 2].map(() => new ScriptedCrash(2, lands)),
        );
        const reopened = await openOn(after);
        expect(describeMetadata(reopened.metadata)).toEqual(describeMetadata(applied(batches)));
        expect(statesOf(reopened.reports)).toEqual(['good', 'good', 'good']);
        expect(reopened.reports.map((report) => report.sequence)).toEqual([3, 3, 3]);
        await reopened.store.commit(batch(5));
        const again = await openOn(after);
        expect(describeMetadata(again.metadata)).toEqual(
          describeMetadata(applied([...batches, batch(5)])),
        );
        expect(statesOf(again.reports)).toEqual(['good', 'good', 'good']);
      });
    }

    it('a record lost everywhere is simply absent', async () => {
      const { store, views, batches } = await storeWithThreeBatches();
      const after = await crashDuringCommit(
        store,
        views,
        bigBatch,
        [0, 1, 2].map(() => new ScriptedCrash(0)),
      );
      const reopened = await openOn(after);
      expect(describeMetadata(reopened.metadata)).toEqual(describeMetadata(applied(batches)));
    });

    it('a record that reached one copy only is recovered from that copy; the others are reported stale', async () => {
      const { store, views, batches } = await storeWithThreeBatches();
      const after = await crashDuringCommit(store, views, bigBatch, [
        new ScriptedCrash(0),
        new ScriptedCrash(1),
        new ScriptedCrash(2, (sector) => sector !== 1),
      ]);
      const reopened = await openOn(after);
      expect(describeMetadata(reopened.metadata)).toEqual(
        describeMetadata(applied([...batches, bigBatch])),
      );
      expect(statesOf(reopened.reports)).toEqual(['stale', 'good', 'stale']);
      // The next commit lands after the record on every copy; copies 0 and 2 keep a hole there.
      await reopened.store.commit(batch(5));
      const again = await openOn(after);
      expect(describeMetadata(again.metadata)).toEqual(
        describeMetadata(applied([...batches, bigBatch, batch(5)])),
      );
      expect(again.reports[1]!.state).toBe('good');
      expect(again.reports[0]!.state).not.toBe('good');
      // A checkpoint brings every copy up to date again.
      await again.store.checkpoint();
      expect(statesOf((await openOn(after)).reports)).toEqual(['good', 'good', 'good']);
    });
  });

  describe('damaged copies', () => {
    /** Format, a batch, a checkpoint (generation 2 in slot 1), another batch journaled after it. */
    async function storeAtGenerationTwo(
      name: string,
      driveCount = 3,
    ): Promise<{ drives: MemoryDrive[]; store: MetadataStore; batches: MetadataOp[][] }> {
      const drives = makeDrives(name).slice(0, driveCount);
      const store = await MetadataStore.format(copiesOf(drives), layout, emptyMetadata(), log);
      const batches = [batch(1), batch(2)];
      await store.commit(batches[0]!);
      await store.checkpoint();
      await store.commit(batches[1]!);
      return { drives, store, batches };
    }

    it('one copy with a flipped bit in its current checkpoint: open works from the others and names the bad copy', async () => {
      const { drives, batches } = await storeAtGenerationTwo('dmg');
      drives[1]!.flipBit(slotOffsetBytes(1) + recordHeaderBytes + 20, 5);
      const { store, metadata, reports } = await openOn(drives);
      expect(describeMetadata(metadata)).toEqual(describeMetadata(applied(batches)));
      expect(statesOf(reports)).toEqual(['good', 'bad', 'good']);
      expect(reports[1]!.path).toBe('dmg1');
      expect(reports[1]!.problems.join('; ')).toMatch(
        /checkpoint slot 1: payload checksum mismatch/,
      );
      // The next checkpoint rewrites every copy: the damage is gone.
      await store.checkpoint();
      const healed = await openOn(drives);
      expect(statesOf(healed.reports)).toEqual(['good', 'good', 'good']);
      expect(describeMetadata(healed.metadata)).toEqual(describeMetadata(applied(batches)));
    });

    it('a damaged checkpoint header is caught the same way', async () => {
      const { drives, batches } = await storeAtGenerationTwo('hdrdmg');
      drives[2]!.flipBit(slotOffsetBytes(1) + 17, 0); // the generation field
      const { metadata, reports } = await openOn(drives);
      expect(describeMetadata(metadata)).toEqual(describeMetadata(applied(batches)));
      expect(statesOf(reports)).toEqual(['good', 'good', 'bad']);
      expect(reports[2]!.problems.join('; ')).toMatch(
        /checkpoint slot 1: header checksum mismatch/,
      );
    });

    it('a damaged journal record in one copy: open works from the others; that copy is not good', async () => {
      const { drives, store, batches } = await storeAtGenerationTwo('jdmg');
      batches.push(batch(3));
      await store.commit(batches[2]!);
      // first record of generation 2
      drives[0]!.flipBit(journalStartBytes + recordHeaderBytes + 5, 1);
      const { metadata, reports } = await openOn(drives);
      expect(describeMetadata(metadata)).toEqual(describeMetadata(applied(batches)));
      expect(reports[0]!.state).not.toBe('good');
      expect(statesOf(reports).slice(1)).toEqual(['good', 'good']);
    });

    it('every copy damaged: ECORRUPT naming each drive and its problem', async () => {
      const drives = makeDrives('all');
      await MetadataStore.format(copiesOf(drives), layout, emptyMetadata(), log);
      drives[0]!.flipBit(slotOffsetBytes(0) + recordHeaderBytes + 3, 0);
      drives[1]!.flipBit(slotOffsetBytes(0) + 2, 4); // magic
      drives[2]!.flipBit(slotOffsetBytes(0) + 40, 7);
      const opened = openOn(drives);
      await expect(opened).rejects.toMatchObject({ code: 'ECORRUPT' });
      const message = await opened.then(
        () => '',
        (error: Error) => error.message,
      );
      expect(message).toMatch(/no good metadata copy/);
      expect(message).toMatch(/all0: .*payload checksum mismatch/);
      expect(message).toMatch(/all1: .*wrong magic/);
      expect(message).toMatch(/all2: .*header checksum mismatch/);
    });

    it('never falls back to an older checkpoint when the newer one is known to exist on every copy but is damaged', async () => {
      for (const driveCount of [1, 3]) {
        const { drives } = await storeAtGenerationTwo(`rollback${driveCount}-`, driveCount);
        // Generation 2 is damaged on every copy; generation 1 is intact, but the journal holds a
        // record of generation 2: falling back would silently drop batch 1 and batch 2.
        for (const drive of drives) drive.flipBit(slotOffsetBytes(1) + recordHeaderBytes + 30, 2);
        const opened = openOn(drives);
        await expect(opened, `${driveCount} copies`).rejects.toMatchObject({
          code: 'ECORRUPT',
          message: expect.stringMatching(/newer/),
        });
      }
    });

    it('never stops silently at a damaged record in the middle of the only journal', async () => {
      const drives = makeDrives('mid').slice(0, 1);
      const store = await MetadataStore.format(copiesOf(drives), layout, emptyMetadata(), log);
      for (const k of [1, 2, 3, 4]) await store.commit(batch(k));
      drives[0]!.flipBit(journalStartBytes + 4096 + recordHeaderBytes + 9, 6); // record 2 of 4
      await expect(openOn(drives)).rejects.toMatchObject({
        code: 'ECORRUPT',
        message: expect.stringMatching(/mid0: .*record/),
      });
    });
  });

  it('through the pool: a damaged copy is named bad in the controller status, and a closed pool writes it whole again', async () => {
    const { pool, drives } = await formatMemoryPool({ raidLevel: 1, name: 'status' });
    await pool.createLun('kept', MiB); // a journal record after the session's checkpoint (slot 1)
    await pool.abandonSession(); // no clean-close checkpoint: slot 1 stays the newest
    const header = Buffer.alloc(driveHeaderBytes);
    await reopenedDrive(drives[2]!).read(0, header);
    const layoutOnDrive = decodeDriveHeader(header);
    if (!layoutOnDrive.ok) throw new Error(layoutOnDrive.reason);
    const { quorumOffsetBytes, checkpointSlotBytes } = layoutOnDrive.header;
    drives[2]!.flipBit(quorumOffsetBytes + checkpointSlotBytes + recordHeaderBytes + 11, 1);
    const reopened = await reopenMemoryPool(drives);
    expect(reopened.lunByName('kept').sizeBytes).toBe(MiB);
    const controller = new Controller(reopened, { cacheBytes: MiB, clock: new FakeClock(), log });
    const status = controller.status();
    expect(status.drives.map((drive) => drive.metadataCopy)).toEqual(['good', 'good', 'bad']);
    expect(reopened.copyReports[2]!.problems.join('; ')).toMatch(
      /checkpoint slot 1: payload checksum mismatch/,
    );
    await controller.close();
    const again = await reopenMemoryPool(drives);
    expect(again.copyReports.map((report) => report.state)).toEqual(['good', 'good', 'good']);
    await again.close();
  });

  it('format on drives that held another pool leaves nothing of the old metadata to replay', async () => {
    const drives = makeDrives('reuse');
    const old = await MetadataStore.format(
      copiesOf(drives),
      layout,
      emptyMetadata('old00000-0000-4000-8000-000000000000'),
      log,
    );
    await old.commit(batch(1));
    await old.checkpoint();
    for (const k of [2, 3, 4, 5, 6]) await old.commit(batch(k));
    await old.checkpoint();
    await old.commit(batch(7));
    // A new pool on the same drives gets generation 1, then 2, like the old one did.
    const fresh = await MetadataStore.format(
      copiesOf(drives),
      layout,
      emptyMetadata('new00000-0000-4000-8000-000000000000'),
      log,
    );
    await fresh.checkpoint();
    const freshBatch: MetadataOp[] = [
      { kind: 'lun-create', lunId: 1, name: 'only', sizeBytes: 1 << 20, createdAtMs: 5 },
    ];
    await fresh.commit(freshBatch);
    const { metadata, reports } = await openOn(drives);
    expect(metadata.config.poolUuid).toBe('new00000-0000-4000-8000-000000000000');
    expect(describeMetadata(metadata)).toEqual(
      describeMetadata(
        applied([freshBatch], emptyMetadata('new00000-0000-4000-8000-000000000000')),
      ),
    );
    expect(statesOf(reports)).toEqual(['good', 'good', 'good']);
  });
});
