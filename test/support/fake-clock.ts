// A clock that moves only when a test says so, so that cache expiry never fires on its own and a
// seeded run replays exactly.

import type { Clock } from '../../src/util/clock.js';

export class FakeClock implements Clock {
  constructor(private nowValueMs = Date.UTC(2024, 0, 1)) {}

  nowMs(): number {
    return this.nowValueMs;
  }

  advance(durationMs: number): void {
    this.nowValueMs += durationMs;
  }
}
