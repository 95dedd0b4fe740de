// The conformance suite against RStores (RAID-0 over three members, for several stripe units,
// RAID-1 over two, RAID-5 over three and four). Every drive is first filled with a sentinel
// pattern, so the RStore does not start as zeros, and close() checks that no byte outside the
// RStore's PSEGs changed, that the two mirrors of a RAID-1 RStore hold the same bytes, and that
// every RAID-5 row's parity unit is the XOR of its data units.

import { describe, expect, it } from 'vitest';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import type { RaidLevel, RStoreRecord } from '../../src/meta/pool-metadata.js';
import type { DriveGeometry } from '../../src/raid/member-io.js';
import { RStore } from '../../src/raid/rstore.js';
import { SeededRandom } from '../../src/util/clock.js';
import { KiB } from '../../src/util/sizes.js';
import { firstDifference, patternBytes } from '../support/bytes.js';
import {
  describeBlockDeviceConformance,
  type ConformanceSubject,
} from './block-device-conformance.js';

const psegSizeBytes = 256 * KiB;
const psegAreaOffsetBytes = 64 * KiB + 4096; // not a multiple of the stripe unit, on purpose
const psegsPerDrive = 3;
const driveSizeBytes = psegAreaOffsetBytes + psegsPerDrive * psegSizeBytes;

async function makeRStoreSubject(
  raidLevel: RaidLevel,
  stripeUnitBytes: number,
  raid5Members = 3,
): Promise<ConformanceSubject> {
  const drives = [0, 1, 2, 3].map(
    (index) => new MemoryDrive(`raid-member${index}`, driveSizeBytes),
  );
  const sentinels = drives.map((_, index) => patternBytes(driveSizeBytes, 900 + index));
  // Members deliberately out of drive order and at different PSEG indexes.
  const members =
    raidLevel === 0
      ? [
          { driveIndex: 2, psegIndex: 1 },
          { driveIndex: 0, psegIndex: 2 },
          { driveIndex: 3, psegIndex: 0 },
        ]
      : raidLevel === 1
        ? [
            { driveIndex: 1, psegIndex: 2 },
            { driveIndex: 3, psegIndex: 1 },
          ]
        : [
            { driveIndex: 3, psegIndex: 1 },
            { driveIndex: 0, psegIndex: 0 },
            { driveIndex: 2, psegIndex: 2 },
            { driveIndex: 1, psegIndex: 1 },
          ].slice(0, raid5Members);
  const psegStart = (psegIndex: number): number => psegAreaOffsetBytes + psegIndex * psegSizeBytes;
  if (raidLevel === 1) {
    // Mirrors start equal, as they do in a pool (both zero): copy the first member's PSEG to the
    // second.
    const first = members[0]!;
    const second = members[1]!;
    sentinels[first.driveIndex]!.copy(
      sentinels[second.driveIndex]!,
      psegStart(second.psegIndex),
      psegStart(first.psegIndex),
      psegStart(first.psegIndex) + psegSizeBytes,
    );
  }
  if (raidLevel === 5) {
    // Parity starts consistent, as in a pool (all zero): each row's parity is the XOR of its data.
    const units = psegSizeBytes / stripeUnitBytes;
    for (let row = 0; row < units; row += 1) {
      const parityMember = members.length - 1 - (row % members.length);
      const parity = Buffer.alloc(stripeUnitBytes);
      for (let memberIndex = 0; memberIndex < members.length; memberIndex += 1) {
        if (memberIndex === parityMember) continue;
        const member = members[memberIndex]!;
        const start = psegStart(member.psegIndex) + row * stripeUnitBytes;
        for (let index = 0; index < stripeUnitBytes; index += 1)
          parity[index]! ^= sentinels[member.driveIndex]![start + index]!;
      }
      const member = members[parityMember]!;
      parity.copy(
        sentinels[member.driveIndex]!,
        psegStart(member.psegIndex) + row * stripeUnitBytes,
      );
    }
  }
  for (const [index, drive] of drives.entries()) {
    await drive.write(0, sentinels[index]!);
    await drive.flush();
  }
  const geometry: DriveGeometry[] = drives.map((drive) => ({
    drive,
    psegAreaOffsetBytes,
    psegSizeBytes,
  }));
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
      // RAID-5 keeps a row's parity in memory until a flush (or the next rows) writes it back
      await rstore.flush();
      for (const [driveIndex, drive] of drives.entries()) {
        const image = Buffer.alloc(driveSizeBytes);
        await drive.read(0, image);
        const expected = Buffer.from(sentinels[driveIndex]!);
        for (const member of members) {
          if (member.driveIndex !== driveIndex) continue;
          image.copy(
            expected,
            psegStart(member.psegIndex),
            psegStart(member.psegIndex),
            psegStart(member.psegIndex) + psegSizeBytes,
          );
        }
        expect(
          firstDifference(image, expected),
          `RAID-${raidLevel} wrote outside its PSEGs on ${drive.path}`,
        ).toBeUndefined();
      }
      if (raidLevel === 1) {
        const copies = await Promise.all(
          members.map(async (member) => {
            const copy = Buffer.alloc(psegSizeBytes);
            await drives[member.driveIndex]!.read(psegStart(member.psegIndex), copy);
            return copy;
          }),
        );
        expect(firstDifference(copies[1]!, copies[0]!), 'RAID-1 mirrors differ').toBeUndefined();
      }
      if (raidLevel === 5) {
        const images = await Promise.all(
          members.map(async (member) => {
            const image = Buffer.alloc(psegSizeBytes);
            await drives[member.driveIndex]!.read(psegStart(member.psegIndex), image);
            return image;
          }),
        );
        const xor = Buffer.alloc(psegSizeBytes);
        for (const image of images)
          for (let index = 0; index < psegSizeBytes; index += 1) xor[index]! ^= image[index]!;
        const bad = xor.findIndex((byte) => byte !== 0);
        expect(
          bad,
          `RAID-5 parity is not the XOR of the data in row ${Math.floor(bad / stripeUnitBytes)}`,
        ).toBe(-1);
      }
      await Promise.all(drives.map((drive) => drive.close()));
    },
  };
}

for (const stripeUnitBytes of [4 * KiB, 16 * KiB, 64 * KiB]) {
  describeBlockDeviceConformance(
    `RStore RAID-0, 3 members, stripe unit ${stripeUnitBytes / KiB} KiB`,
    () => makeRStoreSubject(0, stripeUnitBytes),
    {
      readsZerosWhenUnwritten: false,
      boundariesBytes: [stripeUnitBytes, 3 * stripeUnitBytes, psegSizeBytes],
      survivesPowerCut: true,
    },
  );
}

for (const [memberCount, stripeUnitBytes] of [
  [3, 4 * KiB],
  [3, 16 * KiB],
  [4, 64 * KiB],
] as const) {
  describeBlockDeviceConformance(
    `RStore RAID-5, ${memberCount} members, stripe unit ${stripeUnitBytes / KiB} KiB`,
    () => makeRStoreSubject(5, stripeUnitBytes, memberCount),
    {
      readsZerosWhenUnwritten: false,
      boundariesBytes: [stripeUnitBytes, (memberCount - 1) * stripeUnitBytes, psegSizeBytes],
      survivesPowerCut: true,
    },
  );
}

describe('RStore RAID-5 with a failed member', () => {
  it('reads every byte back by reconstruction from the others, and fails with EIO when a second member fails', async () => {
    const stripeUnitBytes = 16 * KiB;
    const drives = [0, 1, 2, 3].map(
      (index) => new MemoryDrive(`raid5-degraded${index}`, driveSizeBytes),
    );
    const members = [
      { driveIndex: 2, psegIndex: 0 },
      { driveIndex: 0, psegIndex: 1 },
      { driveIndex: 3, psegIndex: 2 },
      { driveIndex: 1, psegIndex: 0 },
    ];
    const geometry: DriveGeometry[] = drives.map((drive) => ({
      drive,
      psegAreaOffsetBytes,
      psegSizeBytes,
    }));
    const rstore = new RStore(
      { id: 9, rssId: 0, raidLevel: 5, members, rsegCount: 0, rsegFresh: '' },
      geometry,
      stripeUnitBytes,
    );
    const data = patternBytes(rstore.sizeBytes, 77);
    await rstore.write(0, data.subarray(0, 100_000)); // partial rows: read-modify-write
    await rstore.write(100_000, data.subarray(100_000)); // the rest, whole rows mostly
    await rstore.write(5_000, data.subarray(5_000, 9_000)); // rewrite of a piece
    expect(await rstore.firstInconsistentRow()).toBeUndefined();
    drives[3]!.fail(); // member 2
    const back = Buffer.alloc(rstore.sizeBytes);
    await rstore.read(0, back);
    expect(firstDifference(back, data)).toBeUndefined();
    const piece = Buffer.alloc(7_000);
    await rstore.read(123_457, piece);
    expect(firstDifference(piece, data.subarray(123_457, 130_457), 123_457)).toBeUndefined();
    drives[0]!.fail(); // member 1 too: data on members 1 and 2 is gone
    await expect(rstore.read(0, Buffer.alloc(rstore.sizeBytes))).rejects.toMatchObject({
      code: 'EIO',
    });
  });
});

describeBlockDeviceConformance('RStore RAID-1, 2 members', () => makeRStoreSubject(1, 16 * KiB), {
  readsZerosWhenUnwritten: false,
  boundariesBytes: [16 * KiB, 64 * KiB],
  survivesPowerCut: true,
});
