// A drive that is not there: its file or device could not be opened when the pool was opened, or
// it was there but could not be taken for the pool's drive (no good label, a label of another
// pool or an older one of this pool: `unusable`, see src/volume/drive-identity.ts). It stands in
// the pool's drive list at its index so that the pool can open degraded (seed 004
// [0044]: the RSS keeps its data with one drive lost); every access fails with EIO, and the pool
// marks the drive failed so that nothing tries.

import { LunfsError } from '../util/errors.js';
import type { Drive } from './drive.js';

export class MissingDrive implements Drive {
  constructor(
    readonly path: string,
    /** Why it could not be opened. */
    readonly reason: string,
    /** The size the pool metadata records for it (0 until the pool knows). */
    public sizeBytes = 0,
    /**
     * Why it stands in: 'absent' (no such file), 'error' (it failed when opened or read), or
     * 'unusable' (it was there but is not, or no longer, this pool's drive: failed, not missing).
     */
    readonly cause: 'absent' | 'error' | 'unusable' = 'absent',
  ) {}

  /** It was there but could not be taken for this pool's drive (see cause). */
  get unusable(): boolean {
    return this.cause === 'unusable';
  }

  async read(): Promise<void> {
    throw this.error('read');
  }

  async write(): Promise<void> {
    throw this.error('write');
  }

  async flush(): Promise<void> {
    throw this.error('flush');
  }

  async discard(): Promise<void> {
    throw this.error('discard');
  }

  async close(): Promise<void> {}

  private error(operation: string): LunfsError {
    return new LunfsError(
      'EIO',
      `${operation} failed on drive ${this.path}: the drive is ${this.unusable ? 'unusable' : 'missing'} (${this.reason})`,
    );
  }
}

export function isMissingDrive(drive: Drive): drive is MissingDrive {
  return drive instanceof MissingDrive;
}
