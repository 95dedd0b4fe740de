// PSEG allocation (seed 004 [0059]): each drive's PSEG area is cut into equal PSEGs; an RStore
// takes PSEGs from distinct drives of one redundancy set (RSS). Which PSEGs are in use is derived
// from the RSDs at load, never stored twice. RAID-0 and RAID-5 take one PSEG on every drive of
// the RSS; RAID-1 takes a mirrored pair on the two drives with the most free PSEGs, online drives
// first. See choose() for RStores made while a drive is out of service.

import {
  driveStateOf,
  type DriveRecord,
  type PsegRef,
  type RaidLevel,
  type RssRecord,
  type RStoreRecord,
} from '../meta/pool-metadata.js';
import { assert } from '../util/assert.js';

export class PsegAllocator {
  private readonly used: Uint8Array[];
  private readonly freeCounts: number[];
  private readonly nextHint: number[];

  constructor(
    private readonly drives: DriveRecord[],
    rstores: Iterable<RStoreRecord>,
  ) {
    this.used = drives.map((drive) => new Uint8Array(drive.psegCount));
    this.freeCounts = drives.map((drive) => drive.psegCount);
    this.nextHint = drives.map(() => 0);
    for (const rstore of rstores) for (const member of rstore.members) this.markUsed(member);
  }

  /**
   * Picks PSEGs for a new RStore, or returns undefined when the RSS has too few free PSEGs. With a
   * drive of the set out of service, RAID-5 and RAID-1 still make RStores, degraded from birth (the
   * member on that drive is written once the drive is replaced and rebuilt), as md goes on writing
   * a degraded array; never with two members out, and RAID-0 only on drives in service.
   */
  choose(raidLevel: RaidLevel, rss: RssRecord): PsegRef[] | undefined {
    const withFree = rss.driveIndexes.filter((index) => this.freeCounts[index]! > 0);
    const out = rss.driveIndexes.filter((index) => !this.online(index));
    let driveIndexes: number[];
    if (raidLevel === 0 || raidLevel === 5) {
      if (withFree.length < rss.driveIndexes.length) return undefined;
      if (out.length > (raidLevel === 0 ? 0 : 1)) return undefined;
      driveIndexes = rss.driveIndexes;
    } else {
      const pair = this.mirrorPair(rss, withFree);
      if (!pair) return undefined;
      driveIndexes = pair;
    }
    return driveIndexes.map((driveIndex) => ({ driveIndex, psegIndex: this.findFree(driveIndex) }));
  }

  /**
   * RAID-1: the two drives of a new mirrored RStore, at least one in service. Of the pairs, the one
   * after which the free PSEGs can still form the most RStores (rstoresStillPossible), so no free
   * PSEG is ever left without a partner; among those, two drives in service first (a pair with a
   * drive out is degraded from birth), then the drives with the most free PSEGs. With a drive out,
   * pairs of drives in service would leave its free PSEGs with too few partners once the others
   * fill up: then the pair takes one on it.
   */
  private mirrorPair(rss: RssRecord, withFree: number[]): number[] | undefined {
    let best: { pair: number[]; key: number[] } | undefined;
    for (let first = 0; first < withFree.length; first += 1) {
      for (let second = first + 1; second < withFree.length; second += 1) {
        const pair = [withFree[first]!, withFree[second]!];
        const inService = pair.filter((index) => this.online(index)).length;
        if (inService === 0) continue;
        for (const index of pair) this.freeCounts[index]! -= 1;
        const after = this.rstoresStillPossible(1, rss);
        for (const index of pair) this.freeCounts[index]! += 1;
        const key = [after, inService, this.freeCounts[pair[0]!]! + this.freeCounts[pair[1]!]!];
        if (!best || compareKeys(key, best.key) > 0) best = { pair, key };
      }
    }
    return best?.pair;
  }

  markUsed(member: PsegRef): void {
    assert(
      this.used[member.driveIndex]![member.psegIndex] === 0,
      `PSEG ${member.driveIndex}:${member.psegIndex} used twice`,
    );
    this.used[member.driveIndex]![member.psegIndex] = 1;
    this.freeCounts[member.driveIndex]! -= 1;
  }

  /**
   * How many more RStores of the pool's RAID level the free PSEGs of an RSS could form (as choose()
   * picks).
   */
  rstoresStillPossible(raidLevel: RaidLevel, rss: RssRecord): number {
    const free = rss.driveIndexes.map((index) => this.freeCounts[index]!);
    const out = rss.driveIndexes.filter((index) => !this.online(index)).length;
    if (raidLevel === 0) return out > 0 ? 0 : Math.min(...free);
    if (raidLevel === 5) return out > 1 ? 0 : Math.min(...free);
    const total = free.reduce((a, b) => a + b, 0);
    const onlineFree = rss.driveIndexes.reduce(
      (sum, index) => sum + (this.online(index) ? this.freeCounts[index]! : 0),
      0,
    );
    return Math.min(Math.floor(total / 2), total - Math.max(...free), onlineFree);
  }

  freePsegCount(driveIndex: number): number {
    return this.freeCounts[driveIndex]!;
  }

  private online(driveIndex: number): boolean {
    return driveStateOf(this.drives[driveIndex]!) === 'online';
  }

  private findFree(driveIndex: number): number {
    const used = this.used[driveIndex]!;
    const count = this.drives[driveIndex]!.psegCount;
    for (let step = 0; step < count; step += 1) {
      const index = (this.nextHint[driveIndex]! + step) % count;
      if (used[index] === 0) {
        this.nextHint[driveIndex] = index + 1;
        return index;
      }
    }
    assert(false, `drive ${driveIndex} has a free count but no free PSEG`);
  }
}

/** Lexicographic comparison of two keys of equal length. */
function compareKeys(a: number[], b: number[]): number {
  for (let index = 0; index < a.length; index += 1)
    if (a[index] !== b[index]) return a[index]! - b[index]!;
  return 0;
}
