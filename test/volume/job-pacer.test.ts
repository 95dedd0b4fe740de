// JobPacer on a fake clock and a fake sleep: a background job yields at every step, sleeps only
// while foreground requests come, and then takes about its share of the time.

import { describe, expect, it } from 'vitest';
import { JobPacer } from '../../src/volume/job-pacer.js';
import { FakeClock } from '../support/fake-clock.js';

function pacerWith(share: number) {
  const clock = new FakeClock();
  let ops = 0;
  const sleeps: number[] = [];
  const pacer = new JobPacer({
    clock,
    foregroundOps: () => ops,
    busyShare: share,
    quietMs: 200,
    workWindowMs: 5,
    sleep: async (ms) => {
      sleeps.push(ms);
      clock.advance(ms);
    },
  });
  return { clock, pacer, sleeps, request: () => (ops += 1) };
}

describe('JobPacer', () => {
  it('never sleeps while no foreground request comes', async () => {
    const { clock, pacer, sleeps } = pacerWith(0.1);
    for (let step = 0; step < 100; step += 1) {
      clock.advance(1); // 1 ms of the job's own work per step
      await pacer.step();
    }
    expect(sleeps).toEqual([]);
    expect(pacer.sleptMs).toBe(0);
  });

  it('while requests come, sleeps so the job takes its share of the time', async () => {
    const { clock, pacer, sleeps, request } = pacerWith(0.1);
    let workMs = 0;
    for (let step = 0; step < 100; step += 1) {
      request();
      clock.advance(1);
      workMs += 1;
      await pacer.step();
    }
    expect(sleeps.length).toBeGreaterThan(10);
    for (const ms of sleeps) expect(ms).toBe(45); // 5 ms of work, 9 times as long asleep
    const share = workMs / (workMs + pacer.sleptMs);
    expect(share).toBeGreaterThan(0.09);
    expect(share).toBeLessThan(0.11);
  });

  it('goes back to full speed once the foreground has been quiet for quietMs', async () => {
    const { clock, pacer, sleeps, request } = pacerWith(0.25);
    request();
    for (let step = 0; step < 10; step += 1) {
      clock.advance(1);
      await pacer.step();
    }
    const whileBusy = sleeps.length;
    expect(whileBusy).toBeGreaterThan(0);
    clock.advance(250); // no request for longer than quietMs
    for (let step = 0; step < 50; step += 1) {
      clock.advance(1);
      await pacer.step();
    }
    expect(sleeps.length).toBe(whileBusy);
  });

  it('does not count I/O that came before the job started as busy', async () => {
    // The count says how much I/O came, not when: a job started long after the last request
    // would otherwise sleep through its first steps (found with bench/clones.sh: 180 ms).
    const { clock, pacer, sleeps, request } = pacerWith(0.1);
    request();
    clock.advance(5000);
    pacer.jobStarted();
    for (let step = 0; step < 20; step += 1) {
      clock.advance(1);
      await pacer.step();
    }
    expect(sleeps).toEqual([]);
  });

  it('yields a turn of the event loop at every step', async () => {
    const { pacer } = pacerWith(0.1);
    let ran = false;
    setImmediate(() => (ran = true));
    await pacer.step();
    expect(ran).toBe(true); // an immediate queued before the step ran before it returned
  });
});
