// Byte streams over the control socket (lunfs export and import while a mount holds the pool).
// After the request line, the side that sends the stream sends it as frames: a u32 (little-endian)
// length and that many bytes. A frame of length 0 ends the stream; the mount then answers with its
// JSON line as for any request. An export's mount ends its frames with 0xFFFFFFFF instead when it
// failed, then the JSON line that says why.

import type { Socket } from 'node:net';

export const endFrame = 0;
export const failedFrame = 0xffffffff;

export function frameOf(chunk: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(chunk.length, 0);
  return Buffer.concat([header, chunk]);
}

export function markerFrame(marker: number): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(marker, 0);
  return header;
}

/** Writes to socket, waiting while its buffer is full. */
export async function writeWithBackpressure(socket: Socket, data: Buffer): Promise<void> {
  if (socket.destroyed) throw new Error('the connection is closed');
  if (socket.write(data)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', closed);
      resolve();
    };
    const closed = (): void => {
      socket.off('drain', done);
      reject(new Error('the connection closed while sending'));
    };
    socket.on('drain', done);
    socket.on('close', closed);
  });
}

/**
 * Decodes frames pushed to it into an async iterable of their payloads. What follows the end (or
 * failure) marker is kept in rest. Pauses its source while more than highWaterBytes wait.
 */
export class FrameDecoder implements AsyncIterable<Buffer> {
  private pending: Buffer = Buffer.alloc(0);
  private readonly ready: Buffer[] = [];
  private queuedBytes = 0;
  private waiter: (() => void) | undefined;
  /** The marker that ended the frames (endFrame or failedFrame), once seen. */
  marker: number | undefined;
  failure: Error | undefined;
  rest: Buffer = Buffer.alloc(0);

  constructor(
    private readonly pause: () => void = () => {},
    private readonly resume: () => void = () => {},
    private readonly highWaterBytes = 8 * 1024 * 1024,
  ) {}

  push(chunk: Buffer): void {
    if (this.marker !== undefined) {
      this.rest = Buffer.concat([this.rest, chunk]);
      return;
    }
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.marker === undefined && this.pending.length >= 4) {
      const length = this.pending.readUInt32LE(0);
      if (length === endFrame || length === failedFrame) {
        this.marker = length;
        this.rest = this.pending.subarray(4);
        this.pending = Buffer.alloc(0);
        break;
      }
      if (this.pending.length < 4 + length) break;
      this.ready.push(this.pending.subarray(4, 4 + length));
      this.queuedBytes += length;
      this.pending = this.pending.subarray(4 + length);
    }
    if (this.queuedBytes > this.highWaterBytes) this.pause();
    this.wake();
  }

  /** The source ended (or broke) before the end marker. */
  fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      const next = this.ready.shift();
      if (next) {
        this.queuedBytes -= next.length;
        if (this.queuedBytes <= this.highWaterBytes / 2) this.resume();
        yield next;
        continue;
      }
      if (this.marker !== undefined) return;
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }
}
