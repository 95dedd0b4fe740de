// Raid5Memory: what RAID-5 keeps between requests belongs to one pool (issue 13: no module
// singletons). Each pool evicts only its own layouts' rows, and buffers go back to the pool that
// lent them.

import { describe, expect, it } from 'vitest';
import { Raid5Memory, type RowHolder } from '../../src/raid/raid5-memory.js';

/** A stand-in for a layout: counts the write-backs the memory asks of it. */
function fakeLayout(): RowHolder & { writeBacks: number } {
  const layout = {
    writeBacks: 0,
    writeBackKnownRows(): Promise<void> {
      layout.writeBacks += 1;
      return Promise.resolve();
    },
  };
  return layout;
}

describe('Raid5Memory', () => {
  it('keeps at most 16 layouts with rows per pool; the least recently used writes back; pools are apart', () => {
    const first = new Raid5Memory();
    const second = new Raid5Memory();
    const ofFirst = Array.from({ length: 17 }, fakeLayout);
    const ofSecond = Array.from({ length: 16 }, fakeLayout);
    for (const layout of ofSecond) second.touch(layout);
    for (const layout of ofFirst.slice(0, 16)) first.touch(layout);
    first.touch(ofFirst[0]!); // the oldest becomes the newest
    first.touch(ofFirst[16]!);
    expect(ofFirst.map((layout) => layout.writeBacks)).toEqual([0, 1, ...Array(15).fill(0)]);
    expect(ofSecond.every((layout) => layout.writeBacks === 0)).toBe(true);
    expect(first.holderCount).toBe(16);
    expect(second.holderCount).toBe(16);
    first.forget(ofFirst[0]!);
    expect(first.holderCount).toBe(15);
  });

  it('lends a returned buffer again, to the pool it was returned to only', () => {
    const first = new Raid5Memory();
    const second = new Raid5Memory();
    const buffer = first.take(128 * 1024);
    first.give(buffer);
    expect(second.take(128 * 1024)).not.toBe(buffer);
    expect(first.take(128 * 1024)).toBe(buffer);
    expect(first.take(64 * 1024)).not.toBe(buffer);
  });
});
