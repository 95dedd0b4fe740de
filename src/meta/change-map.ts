// A snap-point map's bits (issue 16, seed 003): one bit per grain of a LUN, set once a change of
// that grain may have reached the drives since the map was started. It grows with the LUN (a bit
// past the end of the array is clear), and reads and sets runs of grains at once, since a
// destage marks a run and an export walks runs.

export class ChangeMap {
  private bytes: Uint8Array;
  private setCount = 0;

  constructor(grains = 0) {
    this.bytes = new Uint8Array(Math.ceil(grains / 8));
  }

  /** Number of set bits. */
  get count(): number {
    return this.setCount;
  }

  get(grain: number): boolean {
    const byte = this.bytes[grain >>> 3];
    return byte !== undefined && (byte & (1 << (grain & 7))) !== 0;
  }

  /** Whether every grain of [first, first + count) is set. */
  allSet(first: number, count: number): boolean {
    for (let grain = first; grain < first + count; grain += 1) if (!this.get(grain)) return false;
    return true;
  }

  /** Sets [first, first + count); returns the grains that were clear. */
  setRun(first: number, count: number): number[] {
    const needed = Math.ceil((first + count) / 8);
    if (needed > this.bytes.length) {
      const grown = new Uint8Array(Math.max(needed, this.bytes.length * 2));
      grown.set(this.bytes);
      this.bytes = grown;
    }
    const newly: number[] = [];
    for (let grain = first; grain < first + count; grain += 1) {
      const mask = 1 << (grain & 7);
      const index = grain >>> 3;
      if ((this.bytes[index]! & mask) !== 0) continue;
      this.bytes[index] = this.bytes[index]! | mask;
      this.setCount += 1;
      newly.push(grain);
    }
    return newly;
  }

  /** Calls visit for each run of set grains, in order. */
  forEachRun(visit: (first: number, count: number) => void): void {
    let start = -1;
    const grains = this.bytes.length * 8;
    for (let grain = 0; grain <= grains; grain += 1) {
      const set = grain < grains && this.get(grain);
      if (set && start < 0) start = grain;
      else if (!set && start >= 0) {
        visit(start, grain - start);
        start = -1;
      }
    }
  }

  /** The bits as stored in a checkpoint (trailing clear bytes dropped). */
  encode(): Buffer {
    let length = this.bytes.length;
    while (length > 0 && this.bytes[length - 1] === 0) length -= 1;
    return Buffer.from(this.bytes.subarray(0, length));
  }

  static decode(stored: Buffer): ChangeMap {
    const map = new ChangeMap();
    map.bytes = new Uint8Array(stored);
    for (const byte of map.bytes) {
      let bits = byte;
      while (bits !== 0) {
        map.setCount += bits & 1;
        bits >>>= 1;
      }
    }
    return map;
  }
}

/** Runs of consecutive grains in an ascending list, as [first, count] pairs. */
export function grainRuns(grains: number[]): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (const grain of grains) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === grain) last[1] += 1;
    else runs.push([grain, 1]);
  }
  return runs;
}
