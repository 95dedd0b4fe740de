// A view of a MemoryDrive that fails exactly one write, on the test's cue: parkWrite(matches)
// arms it, the first write that matches is held (not applied) and the returned promise resolves;
// the test then does what it wants to race with that write and ends it with failParked() (EIO,
// nothing written) or releaseParked() (written). Every other operation passes straight through,
// before, during and after. So a test can force an order (a write below in flight, then other
// requests, then its failure) without relying on timing. parkRead(matches) holds the next read that
// matches the same way, until releaseParkedRead() (it then reads what the drive holds by then).

import type { Drive } from '../../src/drive/drive.js';
import type { MemoryDrive } from '../../src/drive/memory-drive.js';
import { LunfsError } from '../../src/util/errors.js';

type WriteMatcher = (offsetBytes: number, data: Buffer) => boolean;

export class FaultOnCueDrive implements Drive {
  private armed: { matches: WriteMatcher; arrived: () => void } | undefined;
  private parked: { resume: (fail: boolean) => void; offsetBytes: number } | undefined;
  private armedRead:
    | { matches: (offsetBytes: number, lengthBytes: number) => boolean; arrived: () => void }
    | undefined;
  private parkedRead: (() => void) | undefined;
  /** Writes failed on cue (at most one per parkWrite). */
  failedWrites = 0;

  constructor(readonly inner: MemoryDrive) {}

  get path(): string {
    return this.inner.path;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    const armed = this.armedRead;
    if (armed && armed.matches(offsetBytes, target.length)) {
      this.armedRead = undefined;
      await new Promise<void>((resume) => {
        this.parkedRead = resume;
        armed.arrived();
      });
    }
    return this.inner.read(offsetBytes, target);
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    const armed = this.armed;
    if (armed && armed.matches(offsetBytes, data)) {
      this.armed = undefined;
      // The bytes as they are now: the caller's buffer may be reused while the write is parked.
      const copy = Buffer.from(data);
      const fail = await new Promise<boolean>((resume) => {
        this.parked = { resume, offsetBytes };
        armed.arrived();
      });
      if (fail) {
        this.failedWrites += 1;
        throw new LunfsError(
          'EIO',
          `write of ${copy.length} bytes at ${offsetBytes} failed on ${this.path}: simulated I/O error`,
        );
      }
      await this.inner.write(offsetBytes, copy);
      return;
    }
    await this.inner.write(offsetBytes, data);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.inner.discard(offsetBytes, lengthBytes);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Holds the next write that matches; resolves once it is held. */
  parkWrite(matches: WriteMatcher): Promise<void> {
    if (this.armed || this.parked)
      throw new Error(`${this.path}: a write is parked or armed already`);
    return new Promise<void>((arrived) => (this.armed = { matches, arrived }));
  }

  /** Holds the next read that matches; resolves once it is held. */
  parkRead(matches: (offsetBytes: number, lengthBytes: number) => boolean): Promise<void> {
    if (this.armedRead || this.parkedRead)
      throw new Error(`${this.path}: a read is parked or armed already`);
    return new Promise<void>((arrived) => (this.armedRead = { matches, arrived }));
  }

  /** Forgets an armed read that has not arrived (another drive's did, say). */
  disarmRead(): void {
    this.armedRead = undefined;
  }

  /** Whether a read is parked now. */
  get hasParkedRead(): boolean {
    return this.parkedRead !== undefined;
  }

  /** The held read goes on. */
  releaseParkedRead(): void {
    const resume = this.parkedRead;
    if (!resume) throw new Error(`${this.path}: no read is parked`);
    this.parkedRead = undefined;
    resume();
  }

  /** Whether a write is parked now. */
  get hasParked(): boolean {
    return this.parked !== undefined;
  }

  /** The held write fails with EIO; nothing of it reaches the drive. */
  failParked(): void {
    this.end(true);
  }

  /** The held write goes on to the drive. */
  releaseParked(): void {
    this.end(false);
  }

  private end(fail: boolean): void {
    const parked = this.parked;
    if (!parked) throw new Error(`${this.path}: no write is parked`);
    this.parked = undefined;
    parked.resume(fail);
  }
}

/** A matcher for writes whose data contains marker (the bytes a test wrote, seen at the drive). */
export function writeContaining(marker: Buffer): WriteMatcher {
  return (_offsetBytes, data) => data.includes(marker);
}
