// The conformance suite against a whole LUN stack as stack.ts assembles it (WriteBackCache over
// DestagePipeline over ThinVolume over RStores), on pools of MemoryDrives. The cache is small (1
// MiB,
// eight 128 KiB pages) so that destaging under pressure and eviction happen during the suite.
// One LUN size ends inside a 4 KiB block: LUN sizes need only be whole 512-byte sectors. Each runs
// with and without write-through of whole pages (the default on memory drives).

import type { RaidLevel } from '../../src/meta/pool-metadata.js';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { SnapshotSet } from '../../src/snapshot/snapshot-set.js';
import { Pool } from '../../src/pool/pool.js';
import { assembleLunStack, makeCacheBudget, type LunStack } from '../../src/volume/stack.js';
import { FakeClock } from '../support/fake-clock.js';
import { formatPoolOn, makeMemoryDrives, powerCut, sessionViews } from '../support/memory-pool.js';
import {
  describeBlockDeviceConformance,
  type ConformanceSubject,
} from './block-device-conformance.js';
import { cachePageBytes, defaultChunkBytes } from '../../src/util/constants.js';

async function makeStackSubject(
  raidLevel: RaidLevel,
  lunSizeBytes: number,
  writeThrough: boolean,
): Promise<ConformanceSubject> {
  const clock = new FakeClock();
  let views = sessionViews(makeMemoryDrives(3, 6 * MiB, `stack${raidLevel}-`));
  let pool = await formatPoolOn(views, { raidLevel }, clock);
  await pool.createLun('conformance', lunSizeBytes);
  const assemble = (): LunStack => {
    const lun = pool.lunByName('conformance');
    return assembleLunStack(
      pool,
      lun,
      { budget: makeCacheBudget(MiB), clock, writeThrough },
      new SnapshotSet(
        pool,
        lun,
        Math.min(defaultChunkBytes, pool.allocationUnitBytes),
        silentLogger(),
      ),
    );
  };
  let stack = assemble();
  return {
    device: stack.cache,
    powerCycle: async () => {
      views = powerCut(views, new SeededRandom(lunSizeBytes));
      pool = await Pool.open(views, { clock, log: silentLogger() });
      stack = assemble();
      return stack.cache;
    },
    close: async () => {
      await stack.cache.close();
      await pool.close();
    },
  };
}

for (const raidLevel of [0, 1] as const) {
  for (const [lunSizeBytes, writeThrough] of [
    [2 * MiB, false],
    [MiB + 64 * KiB + 1536, false],
    [2 * MiB, true],
    [MiB + 64 * KiB + 1536, true],
  ] as const) {
    describeBlockDeviceConformance(
      `LUN stack RAID-${raidLevel}, ${lunSizeBytes} bytes${writeThrough ? ', whole pages written through' : ''}`,
      () => makeStackSubject(raidLevel, lunSizeBytes, writeThrough),
      {
        readsZerosWhenUnwritten: true,
        boundariesBytes: [16 * KiB, 64 * KiB, cachePageBytes],
        survivesPowerCut: true,
      },
    );
  }
}
