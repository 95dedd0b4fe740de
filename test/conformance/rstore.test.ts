// The conformance suite against RStores (RAID-0 over three members, for several stripe units, and
// RAID-1 over two). Every drive is first filled with a sentinel pattern, so the RStore does not
// start as zeros, and close() checks that no byte outside the RStore's PSEGs changed and that the
// two mirrors of a RAID-1 RStore hold the same bytes.

import { expect } from 'vitest';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import type { RaidLevel, RStoreRecord } from '../../src/meta/pool-metadata.js';
import { RStore, type DriveGeometry } from '../../src/raid/rstore.js';
import { SeededRandom } from '../../src/util/clock.js';
import { KiB } from '../../src/util/sizes.js';
import { firstDifference, patternBytes } from '../support/bytes.js';
import { describeBlockDeviceConformance, type ConformanceSubject } from './block-device-conformance.js';

const psegSizeBytes = 256 * KiB;
const psegAreaOffsetBytes = 64 * KiB + 4096; // not a multiple of the stripe unit, on purpose
const psegsPerDrive = 3;
const driveSizeBytes = psegAreaOffsetBytes + psegsPerDrive * psegSizeBytes;

async function makeRstoreSubject(raidLevel: RaidLevel, stripeUnitBytes: number): Promise<ConformanceSubject> {
  const drives = [0, 1, 2, 3].map((index) => new MemoryDrive(`raid-member${index}`, driveSizeBytes));
  const sentinels = drives.map((_, index) => patternBytes(driveSizeBytes, 900 + index));
  // Members deliberately out of drive order and at different PSEG indexes.
  const members = raidLevel === 0
    ? [{ driveIndex: 2, psegIndex: 1 }, { driveIndex: 0, psegIndex: 2 }, { driveIndex: 3, psegIndex: 0 }]
    : [{ driveIndex: 1, psegIndex: 2 }, { driveIndex: 3, psegIndex: 1 }];
  const psegStart = (psegIndex: number): number => psegAreaOffsetBytes + psegIndex * psegSizeBytes;
  if (raidLevel === 1) {
    // Mirrors start equal, as they do in a pool (both zero): copy the first member's PSEG to the second.
    const first = members[0]!;
    const second = members[1]!;
    sentinels[first.driveIndex]!.copy(sentinels[second.driveIndex]!, psegStart(second.psegIndex), psegStart(first.psegIndex), psegStart(first.psegIndex) + psegSizeBytes);
  }
  for (const [index, drive] of drives.entries()) {
    await drive.write(0, sentinels[index]!);
    await drive.flush();
  }
  const geometry: DriveGeometry[] = drives.map((drive) => ({ drive, psegAreaOffsetBytes, psegSizeBytes }));
  const record: RStoreRecord = { id: 7, rssId: 0, raidLevel, members, rsegCount: 0, rsegFresh: '' };
  const make = (): RStore => new RStore(record, geometry, stripeUnitBytes);
  let rstore = make();
  return {
    device: rstore,
    powerCycle: async () => {
      const random = new SeededRandom(stripeUnitBytes + raidLevel);
      for (const drive of drives) drive.crash(random);
      rstore = make();
      return rstore;
    },
    close: async () => {
      for (const [driveIndex, drive] of drives.entries()) {
        const image = Buffer.alloc(driveSizeBytes);
        await drive.read(0, image);
        const expected = Buffer.from(sentinels[driveIndex]!);
        for (const member of members) {
          if (member.driveIndex !== driveIndex) continue;
          image.copy(expected, psegStart(member.psegIndex), psegStart(member.psegIndex), psegStart(member.psegIndex) + psegSizeBytes);
        }
        expect(firstDifference(image, expected), `RAID-${raidLevel} wrote outside its PSEGs on ${drive.path}`).toBeUndefined();
      }
      if (raidLevel === 1) {
        const copies = await Promise.all(members.map(async (member) => {
          const copy = Buffer.alloc(psegSizeBytes);
          await drives[member.driveIndex]!.read(psegStart(member.psegIndex), copy);
          return copy;
        }));
        expect(firstDifference(copies[1]!, copies[0]!), 'RAID-1 mirrors differ').toBeUndefined();
      }
      await Promise.all(drives.map((drive) => drive.close()));
    },
  };
}

for (const stripeUnitBytes of [4 * KiB, 16 * KiB, 64 * KiB]) {
  describeBlockDeviceConformance(`RStore RAID-0, 3 members, stripe unit ${stripeUnitBytes / KiB} KiB`, () => makeRstoreSubject(0, stripeUnitBytes), {
    readsZerosWhenUnwritten: false,
    boundariesBytes: [stripeUnitBytes, 3 * stripeUnitBytes, psegSizeBytes],
    survivesPowerCut: true,
  });
}

describeBlockDeviceConformance('RStore RAID-1, 2 members', () => makeRstoreSubject(1, 16 * KiB), {
  readsZerosWhenUnwritten: false,
  boundariesBytes: [16 * KiB, 64 * KiB],
  survivesPowerCut: true,
});
