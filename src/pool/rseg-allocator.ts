// RSEG allocation for thin LUNs (seed 004 [0066]-[0067]): a LUN's allocation unit is bound to an
// RSEG, an AU-sized slice of an RStore's data space, on its first write. The allocator keeps
// which RSEGs are in use (derived from the LUN maps at load), prefers the RSEG after the one that
// holds the previous unit so that sequential LUN ranges stay physically contiguous, and makes new
// RStores from free PSEGs when the existing ones are full. An RSEG freed by a discard or a LUN
// removal returns to the free set only after the metadata that frees it is committed, so a crash
// can never leave two owners of one RSEG.

import { markRsegUsed, type PoolMetadata, type RStoreRecord } from '../meta/pool-metadata.js';
import { PsegAllocator } from '../raid/pseg-allocator.js';
import { rstoreDataBytes } from '../raid/rstore.js';
import { assert } from '../util/assert.js';
import { LunfsError } from '../util/errors.js';

/** An RSEG: slice rsegIndex of RStore rstoreId. */
export interface RsegRef {
  rstoreId: number;
  rsegIndex: number;
}

export interface RsegAllocation {
  rstoreId: number;
  rsegIndex: number;
  /** True when the RSEG was never written since its PSEGs were zero: no need to zero it. */
  fresh: boolean;
  /** Set when the allocation made a new RStore: its record must be committed with the mapping. */
  createdRStore?: RStoreRecord;
}

export class RsegAllocator {
  private readonly psegs: PsegAllocator;
  private readonly usedRsegs = new Map<number, Uint8Array>();
  private readonly rstoresWithFree = new Set<number>();
  private freeRsegCount = 0;

  constructor(private readonly metadata: PoolMetadata) {
    this.psegs = new PsegAllocator(metadata.drives, metadata.rstores.values());
    for (const rstore of metadata.rstores.values()) this.track(rstore);
    for (const lun of metadata.luns.values())
      lun.map.forEachMapped((_, entry) => this.markUsed(entry));
  }

  /** Allocates an RSEG, near hint when possible. Throws ENOSPC when the pool is full. */
  allocate(hint?: RsegRef): RsegAllocation {
    if (hint) {
      const next = hint.rsegIndex + 1;
      const used = this.usedRsegs.get(hint.rstoreId);
      if (used && next < used.length && used[next] === 0) return this.take(hint.rstoreId, next);
    }
    for (const rstoreId of this.rstoresWithFree) {
      const used = this.usedRsegs.get(rstoreId)!;
      const index = used.indexOf(0);
      assert(index >= 0, `RStore ${rstoreId} listed with free RSEGs but has none`);
      return this.take(rstoreId, index);
    }
    const created = this.createRStore();
    if (!created)
      throw new LunfsError(
        'ENOSPC',
        'the pool is full: no free RSEG and too few free PSEGs for a new RStore',
      );
    return { ...this.take(created.id, 0), createdRStore: created };
  }

  /** Returns RSEGs to the free set (call only once the unmapping is committed). */
  release(entries: RsegRef[]): void {
    for (const entry of entries) {
      const used = this.usedRsegs.get(entry.rstoreId);
      assert(
        used !== undefined && used[entry.rsegIndex] === 1,
        `release of an RSEG not in use: ${entry.rstoreId}:${entry.rsegIndex}`,
      );
      used[entry.rsegIndex] = 0;
      this.freeRsegCount += 1;
      this.rstoresWithFree.add(entry.rstoreId);
    }
  }

  /**
   * Bytes that writes could still allocate (free RSEGs plus RStores that free PSEGs could form).
   */
  freeBytes(): number {
    const { psegSizeBytes, allocationUnitBytes, raidLevel } = this.metadata.config;
    let bytes = this.freeRsegCount * allocationUnitBytes;
    for (const rss of this.metadata.rss) {
      const possible = this.psegs.rstoresStillPossible(raidLevel, rss);
      bytes +=
        possible *
        rstoreDataBytes(
          {
            raidLevel,
            members: rss.driveIndexes.map((driveIndex) => ({ driveIndex, psegIndex: 0 })),
          } as RStoreRecord,
          psegSizeBytes,
        );
    }
    return bytes;
  }

  private take(rstoreId: number, rsegIndex: number): RsegAllocation {
    const rstore = this.metadata.rstores.get(rstoreId)!;
    this.markUsed({ rstoreId, rsegIndex });
    const fresh = rstore.rsegFresh[rsegIndex] === '1';
    markRsegUsed(rstore, rsegIndex); // from now on it may hold data, whatever becomes of it
    return { rstoreId, rsegIndex, fresh };
  }

  private markUsed(entry: RsegRef): void {
    const used = this.usedRsegs.get(entry.rstoreId);
    assert(used !== undefined, `map names unknown RStore ${entry.rstoreId}`);
    assert(used[entry.rsegIndex] === 0, `RSEG ${entry.rstoreId}:${entry.rsegIndex} mapped twice`);
    used[entry.rsegIndex] = 1;
    this.freeRsegCount -= 1;
    if (!used.includes(0)) this.rstoresWithFree.delete(entry.rstoreId);
  }

  private track(rstore: RStoreRecord): void {
    this.usedRsegs.set(rstore.id, new Uint8Array(rstore.rsegCount));
    this.freeRsegCount += rstore.rsegCount;
    this.rstoresWithFree.add(rstore.id);
  }

  private createRStore(): RStoreRecord | undefined {
    const { raidLevel, psegSizeBytes, allocationUnitBytes } = this.metadata.config;
    for (const rss of this.metadata.rss) {
      const members = this.psegs.choose(raidLevel, rss);
      if (!members) continue;
      for (const member of members) this.psegs.markUsed(member);
      const zeroed = members.every(
        (member) => this.metadata.drives[member.driveIndex]!.zeroedAtCreation,
      );
      const partial = { raidLevel, members } as RStoreRecord;
      const rsegCount = rstoreDataBytes(partial, psegSizeBytes) / allocationUnitBytes;
      const rstore: RStoreRecord = {
        id: this.metadata.nextRStoreId,
        rssId: rss.id,
        raidLevel,
        members,
        rsegCount,
        rsegFresh: (zeroed ? '1' : '0').repeat(rsegCount),
        // RAID-5 on PSEGs that may hold old bytes: the rows' parity is not their XOR yet (the
        // RStore
        // makes it so before its first write; see RStore.write).
        ...(raidLevel === 5 && !zeroed ? { parityUnset: true } : {}),
      };
      this.metadata.rstores.set(rstore.id, rstore);
      this.metadata.nextRStoreId += 1;
      this.track(rstore);
      return rstore;
    }
    return undefined;
  }
}
