// What a thin volume (src/map) needs from the pool that holds it. Declared here, in the pool's
// layer below the map, so that the map imports it from below and the Pool implements it without
// importing the map.

import type { MetadataOp } from '../meta/pool-metadata.js';
import type { RStore } from '../raid/rstore.js';
import type { RsegAllocation, RsegRef } from './rseg-allocator.js';

/** What a thin volume needs from the pool that holds it. */
export interface MapSpace {
  readonly allocationUnitBytes: number;
  /** useReservation: the allocation may use space reserved for snapshots (their target volume). */
  allocate(hint?: RsegRef, useReservation?: boolean): RsegAllocation;
  /** Gives back an allocation that was never mapped (its RSEG may now hold data). */
  abandon(allocation: RsegAllocation): void;
  rstore(rstoreId: number): RStore;
  /** Queues a metadata op for the next commit; afterCommit runs once it is durable. */
  queue(op: MetadataOp, afterCommit?: () => void): void;
  /** Flushes the data drives, then commits queued metadata. */
  commit(): Promise<void>;
}
