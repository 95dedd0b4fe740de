// The conformance suite against a writable snapshot (SnapshotVolume over a LUN stack, its own
// image in the LUN's target volume), on pools of MemoryDrives. The snapshot is taken of a new LUN
// (so it reads as zeros where nothing was written), then the LUN is overwritten everywhere, so
// every chunk the suite touches has its original preserved in the target, shared with a second
// snapshot: writes must land in the snapshot's own copies, never in the shared ones. Power cuts
// hit the whole pool; what a snapshot flush covered must survive. The second snapshot and the LUN
// must still read their own images when the suite is done.

import { expect } from 'vitest';
import type { RaidLevel } from '../../src/meta/pool-metadata.js';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import { Pool } from '../../src/pool/pool.js';
import { firstDifference, isAllZero, patternBytes, readAll } from '../support/bytes.js';
import { FakeClock } from '../support/fake-clock.js';
import { formatPoolOn, makeMemoryDrives, powerCut, sessionViews } from '../support/memory-pool.js';
import {
  describeBlockDeviceConformance,
  type ConformanceSubject,
} from './block-device-conformance.js';
import { cachePageBytes } from '../../src/util/constants.js';

async function makeSnapshotSubject(
  raidLevel: RaidLevel,
  lunSizeBytes: number,
): Promise<ConformanceSubject> {
  const clock = new FakeClock();
  let views = sessionViews(makeMemoryDrives(3, 12 * MiB, `snapvol${raidLevel}-`));
  let pool = await formatPoolOn(views, { raidLevel }, clock);
  const open = async (): Promise<Controller> => {
    const made = new Controller(pool, { cacheBytes: MiB, clock, log: silentLogger() });
    await made.openSnapshots();
    return made;
  };
  let controller = await open();
  await controller.createLun('conformance', lunSizeBytes);
  await controller.createSnapshot('conformance@subject');
  await controller.createSnapshot('conformance@witness');
  const lunImage = patternBytes(lunSizeBytes, 77);
  await controller.stack('conformance').cache.write(0, lunImage);
  await controller.stack('conformance').cache.flush();
  return {
    device: controller.snapshotVolume('conformance@subject'),
    powerCycle: async () => {
      views = powerCut(views, new SeededRandom(lunSizeBytes));
      pool = await Pool.open(views, { clock, log: silentLogger() });
      controller = await open();
      return controller.snapshotVolume('conformance@subject');
    },
    close: async () => {
      // The witness snapshot and the LUN never saw the suite's writes.
      expect(
        isAllZero(await readAll(controller.snapshotVolume('conformance@witness'))),
        'the second snapshot changed',
      ).toBe(true);
      expect(
        firstDifference(await readAll(controller.stack('conformance').cache), lunImage),
        'the LUN changed',
      ).toBeUndefined();
      await controller.close();
    },
  };
}

for (const raidLevel of [0, 1] as const) {
  for (const lunSizeBytes of [2 * MiB, MiB + 64 * KiB + 1536]) {
    describeBlockDeviceConformance(
      `writable snapshot RAID-${raidLevel}, ${lunSizeBytes} bytes`,
      () => makeSnapshotSubject(raidLevel, lunSizeBytes),
      {
        readsZerosWhenUnwritten: true,
        boundariesBytes: [16 * KiB, 64 * KiB, cachePageBytes],
        survivesPowerCut: true,
      },
    );
  }
}
