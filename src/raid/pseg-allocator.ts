// PSEG allocation (seed 004 [0059]): each drive's PSEG area is cut into equal PSEGs; an RStore
// takes PSEGs from distinct drives of one redundancy set (RSS). Which PSEGs are in use is derived
// from the RSDs at load, never stored twice. RAID-0 and RAID-5 take one PSEG on every drive of
// the RSS; RAID-1 takes a mirrored pair on the two drives with the most free PSEGs. New RStores
// go only on drives that are online: none on a failed drive or on one being rebuilt.

import { driveStateOf, type DriveRecord, type PsegRef, type RaidLevel, type RssRecord, type RStoreRecord } from '../meta/pool-metadata.js';
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

  /** Picks PSEGs for a new RStore, or returns undefined when the RSS has too few free PSEGs. */
  choose(raidLevel: RaidLevel, rss: RssRecord): PsegRef[] | undefined {
    const candidates = rss.driveIndexes.filter((index) => this.freeCounts[index]! > 0 && this.online(index));
    let driveIndexes: number[];
    if (raidLevel === 0 || raidLevel === 5) {
      if (candidates.length < rss.driveIndexes.length) return undefined;
      driveIndexes = rss.driveIndexes;
    } else {
      if (candidates.length < 2) return undefined;
      driveIndexes = [...candidates].sort((a, b) => this.freeCounts[b]! - this.freeCounts[a]! || a - b).slice(0, 2).sort((a, b) => a - b);
    }
    return driveIndexes.map((driveIndex) => ({ driveIndex, psegIndex: this.findFree(driveIndex) }));
  }

  markUsed(member: PsegRef): void {
    assert(this.used[member.driveIndex]![member.psegIndex] === 0, `PSEG ${member.driveIndex}:${member.psegIndex} used twice`);
    this.used[member.driveIndex]![member.psegIndex] = 1;
    this.freeCounts[member.driveIndex]! -= 1;
  }

  /** How many more RStores of the pool's RAID level the free PSEGs of an RSS could form. */
  rstoresStillPossible(raidLevel: RaidLevel, rss: RssRecord): number {
    const free = rss.driveIndexes.map((index) => (this.online(index) ? this.freeCounts[index]! : 0));
    if (raidLevel === 0 || raidLevel === 5) return Math.min(...free);
    const total = free.reduce((a, b) => a + b, 0);
    return Math.min(Math.floor(total / 2), total - Math.max(...free));
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
