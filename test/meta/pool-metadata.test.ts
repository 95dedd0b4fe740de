// The pool metadata's checkpoint and journal ops read the fields of every readable format.
// Format 5 spelt nextRstoreId and missedWriteRstores, and named a snapshot's LUN predecessorId
// (seed 004's direction the wrong way round); format 6 writes nextRStoreId, missedWriteRStores
// and sourceId. test/e2e/old-format.test.ts opens a whole format-5 pool.

import { describe, expect, it } from 'vitest';
import {
  applyMetadataOp,
  decodeCheckpoint,
  encodeCheckpoint,
  sharingChainOf,
  type MetadataOp,
} from '../../src/meta/pool-metadata.js';

/**
 * A checkpoint payload as format 5 wrote it: one LUN, one snapshot, a RAID-0 drive that missed
 * writes.
 */
function format5Checkpoint(): Buffer {
  const json = Buffer.from(
    JSON.stringify({
      config: {
        poolUuid: 'u',
        createdAtMs: 1,
        raidLevel: 0,
        psegSizeBytes: 1 << 20,
        allocationUnitBytes: 1 << 20,
        stripeUnitBytes: 128 << 10,
        lmapEntryCount: 64,
      },
      drives: [
        {
          index: 0,
          uuid: 'a',
          sizeBytes: 1 << 26,
          psegCount: 60,
          zeroedAtCreation: true,
          rssId: 0,
        },
        {
          index: 1,
          uuid: 'b',
          sizeBytes: 1 << 26,
          psegCount: 60,
          zeroedAtCreation: true,
          rssId: 0,
          state: 'failed',
          failedAbsent: true,
          missedWriteRstores: [3, 7],
        },
      ],
      rss: [{ id: 0, driveIndexes: [0, 1] }],
      rstores: [],
      luns: [{ id: 1, name: 'db', sizeBytes: 4 << 20, createdAtMs: 1, mappedCount: 0 }],
      snapshots: [
        {
          id: 1,
          lunId: 1,
          name: 's1',
          epoch: 1,
          createdAtMs: 2,
          sizeBytes: 4 << 20,
          reservedBytes: 0,
          state: 'valid',
          predecessorKind: 'lun',
          predecessorId: 1,
        },
      ],
      nextLunId: 2,
      nextRstoreId: 9,
      nextSnapshotId: 2,
      cleanShutdown: true,
    }),
  );
  const payload = Buffer.alloc(4 + json.length);
  payload.writeUInt32LE(json.length, 0);
  json.copy(payload, 4);
  return payload;
}

describe('pool metadata of format 5', () => {
  it('a checkpoint reads into the new field names and is written back in them', () => {
    const metadata = decodeCheckpoint(format5Checkpoint());
    expect(metadata.nextRStoreId).toBe(9);
    expect(metadata.drives[1]?.missedWriteRStores).toEqual([3, 7]);
    expect(metadata.drives[0]).not.toHaveProperty('missedWriteRStores');
    const snapshot = metadata.snapshots.get(1);
    expect(snapshot).toMatchObject({ sourceKind: 'lun', sourceId: 1 });
    expect(snapshot).not.toHaveProperty('predecessorId');

    const text = encodeCheckpoint(metadata).toString('utf8');
    expect(text).toContain('"nextRStoreId":9');
    expect(text).toContain('"missedWriteRStores":[3,7]');
    expect(text).toContain('"sourceId":1');
    expect(text).not.toMatch(/Rstore|predecessor/);
  });

  it('a journalled snapshot-create of format 5 replays with its source', () => {
    const metadata = decodeCheckpoint(format5Checkpoint());
    const op = JSON.parse(
      JSON.stringify({
        kind: 'snapshot-create',
        snapshot: {
          id: 2,
          lunId: 1,
          name: 's2',
          epoch: 2,
          createdAtMs: 3,
          sizeBytes: 4 << 20,
          reservedBytes: 0,
          state: 'valid',
          predecessorKind: 'lun',
          predecessorId: 1,
        },
      }),
    ) as MetadataOp;
    applyMetadataOp(metadata, op);
    expect(sharingChainOf(metadata, 1).map((snapshot) => snapshot.name)).toEqual(['s1', 's2']);
    expect(metadata.snapshots.get(2)).not.toHaveProperty('predecessorId');
  });

  it('a checkpoint without any RStore counter is refused as corrupt', () => {
    const payload = format5Checkpoint();
    const jsonLength = payload.readUInt32LE(0);
    const parsed = JSON.parse(payload.toString('utf8', 4, 4 + jsonLength)) as Record<
      string,
      unknown
    >;
    delete parsed['nextRstoreId'];
    const json = Buffer.from(JSON.stringify(parsed));
    const damaged = Buffer.alloc(4 + json.length);
    damaged.writeUInt32LE(json.length, 0);
    json.copy(damaged, 4);
    expect(() => decodeCheckpoint(damaged)).toThrow(/nextRStoreId is missing/);
  });
});
