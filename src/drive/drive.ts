// A backing drive: the block interface plus identity and lifecycle. All disk access in lunfs goes
// through this interface; FileDrive talks to a file or block device, MemoryDrive simulates one
// with seeded faults (lost or torn unflushed writes, bit flips, EIO, a drive gone).

import type { BlockDevice } from '../block/block-device.js';

export interface Drive extends BlockDevice {
  /** Where the drive lives: a file path, or a name for a simulated drive. */
  readonly path: string;
  /** Releases the drive; later calls fail. */
  close(): Promise<void>;
  /**
   * Optional: does the read at once, with a sync call, and returns true when the drive serves a
   * request of this size inline (a file on tmpfs, FileDrive); false, having done nothing, when the
   * caller must use read(). Throws what read() would reject with.
   */
  readInline?(offsetBytes: number, target: Buffer): boolean;
  /** Optional: the same for a write. */
  writeInline?(offsetBytes: number, data: Buffer): boolean;
}

/**
 * Opens a drive by path; the pool layer receives one of these so tests can swap in memory drives.
 */
export type DriveOpener = (path: string) => Promise<Drive>;
