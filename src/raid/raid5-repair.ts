// RAID-5 repair, row by row, each row under its lock (writes to the row wait meanwhile), after
// the row's held units and pending parity are written and the row dropped from memory:
// - rebuild: a replacement member's unit is computed from the other members and written;
// - row log replay after a power cut: a row written while a data member was out gets the parity
//   that makes the member read back as logged;
// - scrub: every member's unit is read and verified, a unit failing its checksum is rebuilt from
//   the others, a parity that is not the XOR of the data rewritten;
// - resync after an unclean shutdown: scrub trusting the data (torn writes taken as written),
//   every row's parity recomputed, nothing counted as a repair.

import { xorInto } from '../native/native-kernels.js';
import type { ChunkLockManager } from '../util/chunk-locks.js';
import { checksumBlockBytes, type Raid5Geometry } from './raid5-geometry.js';
import type { MemberIo } from './member-io.js';
import type { Raid5Members } from './raid5-members.js';
import { copyOf, type RowHolder } from './raid5-memory.js';
import type { Raid5Reader, RowsInMemory } from './raid5-read.js';
import { emptyScrubReport, type RowScrubReport } from './scrub-report.js';

export class Raid5Repair {
  private readonly geometry: Raid5Geometry;
  private readonly io: MemberIo;

  constructor(
    private readonly members: Raid5Members,
    private readonly rowLocks: ChunkLockManager,
    private readonly rows: Pick<RowsInMemory, 'forgetRow'> & RowHolder,
    private readonly reader: Raid5Reader,
  ) {
    this.geometry = members.geometry;
    this.io = members.io;
  }

  /**
   * Rebuild of member memberIndex for rows [firstRow, endRow): each row's unit is computed from
   * the other members and written, under the row lock (writes to the row wait meanwhile).
   */
  async rebuildRows(
    memberIndex: number,
    firstRow: number,
    endRow: number,
    rebuilt: (row: number) => void,
  ): Promise<void> {
    const unit = Buffer.alloc(this.geometry.stripeUnitBytes);
    for (let row = firstRow; row < endRow; row += 1) {
      await this.rowLocks.withChunks([row], async () => {
        await this.rows.forgetRow(row);
        await this.reader.reconstruct(row, memberIndex, row * this.geometry.stripeUnitBytes, unit);
        await this.io.write(memberIndex, row * this.geometry.stripeUnitBytes, unit);
        // still under the lock: a write waiting for this row sees the member in service
        rebuilt(row);
      });
    }
  }

  /**
   * Replays a row log record after a power cut: the parity over its range becomes the XOR of the
   * other data units as they are and the logged contents of the member out of service, which so
   * reads back as logged. False (nothing written) when the member is in service again, or the
   * parity or another data unit of the row cannot be read or written.
   */
  async replayRowLog(
    row: number,
    memberIndex: number,
    offsetInUnit: number,
    contents: Buffer,
  ): Promise<boolean> {
    return this.rowLocks.withChunks([row], async () => {
      const rowOffset = row * this.geometry.stripeUnitBytes;
      const parityMember = this.geometry.parityMember(row);
      if (
        memberIndex === parityMember ||
        this.io.readable(memberIndex, rowOffset) ||
        !this.io.writable(parityMember)
      )
        return false;
      const parity = copyOf(contents);
      const other = Buffer.allocUnsafe(contents.length);
      for (let index = 0; index < this.geometry.memberCount; index += 1) {
        if (index === memberIndex || index === parityMember) continue;
        if (!this.io.readable(index, rowOffset)) return false;
        try {
          await this.io.read(index, rowOffset + offsetInUnit, other);
        } catch (error) {
          this.members.noteReadError(index, error);
          return false;
        }
        xorInto(parity, other);
      }
      await this.io.write(parityMember, rowOffset + offsetInUnit, parity);
      return true;
    });
  }

  /**
   * Makes the parity of rows [firstRow, endRow) the XOR of their data again: after a crash a row
   * whose data and parity writes were not both on disk has stale parity (the write hole). Rows
   * with a member out of service are left alone (their parity cannot be recomputed).
   */
  async resyncRows(firstRow: number, endRow: number): Promise<void> {
    await this.scrubRows(firstRow, endRow, { trustData: true });
  }

  /**
   * Scrub of rows [firstRow, endRow): every member's unit is read and its checksums verified; a
   * unit whose checksum fails is rebuilt from the others and written back; a parity that is not
   * the XOR of the (verified) data is rewritten. trustData (resync after an unclean shutdown): a
   * unit that fails alone is still rebuilt from the others (a torn write and a bit flip alike come
   * out as a value written there), several failing units of a row are taken as they are, and the
   * parity is recomputed, none of it counted as a repair.
   */
  async scrubRows(
    firstRow: number,
    endRow: number,
    options: { trustData?: boolean } = {},
  ): Promise<RowScrubReport> {
    const report = emptyScrubReport();
    for (let row = firstRow; row < endRow; row += 1)
      await this.rowLocks.withChunks([row], () => this.scrubRow(row, options, report));
    return report;
  }

  /**
   * Scrub of one row (see scrubRows), its findings added to report. The caller holds the row's
   * lock.
   */
  private async scrubRow(
    row: number,
    options: { trustData?: boolean },
    report: RowScrubReport,
  ): Promise<void> {
    const unitBytes = this.geometry.stripeUnitBytes;
    await this.rows.forgetRow(row); // it reads the parity and may rewrite this row's members
    const rowOffset = row * unitBytes;
    if (this.members.unreadableMembers(rowOffset).length > 0) {
      report.degradedRows += 1; // nothing to compare with
      return;
    }
    report.rows += 1;
    const units: Buffer[] = [];
    const bad: number[] = [];
    for (let index = 0; index < this.geometry.memberCount; index += 1) {
      const unit = Buffer.alloc(unitBytes);
      units.push(unit);
      try {
        await this.io.read(index, rowOffset, unit);
      } catch (error) {
        this.members.noteReadError(index, error);
        bad.push(index);
      }
    }
    if (bad.length > 1 && options.trustData) {
      await this.takeTornUnits(rowOffset, units, bad);
      bad.length = 0;
    }
    if (bad.length > 1) {
      report.unrepairable += 1;
      this.io.integrity.unrepairable += 1;
      return;
    }
    if (bad.length === 1) {
      const derived = units[bad[0]!]!;
      derived.fill(0);
      units.forEach((unit, index) => {
        if (index !== bad[0]) xorInto(derived, unit);
      });
      if (this.io.writable(bad[0]!)) await this.reader.repair(bad[0]!, rowOffset, derived);
      if (!options.trustData) report.checksumRepairs += 1;
      return;
    }
    const parityMember = this.geometry.parityMember(row);
    const parity = Buffer.alloc(unitBytes);
    units.forEach((unit, index) => {
      if (index !== parityMember) xorInto(parity, unit);
    });
    if (!parity.equals(units[parityMember]!)) {
      await this.io.write(parityMember, rowOffset, parity);
      if (!options.trustData) {
        report.parityRepairs += 1;
        this.io.integrity.parityRepairs += 1;
      }
    }
  }

  /**
   * After a crash, several members of the row have blocks that fail their checksum (the bad
   * members; units holds every member's unit of the row). Block by block: a block bad on one
   * member only is rebuilt from the others (a bit flip at rest, or a torn write, comes out as a
   * value written there); one bad on several is taken as it is (every sector holds a value
   * written to it), its checksums recomputed. The caller recomputes the parity next.
   */
  private async takeTornUnits(rowOffset: number, units: Buffer[], bad: number[]): Promise<void> {
    const unitBytes = this.geometry.stripeUnitBytes;
    const badAt = new Map<number, number[]>(); // offset in the unit -> members bad there
    for (const index of bad) {
      for (const offset of await this.io.badBlocks(index, rowOffset, unitBytes)) {
        const inUnit = offset - rowOffset;
        badAt.set(inUnit, [...(badAt.get(inUnit) ?? []), index]);
      }
      await this.io.recompute(index, rowOffset, unitBytes);
      await this.io.read(index, rowOffset, units[index]!);
    }
    for (const [inUnit, members] of badAt) {
      if (members.length !== 1) continue;
      const member = members[0]!;
      const block = units[member]!.subarray(inUnit, inUnit + checksumBlockBytes);
      block.fill(0);
      units.forEach((unit, index) => {
        if (index !== member) xorInto(block, unit.subarray(inUnit, inUnit + checksumBlockBytes));
      });
      if (this.io.writable(member)) await this.io.write(member, rowOffset + inUnit, block);
    }
  }

  /** The first row in [firstRow, endRow) whose parity is not the XOR of its data (for tests). */
  async firstInconsistentRow(firstRow: number, endRow: number): Promise<number | undefined> {
    await this.rows.writeBackKnownRows();
    const unitBytes = this.geometry.stripeUnitBytes;
    const unit = Buffer.alloc(unitBytes);
    for (let row = firstRow; row < endRow; row += 1) {
      const xor = Buffer.alloc(unitBytes);
      for (let memberIndex = 0; memberIndex < this.geometry.memberCount; memberIndex += 1) {
        await this.io.read(memberIndex, row * unitBytes, unit);
        xorInto(xor, unit);
      }
      if (!xor.every((byte) => byte === 0)) return row;
    }
    return undefined;
  }
}
