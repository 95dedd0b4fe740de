// The one block interface every layer under the FUSE front speaks (drives, RStores, thin volumes,
// the destage pipeline, the cache). A layer receives the layer under it in its constructor and
// forwards, the way nbdkit filters stack over plugins. Ranges are checked once, by checkRange at
// each public entry, so that inner code can trust offsets and lengths.

import { LunfsError } from '../util/errors.js';

export interface BlockDevice {
  /** Size of the addressable range in bytes. */
  readonly sizeBytes: number;

  /** Reads target.length bytes at offsetBytes into target. */
  read(offsetBytes: number, target: Buffer): Promise<void>;

  /**
   * Writes data at offsetBytes. When the promise resolves the write is acknowledged: a read sees
   * it, but it is durable only after a later flush() resolves. epoch, passed by the write-back
   * cache when it destages, is the snapshot epoch the data was written in (the destage pipeline
   * preserves originals for the snapshots taken at or before it); other layers ignore it.
   */
  write(offsetBytes: number, data: Buffer, epoch?: number): Promise<void>;

  /** Makes every write acknowledged before this call durable (data and metadata). */
  flush(): Promise<void>;

  /** Says the range is no longer needed: it reads as zeros afterwards. */
  discard(offsetBytes: number, lengthBytes: number): Promise<void>;

  /**
   * Optional: guarantees, synchronously, that a later write of the range will find space (thin
   * volumes allocate here), or throws ENOSPC and changes nothing. A write-back cache calls it
   * before it acknowledges a write, so that a full pool fails the writer, not a later destage.
   */
  prepareWrite?(offsetBytes: number, lengthBytes: number): void;
}

/**
 * Throws EINVAL unless [offsetBytes, offsetBytes + lengthBytes) lies inside a device of sizeBytes.
 */
export function checkRange(
  device: { readonly sizeBytes: number },
  offsetBytes: number,
  lengthBytes: number,
  what = 'request',
): void {
  if (
    !Number.isSafeInteger(offsetBytes) ||
    offsetBytes < 0 ||
    !Number.isSafeInteger(lengthBytes) ||
    lengthBytes < 0
  ) {
    throw new LunfsError(
      'EINVAL',
      `${what}: invalid range offset=${offsetBytes} length=${lengthBytes}`,
    );
  }
  if (offsetBytes + lengthBytes > device.sizeBytes) {
    throw new LunfsError(
      'EINVAL',
      `${what}: range ${offsetBytes}+${lengthBytes} ends past the device end ${device.sizeBytes}`,
    );
  }
}

/**
 * Calls visit once per piece of [offsetBytes, offsetBytes + lengthBytes) cut at multiples of
 * unitBytes.
 */
export function forEachPiece(
  offsetBytes: number,
  lengthBytes: number,
  unitBytes: number,
  visit: (
    unitIndex: number,
    offsetInUnitBytes: number,
    pieceLengthBytes: number,
    offsetInRequestBytes: number,
  ) => void,
): void {
  let done = 0;
  while (done < lengthBytes) {
    const position = offsetBytes + done;
    const unitIndex = Math.floor(position / unitBytes);
    const offsetInUnit = position - unitIndex * unitBytes;
    const pieceLength = Math.min(unitBytes - offsetInUnit, lengthBytes - done);
    visit(unitIndex, offsetInUnit, pieceLength, done);
    done += pieceLength;
  }
}
