// A crash random for MemoryDrive.crash() that decides by script instead of by seed: every
// unflushed write of the drive gets one fate (0 lost, 1 completed, 2 torn), and a torn write's
// 512-byte sectors land as `lands` says (counted from the drive's first torn sector).

import { SeededRandom } from '../../src/util/clock.js';

export class ScriptedCrash extends SeededRandom {
  private sector = 0;

  constructor(
    private readonly fate: 0 | 1 | 2,
    private readonly lands: (sectorIndex: number) => boolean = () => true,
  ) {
    super(0);
  }

  override integer(): number {
    return this.fate;
  }

  override chance(): boolean {
    const landed = this.lands(this.sector);
    this.sector += 1;
    return landed;
  }
}
