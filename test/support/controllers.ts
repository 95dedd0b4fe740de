// Controllers over simulated pools for the snapshot tests: a controller with a 1 MiB cache and a
// fake clock, its reopen on the same drives after a clean close, and the code of a refusal.

import { isLunfsError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { MiB } from '../../src/util/sizes.js';
import { Controller } from '../../src/volume/controller.js';
import type { Pool } from '../../src/pool/pool.js';
import { FakeClock } from './fake-clock.js';
import { reopenMemoryPool, type MemoryPool } from './memory-pool.js';

/** A controller of pool with its snapshot targets open. */
export async function controllerFor(pool: Pool): Promise<Controller> {
  const controller = new Controller(pool, {
    cacheBytes: MiB,
    clock: new FakeClock(),
    log: silentLogger(),
  });
  await controller.openSnapshots();
  return controller;
}

/** Closes the controller cleanly and opens the pool again on the same drives. */
export async function reopen(memoryPool: MemoryPool, controller: Controller): Promise<Controller> {
  await controller.close();
  memoryPool.pool = await reopenMemoryPool(memoryPool.drives);
  return controllerFor(memoryPool.pool);
}

/** The LunfsError code action fails with, 'resolved' when it does not fail. */
export async function errorCode(action: () => Promise<unknown>): Promise<string> {
  try {
    await action();
    return 'resolved';
  } catch (error) {
    return isLunfsError(error) ? error.code : String(error);
  }
}
