// The conformance suite against a ThinVolume alone (no cache above it: writes allocate on the
// spot), on a pool of MemoryDrives, for several allocation units and both RAID levels, with LUN
// sizes that end inside an allocation unit and inside a 4 KiB block.

import { ThinVolume } from '../../src/map/thin-volume.js';
import type { RaidLevel } from '../../src/meta/pool-metadata.js';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Pool } from '../../src/pool/pool.js';
import { FakeClock } from '../support/fake-clock.js';
import { formatPoolOn, makeMemoryDrives, powerCut, sessionViews } from '../support/memory-pool.js';
import {
  describeBlockDeviceConformance,
  type ConformanceSubject,
} from './block-device-conformance.js';

async function makeThinSubject(
  raidLevel: RaidLevel,
  allocationUnitBytes: number,
  lunSizeBytes: number,
): Promise<ConformanceSubject> {
  const clock = new FakeClock();
  let views = sessionViews(makeMemoryDrives(3, 6 * MiB, `thin${raidLevel}-`));
  let pool = await formatPoolOn(
    views,
    { raidLevel, allocationUnitBytes, stripeUnitBytes: 16 * KiB },
    clock,
  );
  await pool.createLun('conformance', lunSizeBytes);
  let thin = new ThinVolume(pool, pool.lunByName('conformance'));
  return {
    device: thin,
    powerCycle: async () => {
      views = powerCut(views, new SeededRandom(allocationUnitBytes));
      pool = await Pool.open(views, { clock, log: silentLogger() });
      thin = new ThinVolume(pool, pool.lunByName('conformance'));
      return thin;
    },
    close: async () => {
      await thin.flush();
      await pool.close();
    },
  };
}

for (const raidLevel of [0, 1] as const) {
  for (const allocationUnitBytes of [64 * KiB, 128 * KiB]) {
    const lunSizeBytes = 2 * MiB - allocationUnitBytes / 2 + 1536;
    describeBlockDeviceConformance(
      `ThinVolume RAID-${raidLevel}, allocation unit ${allocationUnitBytes / KiB} KiB, ${lunSizeBytes} bytes`,
      () => makeThinSubject(raidLevel, allocationUnitBytes, lunSizeBytes),
      {
        readsZerosWhenUnwritten: true,
        boundariesBytes: [16 * KiB, allocationUnitBytes, 256 * KiB],
        survivesPowerCut: true,
      },
    );
  }
}
