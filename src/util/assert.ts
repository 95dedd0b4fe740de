// Assertions that are never stripped: a broken invariant is a bug and must crash loudly rather
// than let lunfs write wrong data. Operating errors use LunfsError instead.

export class AssertionFailure extends Error {
  constructor(message: string) {
    super(`lunfs invariant broken: ${message}`);
    this.name = 'AssertionFailure';
  }
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailure(message);
}

export function assertSafeInteger(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new AssertionFailure(`${name} must be a non-negative safe integer, got ${value}`);
  }
}
