// Export and import of volumes (issue 16): `lunfs export DIR LUN[@SNAP] [--since BASE]` writes a
// stream (export-stream.ts) of a snapshot's content, whole or as the changes from a base, and
// `lunfs import DIR2 LUN2` applies one to a LUN of another pool.
//
// What an export reads is always a snapshot: a user's, or for a live LUN a hidden one taken at the
// export's start (role 'export', removed at its end), so an export is consistent while the LUN is
// written. A full stream holds every 4 KiB block that is not zero. An incremental stream holds the
// blocks that differ from its base:
// - --since SNAP (a snapshot of the same LUN, at any place in its tree): the candidates are the
//   chunks either snapshot holds in the target volume (a clear bit in both means both read the
//   LUN's own data there, so they agree) but for chunks both point at the same preserved copy;
//   each candidate block is compared, so the stream holds exactly the blocks that differ.
// - --since SNAPPOINT (a snap-point map of the LUN): the candidates are the grains the map marks
//   and the chunks the snapshot holds in the target; every candidate block is sent (the base's
//   content is not at hand), as data or as a zero record.
//
// Import applies a stream only to what it was made from: a full stream makes a new LUN; an
// incremental one needs the LUN to hold its base: a snapshot imported earlier whose origin is the
// stream's base state, never written, with the LUN equal to it (compared where the snapshot holds
// its own data). Each import ends with a snapshot of the LUN holding the stream's state (origin),
// the base for the next one. A stream found faulty part-way is undone: a new LUN is removed, an
// existing one rolled back to its base.

import { forEachPiece, type BlockDevice } from '../block/block-device.js';
import type { SnapshotRecord, SnapPointRecord } from '../meta/pool-metadata.js';
import { checkLunName } from '../pool/pool-luns.js';
import { isLunfsError, LunfsError } from '../util/errors.js';
import type { Controller } from './controller.js';
import { parseSnapshotName } from './controller.js';
import {
  encodeEnd,
  encodeHeader,
  encodeRecord,
  exportBlockBytes,
  ExportReader,
  maxRecordDataBytes,
  type ExportHeader,
  type VolumeState,
} from './export-stream.js';
import { SnapshotVolume } from './snapshot-volume.js';
import { markedExtents, mergeRanges } from './snap-points.js';

/** How many bytes an export reads at once. */
const readBytes = 1024 * 1024;

export interface ExportResult {
  /** What was exported (LUN@SNAP, or LUN for a live LUN) and from which base (null: full). */
  exported: string;
  since: string | null;
  sizeBytes: number;
  records: number;
  dataBytes: number;
  zeroBytes: number;
  streamBytes: number;
}

export interface ImportResult {
  lun: string;
  created: boolean;
  /** The snapshot that holds the stream's state: the base for the next incremental import. */
  snapshot: string;
  records: number;
  dataBytes: number;
  zeroBytes: number;
}

type Base =
  { kind: 'snapshot'; record: SnapshotRecord } | { kind: 'snap-point'; record: SnapPointRecord };

/** Writes the stream of spec (LUN or LUN@SNAP) to write, in order; resolves when all is written. */
export async function exportVolume(
  controller: Controller,
  spec: string,
  options: { since?: string },
  write: (chunk: Buffer) => Promise<void>,
): Promise<ExportResult> {
  const live = !spec.includes('@');
  const lunName = live ? spec : parseSnapshotName(spec).lun;
  const lun = controller.pool.lunByName(lunName);
  if (live) checkLunName(lunName);
  const set = controller.snapshotSet(lunName);
  let record: SnapshotRecord;
  if (live) record = await controller.takeHiddenSnapshot(lunName, 'export');
  else {
    record = set.byName(parseSnapshotName(spec).snapshot);
    if (record.role) throw new LunfsError('ENOENT', `no snapshot ${spec}`);
  }
  try {
    if (record.state !== 'valid')
      throw new LunfsError(
        'EIO',
        `snapshot ${spec} is invalid (${record.invalidReason ?? 'unknown reason'}): it cannot be exported`,
      );
    const base =
      options.since === undefined ? undefined : findBase(controller, lunName, options.since);
    if (base?.kind === 'snap-point' && base.record.epoch >= record.epoch)
      throw new LunfsError(
        'EINVAL',
        `${spec} is older than snap-point map ${lunName}@${base.record.name}: an export --since a map must be of a later state`,
      );
    if (base?.kind === 'snapshot' && base.record.state !== 'valid')
      throw new LunfsError('EIO', `snapshot ${lunName}@${base.record.name} is invalid`);
    const poolUuid = controller.pool.metadata.config.poolUuid;
    const stateOf = (snapshot: SnapshotRecord): VolumeState => ({
      guid: `${poolUuid}:${snapshot.id}`,
      lunGuid: `${poolUuid}:${lun.id}`,
      epoch: snapshot.epoch,
      pure: snapshot.written !== true,
    });
    const header: ExportHeader = {
      format: 'lunfs-export',
      sizeBytes: record.sizeBytes,
      source: { pool: poolUuid, name: live ? lunName : spec },
      snapshot: live ? `at-${compactTime(controller.clock.nowMs())}` : record.name,
      to: stateOf(record),
      from:
        base === undefined
          ? null
          : base.kind === 'snapshot'
            ? { kind: 'snapshot', ...stateOf(base.record) }
            : {
                kind: 'snap-point',
                lunGuid: `${poolUuid}:${lun.id}`,
                epoch: base.record.epoch,
                name: base.record.name,
              },
      createdAt: new Date(controller.clock.nowMs()).toISOString(),
    };
    const stack = controller.stack(lunName);
    const volume = new SnapshotVolume(record, stack);
    const sink = new RecordSink(write);
    await sink.raw(encodeHeader(header));
    if (base === undefined) await sendRanges(sink, volume, [[0, record.sizeBytes]], undefined);
    else if (base.kind === 'snapshot') {
      const baseVolume = new SnapshotVolume(base.record, stack);
      const ranges = differingChunks(controller, lunName, base.record, record);
      await sendRanges(sink, volume, ranges, baseVolume);
    } else {
      await sendRanges(sink, volume, markedRanges(controller, lunName, base.record, record), 'all');
    }
    await sink.end();
    return {
      exported: live ? lunName : spec,
      since: base === undefined ? null : `${lunName}@${base.record.name}`,
      sizeBytes: record.sizeBytes,
      records: sink.records,
      dataBytes: sink.dataBytes,
      zeroBytes: sink.zeroBytes,
      streamBytes: sink.streamBytes,
    };
  } finally {
    if (live) await controller.removeHiddenSnapshot(lunName, record);
  }
}

function compactTime(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

/** --since NAME or LUN@NAME: a snapshot of the LUN, else a snap-point map of it. */
function findBase(controller: Controller, lunName: string, since: string): Base {
  let name = since;
  if (since.includes('@')) {
    const names = parseSnapshotName(since);
    if (names.lun !== lunName)
      throw new LunfsError(
        'EINVAL',
        `--since ${since} is of LUN '${names.lun}', not of '${lunName}': a base must be of the same LUN`,
      );
    name = names.snapshot;
  }
  const snapshot = controller
    .snapshotSet(lunName)
    .all()
    .find((candidate) => candidate.name === name && !candidate.role);
  if (snapshot) return { kind: 'snapshot', record: snapshot };
  if (controller.snapPoints.has(`${lunName}@${name}`))
    return { kind: 'snap-point', record: controller.snapPoints.byName(`${lunName}@${name}`) };
  throw new LunfsError(
    'ENOENT',
    `LUN '${lunName}' has no snapshot and no snap-point map named '${name}' (--since)`,
  );
}

/** Byte ranges where snapshots a and b may differ (merged, ascending). */
function differingChunks(
  controller: Controller,
  lunName: string,
  a: SnapshotRecord,
  b: SnapshotRecord,
): Array<[number, number]> {
  const set = controller.snapshotSet(lunName);
  const chunkBytes = set.chunkBytes;
  const imageA = set.image(a.id);
  const imageB = set.image(b.id);
  const ranges: Array<[number, number]> = [];
  const chunks = Math.ceil(b.sizeBytes / chunkBytes);
  for (let chunk = 0; chunk < chunks; chunk += 1) {
    const start = chunk * chunkBytes;
    const inA = imageA?.bitmap.get(chunk) === true;
    const inB = imageB?.bitmap.get(chunk) === true;
    const differs =
      start + chunkBytes > a.sizeBytes || // past (or across) the end of the base: compare
      (inA !== inB ? true : inA && imageA!.log.get(chunk) !== imageB!.log.get(chunk));
    if (differs) ranges.push([start, chunkBytes]);
  }
  return mergeRanges(ranges, b.sizeBytes);
}

/** Byte ranges snap-point map point marks, and those snapshot holds in the target. */
function markedRanges(
  controller: Controller,
  lunName: string,
  point: SnapPointRecord,
  snapshot: SnapshotRecord,
): Array<[number, number]> {
  const chunkBytes = controller.snapshotSet(lunName).chunkBytes;
  const held: Array<[number, number]> = [];
  controller
    .snapshotSet(lunName)
    .image(snapshot.id)
    ?.log.forEach((chunk) => held.push([chunk * chunkBytes, chunkBytes]));
  return mergeRanges([...markedExtents(point, snapshot.sizeBytes), ...held], snapshot.sizeBytes);
}

/**
 * Reads ranges of volume and sends their blocks: against no base (full: blocks that are not
 * zero), against a base volume (blocks that differ: data, or zero where the volume reads zeros),
 * or 'all' (every block: data, or zero).
 */
async function sendRanges(
  sink: RecordSink,
  volume: BlockDevice,
  ranges: Array<[number, number]>,
  base: BlockDevice | 'all' | undefined,
): Promise<void> {
  const buffer = Buffer.alloc(readBytes);
  const baseBuffer = Buffer.alloc(readBytes);
  const zeros = Buffer.alloc(exportBlockBytes);
  for (const [rangeStart, rangeLength] of ranges) {
    for (let offset = rangeStart; offset < rangeStart + rangeLength; offset += readBytes) {
      const length = Math.min(readBytes, rangeStart + rangeLength - offset);
      const piece = buffer.subarray(0, length);
      await volume.read(offset, piece);
      let basePiece: Buffer | undefined;
      if (base !== undefined && base !== 'all') {
        basePiece = baseBuffer.subarray(0, length);
        basePiece.fill(0);
        const readable = Math.max(0, Math.min(length, base.sizeBytes - offset));
        if (readable > 0) await base.read(offset, basePiece.subarray(0, readable));
      }
      const blocks: Array<{ at: number; length: number }> = [];
      forEachPiece(offset, length, exportBlockBytes, (_, __, blockLength, inPiece) => {
        blocks.push({ at: inPiece, length: blockLength });
      });
      for (const block of blocks) {
        const data = piece.subarray(block.at, block.at + block.length);
        const isZero = data.equals(zeros.subarray(0, block.length));
        if (basePiece) {
          if (data.equals(basePiece.subarray(block.at, block.at + block.length))) {
            await sink.gap();
            continue;
          }
        } else if (base === undefined && isZero) {
          await sink.gap();
          continue;
        }
        if (isZero) await sink.zero(offset + block.at, block.length);
        else await sink.data(offset + block.at, data);
      }
    }
    await sink.gap();
  }
}

/** Collects consecutive blocks of one kind into records of up to maxRecordDataBytes. */
class RecordSink {
  records = 0;
  dataBytes = 0;
  zeroBytes = 0;
  streamBytes = 0;
  private run: { kind: 1 | 2; offset: number; length: number; parts: Buffer[] } | undefined;

  constructor(private readonly write: (chunk: Buffer) => Promise<void>) {}

  async raw(chunk: Buffer): Promise<void> {
    this.streamBytes += chunk.length;
    await this.write(chunk);
  }

  async data(offset: number, block: Buffer): Promise<void> {
    await this.extend(1, offset, block.length, Buffer.from(block));
  }

  async zero(offset: number, length: number): Promise<void> {
    await this.extend(2, offset, length);
  }

  /** A block not sent: the run before it ends. */
  async gap(): Promise<void> {
    await this.emit();
  }

  private async extend(kind: 1 | 2, offset: number, length: number, part?: Buffer): Promise<void> {
    const run = this.run;
    if (
      run &&
      (run.kind !== kind ||
        run.offset + run.length !== offset ||
        (kind === 1 && run.length + length > maxRecordDataBytes))
    )
      await this.emit();
    if (!this.run) this.run = { kind, offset, length: 0, parts: [] };
    this.run.length += length;
    if (part) this.run.parts.push(part);
  }

  private async emit(): Promise<void> {
    const run = this.run;
    if (!run) return;
    this.run = undefined;
    this.records += 1;
    if (run.kind === 1) {
      const data = Buffer.concat(run.parts);
      this.dataBytes += data.length;
      await this.raw(encodeRecord(1, run.offset, data));
      await this.raw(data);
    } else {
      this.zeroBytes += run.length;
      await this.raw(encodeRecord(2, run.offset, run.length));
    }
  }

  async end(): Promise<void> {
    await this.emit();
    await this.raw(encodeEnd(this.records, this.dataBytes));
  }
}

/**
 * Applies a stream to LUN lunName: a full stream makes it (it must not exist), an incremental one
 * needs it to hold the stream's base (see the head of this file). Resolves with the snapshot that
 * now holds the stream's state.
 */
export async function importVolume(
  controller: Controller,
  lunName: string,
  source: AsyncIterable<Buffer | string>,
): Promise<ImportResult> {
  checkLunName(lunName);
  const reader = new ExportReader(source);
  const header = await reader.readHeader();
  const holder = 'being imported into';
  const full = header.from === null;
  let base: SnapshotRecord | undefined;
  let release: () => void;
  if (full) {
    if (controller.pool.hasLun(lunName))
      throw new LunfsError(
        'EEXIST',
        `LUN '${lunName}' exists: a full stream makes a new LUN (an incremental one, export --since, applies to an existing LUN)`,
      );
    await controller.createLun(lunName, header.sizeBytes);
    release = controller.hold(lunName, holder);
    await markImporting(controller, lunName, null);
  } else {
    if (!controller.pool.hasLun(lunName))
      throw new LunfsError(
        'ENOENT',
        `no LUN '${lunName}': an incremental stream applies to the LUN that holds its base (import the full stream first)`,
      );
    release = controller.hold(lunName, holder);
    try {
      base = await findImportBase(controller, lunName, header);
      if (header.sizeBytes < controller.pool.lunByName(lunName).sizeBytes)
        throw new LunfsError(
          'EINVAL',
          `the stream's volume (${header.sizeBytes} bytes) is smaller than LUN '${lunName}': LUNs do not shrink`,
        );
      await markImporting(controller, lunName, base.id);
      if (header.sizeBytes > controller.pool.lunByName(lunName).sizeBytes)
        await controller.resizeLun(lunName, header.sizeBytes);
    } catch (error) {
      release();
      throw error;
    }
  }
  const cache = controller.stack(lunName).cache;
  const counts = { records: 0, dataBytes: 0, zeroBytes: 0 };
  try {
    for (;;) {
      const record = await reader.next();
      if (!record) break;
      counts.records += 1;
      if (record.kind === 'data') {
        counts.dataBytes += record.data.length;
        await cache.write(record.offsetBytes, record.data);
      } else {
        counts.zeroBytes += record.lengthBytes;
        await cache.discard(record.offsetBytes, record.lengthBytes);
      }
    }
    await cache.flush();
  } catch (error) {
    await undoImport(controller, lunName, base, holder).catch((undoError: unknown) => {
      controller.log.error({ err: undoError, lun: lunName }, 'an import could not be undone');
    });
    release();
    const what = full ? `LUN '${lunName}' was removed` : `LUN '${lunName}' is back at its base`;
    if (isLunfsError(error))
      throw new LunfsError(error.code, `import stopped: ${error.message}; ${what}`, {
        cause: error,
      });
    throw error;
  }
  const set = controller.snapshotSet(lunName);
  let name = header.snapshot;
  for (let suffix = 2; set.all().some((snapshot) => snapshot.name === name); suffix += 1)
    name = `${header.snapshot.slice(0, 56)}-${suffix}`;
  try {
    await controller.createSnapshot(`${lunName}@${name}`, { origin: header.to });
    await markImporting(controller, lunName, undefined);
  } finally {
    release();
  }
  controller.log.info({ lun: lunName, snapshot: name, ...counts }, 'stream imported');
  return { lun: lunName, created: full, snapshot: `${lunName}@${name}`, ...counts };
}

async function undoImport(
  controller: Controller,
  lunName: string,
  base: SnapshotRecord | undefined,
  holder: string,
): Promise<void> {
  if (!base) await controller.removeLun(lunName, holder);
  else {
    await controller.rollback(`${lunName}@${base.name}`, holder);
    await markImporting(controller, lunName, undefined);
  }
}

/**
 * Records durably that an import into lunName begins (null: a full stream, its LUN made for it;
 * a number: the base snapshot an incremental one applies on) or has ended (undefined).
 */
async function markImporting(
  controller: Controller,
  lunName: string,
  baseSnapshotId: number | null | undefined,
): Promise<void> {
  await controller.pool.commitOp({
    kind: 'lun-importing',
    lunId: controller.pool.lunByName(lunName).id,
    begin: baseSnapshotId !== undefined,
    baseSnapshotId: baseSnapshotId ?? null,
  });
}

/**
 * At a mount: imports a crash interrupted are undone (the LUN a full stream was making is removed,
 * one an incremental stream was changing is rolled back to its base).
 */
export async function undoInterruptedImports(controller: Controller): Promise<void> {
  for (const lun of controller.pool.userLuns()) {
    if (!lun.importing) continue;
    const baseId = lun.importing.baseSnapshotId;
    const base = baseId === null ? undefined : controller.pool.metadata.snapshots.get(baseId);
    controller.log.warn(
      { lun: lun.name },
      baseId === null
        ? 'an import a crash interrupted made this LUN: it is removed'
        : 'an import a crash interrupted changed this LUN: it is rolled back to its base',
    );
    if (baseId === null) {
      for (const snapshot of controller.snapshotSet(lun.name).all())
        if (snapshot.role) await controller.removeHiddenSnapshot(lun.name, snapshot);
      await controller.removeLun(lun.name);
    } else if (base) await undoImport(controller, lun.name, base, 'undoing an import');
    else await markImporting(controller, lun.name, undefined); // its base is gone: say so above
  }
}

/**
 * The snapshot of lunName that holds the incremental stream's base, with the LUN equal to it; a
 * clear refusal otherwise.
 */
async function findImportBase(
  controller: Controller,
  lunName: string,
  header: ExportHeader,
): Promise<SnapshotRecord> {
  const from = header.from!;
  const set = controller.snapshotSet(lunName);
  const snapshots = set.all().filter((snapshot) => !snapshot.role && snapshot.origin);
  let candidates: SnapshotRecord[];
  if (from.kind === 'snapshot') {
    candidates = snapshots.filter((snapshot) => snapshot.origin!.guid === from.guid);
    if (candidates.length === 0)
      throw new LunfsError(
        'EINVAL',
        `LUN '${lunName}' holds no snapshot imported from the stream's base (${from.guid}, of ${header.source.name}'s LUN): import the streams in order`,
      );
  } else {
    // any pure state of the LUN taken after the map started, up to the stream's own
    candidates = snapshots
      .filter(
        (snapshot) =>
          snapshot.origin!.lunGuid === from.lunGuid &&
          snapshot.origin!.pure &&
          snapshot.origin!.epoch > from.epoch &&
          snapshot.origin!.epoch <= header.to.epoch,
      )
      .sort((a, b) => b.origin!.epoch - a.origin!.epoch);
    if (candidates.length === 0)
      throw new LunfsError(
        'EINVAL',
        `LUN '${lunName}' holds no snapshot imported from a state of the source LUN taken after snap-point map ${from.name} was started: export --since a map applies only on top of such a state`,
      );
  }
  const stack = controller.stack(lunName);
  await stack.cache.flush();
  const reasons: string[] = [];
  for (const candidate of candidates) {
    const reason = await differenceFrom(controller, lunName, candidate);
    if (reason === undefined) return candidate;
    reasons.push(`${lunName}@${candidate.name}: ${reason}`);
  }
  throw new LunfsError(
    'EINVAL',
    `LUN '${lunName}' does not hold the stream's base: ${reasons.join('; ')}. Roll it back to that snapshot (lunfs snapshot rollback) and import again`,
  );
}

/** Why LUN lunName is not exactly snapshot's content, or undefined when it is. */
async function differenceFrom(
  controller: Controller,
  lunName: string,
  snapshot: SnapshotRecord,
): Promise<string | undefined> {
  if (snapshot.state !== 'valid') return 'it is invalid';
  if (snapshot.written) return 'it was written to after its import';
  const stack = controller.stack(lunName);
  if (stack.record.sizeBytes !== snapshot.sizeBytes) return 'the LUN was resized since';
  // A clear bit: the LUN below its (flushed) cache holds the snapshot's data. A set one: compare.
  const volume = new SnapshotVolume(snapshot, stack);
  const chunkBytes = stack.snapshots.chunkBytes;
  const chunks: number[] = [];
  stack.snapshots.image(snapshot.id)?.log.forEach((chunk) => chunks.push(chunk));
  const mine = Buffer.alloc(chunkBytes);
  const theirs = Buffer.alloc(chunkBytes);
  for (const chunk of chunks.sort((a, b) => a - b)) {
    const start = chunk * chunkBytes;
    const length = Math.min(chunkBytes, snapshot.sizeBytes - start);
    if (length <= 0) continue;
    await stack.cache.read(start, mine.subarray(0, length));
    await volume.read(start, theirs.subarray(0, length));
    if (!mine.subarray(0, length).equals(theirs.subarray(0, length)))
      return `the LUN was written since (it differs at byte ${start} or after)`;
  }
  return undefined;
}
