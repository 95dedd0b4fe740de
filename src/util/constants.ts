// Block sizes and limits of lunfs in one place: what each unit is and, asserted when this module
// loads, how they relate (issue 13). On-disk record sizes that happen to be 4 KiB (the drive
// header, a checksum-table page, the target volume's header, the journal's record alignment, the
// degraded-row log's slots) are format constants: they stay with their formats and are described
// in docs/on-disk-format.md, so that changing a unit here can never silently change the format.
//
// Words: a *sector* is 512 bytes (the block layer's unit); a *block* is 4 KiB (one checksum, one
// cache valid/dirty bit, the unit of repairs); a *page* of the cache is cachePageBytes.

import { assert } from './assert.js';
import { KiB, MiB } from './sizes.js';

/** The block layer's sector: LUN and drive sizes are whole sectors ("8s" on the command line). */
export const sectorBytes = 512;
/**
 * One crc32c on the drives (ChecksumDrive), one valid and one dirty bit in a cache page, the unit
 * of repairs.
 */
export const blockBytes = 4 * KiB;
/**
 * A page of the write-back cache: 32 blocks, so that its valid and dirty bits are one 32-bit mask
 * each.
 */
export const cachePageBytes = 128 * KiB;
/**
 * The largest request of the native FUSE front (max_write; the kernel's max_pages follows from it).
 */
export const maxRequestBytes = 1 * MiB;
/** Seed 000's chunk: the unit of copy-on-write into a snapshot's target volume. */
export const defaultChunkBytes = 128 * KiB;
/** A RAID stripe unit: one cache page, so that a destage or a miss of a page touches one drive. */
export const defaultStripeUnitBytes = 128 * KiB;
/** The allocation unit of the thin map (seed 004 [0066], the LDAAU). */
export const defaultAllocationUnitBytes = 1 * MiB;
/** The PSEG, the unit a drive is cut into (seed 004 [0059]). */
export const defaultPsegSizeBytes = 2 * MiB;
/** The cache of a mount (`--cache-size`), shared by its LUNs. */
export const defaultCacheBytes = 256 * MiB;
/**
 * Snapshots a LUN may have at once (the target volume's bitmaps and log files are sized for them).
 */
export const maxSnapshotsPerLun = 1024;
/** Drives that hold a copy of the pool's metadata (the quorum). */
export const maxQuorumCopies = 3;
/** Drives per redundancy storage set (RSS), by default and at most (seed 004). */
export const defaultRssSize = 8;
export const maxRssSize = 16;
/**
 * The share of the time BGCOPY takes while the foreground is busy (job-pacer.ts; rebuilds and
 * scrubs take 10 %): a copy is not urgent, and while it runs the source's writes cost originals.
 */
export const bgcopyBusyShare = 0.03;

const powerOfTwo = (value: number): boolean => value > 0 && (value & (value - 1)) === 0;
assert(blockBytes % sectorBytes === 0, 'a block is whole sectors');
assert(
  cachePageBytes % blockBytes === 0 && cachePageBytes / blockBytes <= 32,
  "a cache page's block bits fit one 32-bit mask",
);
assert(maxRequestBytes % cachePageBytes === 0, 'a largest request is whole cache pages');
assert(
  powerOfTwo(defaultStripeUnitBytes) && defaultStripeUnitBytes >= blockBytes,
  'a stripe unit is a power of two of at least a block',
);
assert(
  powerOfTwo(defaultAllocationUnitBytes) && defaultAllocationUnitBytes >= defaultStripeUnitBytes,
  'an allocation unit is a power of two of at least a stripe unit',
);
assert(
  powerOfTwo(defaultPsegSizeBytes) && defaultPsegSizeBytes >= defaultAllocationUnitBytes,
  'a PSEG is a power of two of at least an allocation unit',
);
assert(
  defaultAllocationUnitBytes % defaultChunkBytes === 0 && defaultChunkBytes % blockBytes === 0,
  'a chunk is whole blocks and divides the allocation unit',
);
assert(defaultCacheBytes >= 2 * cachePageBytes, 'the cache holds at least two pages');
assert(
  defaultRssSize <= maxRssSize && maxQuorumCopies >= 1,
  'RSS and quorum limits are consistent',
);
