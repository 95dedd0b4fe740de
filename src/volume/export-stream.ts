// The export stream (issue 16; docs/on-disk-format.md, "Export streams"): what `lunfs export`
// writes and `lunfs import` reads. Little-endian throughout.
//
//   header   "LUNFSEXP" | version u32 (1) | JSON length u32 | JSON (ExportHeader) | crc32c u32
//            (the crc covers everything before it)
//   records  kind u8 | 3 zero bytes | offset u64 | length u32 | crc32c u32 | data (kind 1 only)
//            kind 1 DATA: length bytes of data at offset (crc32c of the data)
//            kind 2 ZERO: the range reads as zeros (crc32c 0)
//            offsets ascend, and ranges do not overlap; offset and length are 4 KiB multiples,
//            except that a range may end at the volume's end
//   end      kind 255 | 3 zero bytes | records u64 | data bytes u32 high | data bytes u32 low |
//            crc32c u32 of the 20 bytes before it
// An importer applies nothing it has not checked, and a stream without its end record is cut
// short: import undoes what it applied (docs/architecture.md, "Export and import").

import { crc32c } from '../native/native-kernels.js';
import { LunfsError } from '../util/errors.js';

export const exportMagic = 'LUNFSEXP';
export const exportVersion = 1;
export const exportBlockBytes = 4096;
export const recordHeaderBytes = 20;
export const endRecordBytes = 24;
const maxHeaderJsonBytes = 1024 * 1024;
/** The longest data record a writer makes (an importer accepts up to 64 MiB). */
export const maxRecordDataBytes = 1024 * 1024;
const maxAcceptedRecordBytes = 64 * 1024 * 1024;

export const recordKind = { data: 1, zero: 2, end: 255 } as const;

/** A volume state, as an incremental stream names its base and every stream its result. */
export interface VolumeState {
  /** poolUuid:snapshotId of the snapshot exported (unique: ids are never reused in a pool). */
  guid: string;
  /** The LUN it is a state of: poolUuid:lunId. */
  lunGuid: string;
  /** The snapshot's epoch in its LUN (ordering states of one LUN). */
  epoch: number;
  /** The snapshot holds the LUN exactly as it stood at its epoch (never written itself). */
  pure: boolean;
}

export interface ExportHeader {
  format: 'lunfs-export';
  /** The volume's size at the exported instant. */
  sizeBytes: number;
  /** Where it came from, for people: LUN@SNAP, and the pool. */
  source: { pool: string; name: string };
  /** The name an import gives the snapshot holding this state. */
  snapshot: string;
  to: VolumeState;
  /**
   * null: a full stream (every block that is not zero). Otherwise an incremental one, to apply
   * only to a volume holding its base: a snapshot state (kind 'snapshot': exactly that state), or
   * (kind 'snap-point') any pure state of lunGuid taken after snap-point map name was started
   * (epoch above the map's), up to the stream's own.
   */
  from:
    | ({ kind: 'snapshot' } & VolumeState)
    | { kind: 'snap-point'; lunGuid: string; epoch: number; name: string }
    | null;
  createdAt: string;
}

export function encodeHeader(header: ExportHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const buffer = Buffer.alloc(16 + json.length + 4);
  buffer.write(exportMagic, 0, 'latin1');
  buffer.writeUInt32LE(exportVersion, 8);
  buffer.writeUInt32LE(json.length, 12);
  json.copy(buffer, 16);
  buffer.writeUInt32LE(crc32c(buffer.subarray(0, 16 + json.length)), 16 + json.length);
  return buffer;
}

export function encodeRecord(kind: 1 | 2, offsetBytes: number, data: Buffer | number): Buffer {
  const header = Buffer.alloc(recordHeaderBytes);
  header.writeUInt8(kind, 0);
  header.writeBigUInt64LE(BigInt(offsetBytes), 4);
  header.writeUInt32LE(typeof data === 'number' ? data : data.length, 12);
  header.writeUInt32LE(typeof data === 'number' ? 0 : crc32c(data), 16);
  return header;
}

export function encodeEnd(records: number, dataBytes: number): Buffer {
  const buffer = Buffer.alloc(endRecordBytes);
  buffer.writeUInt8(recordKind.end, 0);
  buffer.writeBigUInt64LE(BigInt(records), 4);
  buffer.writeUInt32LE(Math.floor(dataBytes / 2 ** 32), 12);
  buffer.writeUInt32LE(dataBytes % 2 ** 32, 16);
  buffer.writeUInt32LE(crc32c(buffer.subarray(0, 20)), 20);
  return buffer;
}

export type StreamRecord =
  | { kind: 'data'; offsetBytes: number; data: Buffer }
  | { kind: 'zero'; offsetBytes: number; lengthBytes: number };

/** Reads exactly n bytes from an async byte source, or fewer at its end. */
class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private done = false;
  consumed = 0;

  constructor(private readonly source: AsyncIterator<Buffer | string>) {}

  async read(count: number): Promise<Buffer> {
    while (this.buffered < count && !this.done) {
      const next = await this.source.next();
      if (next.done) this.done = true;
      else {
        const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
        this.chunks.push(chunk);
        this.buffered += chunk.length;
      }
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const taken = all.subarray(0, Math.min(count, all.length));
    const rest = all.subarray(taken.length);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    this.consumed += taken.length;
    return taken;
  }
}

function bad(message: string): LunfsError {
  return new LunfsError('EINVAL', `not a valid lunfs export stream: ${message}`);
}

/**
 * Parses a stream: the header first (checked), then each record in order (checked: kind, order,
 * alignment, bounds, checksum), then the end record (its counts must match). Throws EINVAL at the
 * first fault, before returning the faulty record.
 */
export class ExportReader {
  private readonly reader: ByteReader;
  private records = 0;
  private dataBytes = 0;
  private nextOffset = 0;
  header: ExportHeader | undefined;

  constructor(source: AsyncIterable<Buffer | string>) {
    this.reader = new ByteReader(source[Symbol.asyncIterator]());
  }

  async readHeader(): Promise<ExportHeader> {
    const fixed = await this.reader.read(16);
    if (fixed.length < 16 || fixed.toString('latin1', 0, 8) !== exportMagic)
      throw bad(`it does not start with ${exportMagic}`);
    const version = fixed.readUInt32LE(8);
    if (version !== exportVersion)
      throw bad(`version ${version}; this lunfs reads version ${exportVersion}`);
    const jsonBytes = fixed.readUInt32LE(12);
    if (jsonBytes > maxHeaderJsonBytes) throw bad(`a header of ${jsonBytes} bytes`);
    const rest = await this.reader.read(jsonBytes + 4);
    if (rest.length < jsonBytes + 4) throw bad('it ends inside its header');
    const whole = Buffer.concat([fixed, rest.subarray(0, jsonBytes)]);
    if (crc32c(whole) !== rest.readUInt32LE(jsonBytes)) throw bad('its header fails its checksum');
    let header: ExportHeader;
    try {
      header = JSON.parse(rest.toString('utf8', 0, jsonBytes)) as ExportHeader;
    } catch {
      throw bad('its header is not JSON');
    }
    if (
      header.format !== 'lunfs-export' ||
      !Number.isSafeInteger(header.sizeBytes) ||
      header.sizeBytes <= 0 ||
      header.sizeBytes % 512 !== 0 ||
      typeof header.to?.guid !== 'string' ||
      typeof header.snapshot !== 'string' ||
      !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(header.snapshot)
    )
      throw bad('its header lacks a size or a state');
    this.header = header;
    return header;
  }

  /** The next record, or undefined after a valid end record (then the stream must end). */
  async next(): Promise<StreamRecord | undefined> {
    const header = this.header;
    if (!header) throw new Error('readHeader first');
    const fixed = await this.reader.read(recordHeaderBytes);
    if (fixed.length === 0) throw bad('it is cut short (no end record)');
    if (fixed.length < recordHeaderBytes) throw bad('it ends inside a record');
    const kind = fixed.readUInt8(0);
    if (kind === recordKind.end) {
      const tail = await this.reader.read(endRecordBytes - recordHeaderBytes);
      const end = Buffer.concat([fixed, tail]);
      if (end.length < endRecordBytes) throw bad('it ends inside its end record');
      if (crc32c(end.subarray(0, 20)) !== end.readUInt32LE(20))
        throw bad('its end record fails its checksum');
      const records = Number(end.readBigUInt64LE(4));
      const dataBytes = end.readUInt32LE(12) * 2 ** 32 + end.readUInt32LE(16);
      if (records !== this.records || dataBytes !== this.dataBytes)
        throw bad(
          `its end record counts ${records} records and ${dataBytes} bytes; it held ${this.records} and ${this.dataBytes}`,
        );
      if ((await this.reader.read(1)).length > 0) throw bad('bytes follow its end record');
      return undefined;
    }
    if (kind !== recordKind.data && kind !== recordKind.zero)
      throw bad(`a record of unknown kind ${kind} at byte ${this.reader.consumed - 20}`);
    const offsetBytes = Number(fixed.readBigUInt64LE(4));
    const lengthBytes = fixed.readUInt32LE(12);
    const end = offsetBytes + lengthBytes;
    if (
      lengthBytes === 0 ||
      offsetBytes < this.nextOffset ||
      offsetBytes % exportBlockBytes !== 0 ||
      (lengthBytes % exportBlockBytes !== 0 && end !== header.sizeBytes) ||
      end > header.sizeBytes ||
      lengthBytes > maxAcceptedRecordBytes
    )
      throw bad(
        `a record for ${lengthBytes} bytes at ${offsetBytes} (out of order, unaligned or past the volume's ${header.sizeBytes} bytes)`,
      );
    this.nextOffset = end;
    this.records += 1;
    if (kind === recordKind.zero) {
      if (fixed.readUInt32LE(16) !== 0 || fixed.readUInt8(1) | fixed.readUInt16LE(2))
        throw bad(`the zero record at ${offsetBytes} carries bits that must be 0`);
      return { kind: 'zero', offsetBytes, lengthBytes };
    }
    const data = await this.reader.read(lengthBytes);
    if (data.length < lengthBytes) throw bad('it ends inside a data record');
    if (crc32c(data) !== fixed.readUInt32LE(16))
      throw bad(`the data at ${offsetBytes} (${lengthBytes} bytes) fails its checksum`);
    this.dataBytes += lengthBytes;
    return { kind: 'data', offsetBytes, data: Buffer.from(data) };
  }
}
