// A view of a MemoryDrive for one "process" using it. A simulated crash must stop the abandoned
// process for good: MemoryDrive.crash() reopens the drive, so background work of the old stack
// (a destage still in flight) could otherwise write into the next session. fence() cuts this
// view off; the next session gets a new view of the same MemoryDrive. holdFlushes() parks every
// flush until releaseFlushes(), so a test can crash with writes issued but not yet flushed.

import type { Drive } from '../../src/drive/drive.js';
import type { MemoryDrive } from '../../src/drive/memory-drive.js';
import { LunfsError } from '../../src/util/errors.js';

export class SessionDrive implements Drive {
  private fenced = false;
  private heldFlushes: Array<() => void> | undefined;
  /**
   * Microtask turns an operation waits before it reaches the drive (the model test's seeded
   * timing): operations issued together then reach the drive, and complete, in another order.
   */
  delayTurns?: (operation: 'read' | 'write' | 'flush' | 'discard') => number;

  constructor(readonly inner: MemoryDrive) {}

  get path(): string {
    return this.inner.path;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    await this.settle('read');
    await this.inner.read(offsetBytes, target);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    await this.settle('write');
    await this.inner.write(offsetBytes, data);
  }

  async flush(): Promise<void> {
    await this.settle('flush');
    if (this.heldFlushes) await new Promise<void>((resolve) => this.heldFlushes!.push(resolve));
    this.checkLive('flush');
    await this.inner.flush();
  }

  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.settle('discard');
    await this.inner.discard(offsetBytes, lengthBytes);
  }

  /**
   * Checks the view is live, waits its delay (if any), and checks again: a fence may come
   * meanwhile.
   */
  private async settle(operation: 'read' | 'write' | 'flush' | 'discard'): Promise<void> {
    this.checkLive(operation);
    const turns = this.delayTurns?.(operation) ?? 0;
    if (turns === 0) return;
    for (let turn = 0; turn < turns; turn += 1) await Promise.resolve();
    this.checkLive(operation);
  }

  /** Closing a session's view fences it; the MemoryDrive itself stays usable for the next one. */
  async close(): Promise<void> {
    this.fence();
  }

  /** From now on every operation of this view fails, and parked flushes never reach the drive. */
  fence(): void {
    this.fenced = true;
    this.releaseFlushes();
  }

  holdFlushes(): void {
    this.heldFlushes ??= [];
  }

  /** Number of flushes parked by holdFlushes(). */
  get heldFlushCount(): number {
    return this.heldFlushes?.length ?? 0;
  }

  releaseFlushes(): void {
    const waiting = this.heldFlushes ?? [];
    this.heldFlushes = undefined;
    for (const resolve of waiting) resolve();
  }

  private checkLive(operation: string): void {
    if (this.fenced)
      throw new LunfsError(
        'EIO',
        `${operation} on ${this.path} after the session was fenced (simulated crash)`,
      );
  }
}
