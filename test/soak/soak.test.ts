// The crash soak (issue 11), after ZFS's ztest: random SIGKILL, reopen, verify, many times over.
// A RAID-5 pool of 3 sparse 256 MiB file drives, LUN `db` (64 MiB) holding ext4 through a loop
// device, LUN `raw` (16 MiB) written raw. Each cycle runs the load of soak-load.mjs (files written
// and fsync'ed on the ext4, raw writes fdatasync'ed, both recorded outside the pool only once the
// sync returned), takes and deletes snapshots of both LUNs meanwhile, and SIGKILLs `lunfs mount` at
// a seeded instant. Then it clears the dead mount (the ext4 lazily unmounted, the loop device
// detached, the FUSE mount lazily unmounted), mounts the pool again and checks:
//   - ext4: mounting replays the journal; after an unmount `fsck.ext4 -fn` is clean;
//   - every file the load fsync'ed (file and directory) is there with its exact content;
//   - every raw block holds its last fdatasync'ed write or a write issued after it, never anything
//     else (an older write, a torn or foreign block);
//   - the pool lists exactly the snapshots taken and not deleted (one caught by the kill mid-create
//     or mid-delete may be there or not), each valid, each reading exactly what it read when it was
//     taken (sha256 of the whole file); a raw snapshot also held, per block, its instant: the last
//     write completed before the snapshot command, or one issued while it ran;
//   - no checksum mismatch was met (status integrity counters);
//   - every `cleanEvery` cycles and at the end, all snapshots deleted: the pool's allocated space
//     (pool.allocatedBytes) equals what the LUNs alone hold (the sum of luns[].allocatedBytes), so
//     no RSEG is leaked by a crash (an allocation not yet mapped, a snapshot's copy, a half-deleted
//     snapshot).
// A `lunfs snapshot create/rm` that the kill overtakes before it reaches the control socket opens
// the pool itself (no live mount): so the soak also runs the CLI's own crash recovery path.
// The schedule (kill instants, snapshot operations, what the load writes) comes from one seed,
// printed at the start; on a fault the seed and the cycle are printed. The interleaving of the load
// with the kill is the machine's, as in ztest: a replay runs the same schedule, not the same race.
//
//   LUNFS_SOAK_CYCLES=N LUNFS_SOAK_SEED=S npx vitest run test/soak/soak.test.ts   (make soak
//   COUNT=N SEED=S)
// `make test` runs it with 10 cycles.

import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { statSync } from 'node:fs';
import { mkdir, open, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { StatusJson } from '../../src/volume/controller.js';
import {
  MiB,
  lunfs,
  lunfsOk,
  runOk,
  sha256,
  sleep,
  useSandbox,
  type LoopDevice,
  type MountServer,
  type Sandbox,
} from '../e2e/support.js';
import {
  blockBytes,
  blockMagic,
  deriveSeed,
  fileContent,
  generator,
  headerBytes,
  rawBlock,
} from './soak-load.mjs';

type Generator = () => number;
const makeGenerator = generator as (seed: number) => Generator;
const deriveSeedOf = deriveSeed as (...parts: Array<string | number>) => number;
const fileContentOf = fileContent as (
  seed: number,
  cycle: number,
  number: number,
  size: number,
) => Buffer;
const rawBlockOf = rawBlock as (
  seed: number,
  cycle: number,
  sequence: number,
  block: number,
) => Buffer;

const loadScript = fileURLToPath(new URL('./soak-load.mjs', import.meta.url));

const cycleCount = Number(process.env.LUNFS_SOAK_CYCLES ?? 10);
const seed =
  process.env.LUNFS_SOAK_SEED !== undefined
    ? Number(process.env.LUNFS_SOAK_SEED)
    : randomInt(2 ** 31);
/** The space check (all snapshots deleted) runs after every cleanEvery-th restart and the last. */
const cleanEvery = 5;
/**
 * LUNFS_SOAK_CLI=0: snapshot operations only through the mount's files (touch, unlink), never the
 * CLI, so none falls back to opening the pool itself after the kill. On that path the soak found
 * an older snapshot losing its copy-on-write data (reported with issue 11); this soaks the rest
 * while that bug is open. make soak CLI=0.
 */
const useCli = process.env.LUNFS_SOAK_CLI !== '0';
/** LUNFS_SOAK_STOP_AT (an ISO time): no new cycle starts after it; the figures say how many ran. */
const stopAtMs = process.env.LUNFS_SOAK_STOP_AT
  ? Date.parse(process.env.LUNFS_SOAK_STOP_AT)
  : Infinity;
const dbLunBytes = 64 * MiB;
const rawLunBytes = 16 * MiB;
const regionBlocks = 2048; // the raw load writes the first 8 MiB of `raw`
const liveSnapshotsMax = 3;
const killDelayMsMin = 150;
const killDelayMsMax = 2500;

// ---------------------------------------------------------------------------------------------
// Records of the load

interface RawWrite {
  key: number;
  first: number;
  count: number;
}

/** cycle and sequence number in one comparable number (a cycle writes far fewer than 1e6 times). */
function writeKey(cycle: number, sequence: number): number {
  return cycle * 1_000_000 + sequence;
}

/** The raw record: writes with the byte offsets of their I, W and S lines (Infinity: none). */
async function readRawRecord(
  path: string,
): Promise<Array<RawWrite & { issuedAt: number; writtenAt: number; syncedAt: number }>> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const writes = new Map<
    number,
    RawWrite & { issuedAt: number; writtenAt: number; syncedAt: number }
  >();
  let offset = 0;
  for (const line of text.split('\n')) {
    const lineStart = offset;
    offset += line.length + 1;
    if (offset > text.length + 1 || line === '') continue;
    const [kind, cycle, sequence, first, count] = line.split(' ');
    const key = writeKey(Number(cycle), Number(sequence));
    if (kind === 'I')
      writes.set(key, {
        key,
        first: Number(first),
        count: Number(count),
        issuedAt: lineStart,
        writtenAt: Infinity,
        syncedAt: Infinity,
      });
    else if (kind === 'W') writes.get(key)!.writtenAt = lineStart;
    else if (kind === 'S') writes.get(key)!.syncedAt = lineStart;
    else throw new Error(`raw record: bad line '${line}'`);
  }
  return [...writes.values()].sort((a, b) => a.key - b.key);
}

function fileSizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * Checks an image of the raw region against the record. For each block, the lower bound is the
 * last write that the image must hold or supersede: one of cycle `completedFromCycle` or later
 * whose W line (completed) lies before `boundBytes` of the record, or one of an earlier cycle whose
 * S line (synced) does: a write of an earlier cycle that completed but was not synced before that
 * cycle's kill may have been lost. The block must hold that write or one issued (I line before
 * `issuedBytes`) after it; zeros only if there is no lower bound. Returns the problems found.
 */
function checkRawImage(
  image: Buffer,
  record: Awaited<ReturnType<typeof readRawRecord>>,
  completedFromCycle: number,
  boundBytes: number,
  issuedBytes: number,
): string[] {
  const lower = new Array<number>(regionBlocks).fill(0);
  const allowed: Array<Set<number>> = Array.from({ length: regionBlocks }, () => new Set());
  for (const write of record) {
    for (let block = write.first; block < write.first + write.count; block += 1) {
      const boundAt =
        Math.floor(write.key / 1e6) >= completedFromCycle ? write.writtenAt : write.syncedAt;
      if (boundAt < boundBytes) {
        lower[block] = write.key;
        allowed[block]!.clear();
      }
      if (write.issuedAt < issuedBytes) allowed[block]!.add(write.key);
    }
  }
  const problems: string[] = [];
  for (let block = 0; block < regionBlocks && problems.length < 10; block += 1) {
    const got = image.subarray(block * blockBytes, (block + 1) * blockBytes);
    let key = 0;
    if (got.some((byte) => byte !== 0)) {
      const cycle = got.readUInt32LE(12);
      const sequence = got.readUInt32LE(16);
      if (
        !got.subarray(0, 8).equals(blockMagic) ||
        got.readUInt32LE(8) !== seed >>> 0 ||
        got.readUInt32LE(20) !== block ||
        !got.equals(rawBlockOf(seed, cycle, sequence, block))
      ) {
        problems.push(
          `block ${block}: not a whole block of any write (header ${got.subarray(0, headerBytes).toString('hex')})`,
        );
        continue;
      }
      key = writeKey(cycle, sequence);
    }
    if (key === lower[block]) continue;
    if (key > lower[block]! && allowed[block]!.has(key)) continue;
    problems.push(
      `block ${block}: holds ${key === 0 ? 'zeros' : `write ${Math.floor(key / 1e6)}/${key % 1e6}`}, but the last write it must hold or supersede was ${Math.floor(lower[block]! / 1e6)}/${lower[block]! % 1e6} and later ones issued: [${[
        ...allowed[block]!,
      ]
        .filter((other) => other > lower[block]!)
        .map((other) => `${Math.floor(other / 1e6)}/${other % 1e6}`)
        .join(' ')}]`,
    );
  }
  return problems;
}

const chunkBytes = 128 * 1024;

function chunkHashes(image: Buffer): string[] {
  return Array.from({ length: Math.ceil(image.length / chunkBytes) }, (_, chunk) =>
    sha256(image.subarray(chunk * chunkBytes, (chunk + 1) * chunkBytes)),
  );
}

/** What a raw block holds, for a fault message: zeros, a write (cycle/sequence), or neither. */
function describeBlock(block: Buffer): string {
  if (block.every((byte) => byte === 0)) return 'zeros';
  if (!block.subarray(0, 8).equals(blockMagic))
    return `no write's block (starts ${block.subarray(0, 16).toString('hex')})`;
  const cycle = block.readUInt32LE(12);
  const sequence = block.readUInt32LE(16);
  const whole = block.equals(
    rawBlockOf(block.readUInt32LE(8), cycle, sequence, block.readUInt32LE(20)),
  );
  return `write ${cycle}/${sequence} for block ${block.readUInt32LE(20)}${whole ? '' : ' (torn)'}`;
}

// ---------------------------------------------------------------------------------------------
// The soak

interface SnapshotEntry {
  name: string;
  lun: 'db' | 'raw';
  /** The cycle it was taken in. */
  cycle: number;
  /** creating / deleting: the command was running when the server was killed. */
  state: 'creating' | 'live' | 'deleting';
  /** sha256 of the whole snapshot file, read right after it was taken (absent: not read yet). */
  fingerprint?: string;
  /**
   * What it read then, to tell after a mismatch what changed: the image (raw) or sha256 per 128 KiB
   * chunk (db).
   */
  image?: Buffer;
  chunkHashes?: string[];
  /** Raw record size before the snapshot command and after it returned (raw snapshots). */
  cutBefore: number;
  cutAfter: number;
}

class SoakFault extends Error {}

class Soak {
  readonly mountpoint: string;
  readonly data: string;
  readonly records: { files: string; raw: string };
  server!: MountServer;
  loop!: LoopDevice;
  readonly snapshots = new Map<string, SnapshotEntry>();
  cycle = 0;
  /** What the soak did lately (operations, kills, restarts), printed with a fault. */
  readonly history: string[] = [];
  cycleStartMs = Date.now();
  readonly figures = {
    kills: 0,
    fsckRuns: 0,
    filesChecked: 0,
    rawBlocksChecked: 0,
    snapshotsTaken: 0,
    snapshotsDeleted: 0,
    snapshotChecks: 0,
    uncertainSnapshots: 0,
    spaceChecks: 0,
    allocatedBytesMax: 0,
  };

  constructor(
    readonly box: Sandbox,
    readonly pool: string,
  ) {
    this.mountpoint = box.path('mnt');
    this.data = box.path('data');
    this.records = { files: box.path('files.record'), raw: box.path('raw.record') };
  }

  fault(message: string): never {
    throw new SoakFault(
      `soak FAULT at cycle ${this.cycle} of ${cycleCount} (seed ${seed}; replay: make soak COUNT=${cycleCount} SEED=${seed}${useCli ? '' : ' CLI=0'}): ${message}\nlast events:\n  ${this.history.join('\n  ')}`,
    );
  }

  note(event: string): void {
    this.history.push(`cycle ${this.cycle} +${Date.now() - this.cycleStartMs} ms: ${event}`);
    if (this.history.length > 60) this.history.shift();
  }

  lunFile(lun: string): string {
    return join(this.mountpoint, 'luns', lun);
  }

  async status(): Promise<StatusJson> {
    return JSON.parse(
      await readFile(join(this.mountpoint, 'control', 'status'), 'utf8'),
    ) as StatusJson;
  }

  async setUp(): Promise<void> {
    await lunfsOk('lun', 'create', this.pool, 'db', '--size', `${dbLunBytes / MiB}M`);
    await lunfsOk('lun', 'create', this.pool, 'raw', '--size', `${rawLunBytes / MiB}M`);
    this.server = await this.box.mount(this.pool, this.mountpoint);
    this.loop = await this.box.attachLoop(this.lunFile('db'));
    await this.box.mkfsExt4(this.loop);
    await this.box.mountExt4(this.loop, this.data);
    // made durable here, so that the load's fsyncs cover all it makes
    await mkdir(join(this.data, 'f'));
    await runOk('sync', ['-f', this.data]);
  }

  /** One cycle: the load and snapshot operations, SIGKILL at the seeded instant, clear, remount. */
  async crashCycle(): Promise<{ killDelayMs: number }> {
    this.cycleStartMs = Date.now();
    const schedule = makeGenerator(deriveSeedOf(seed, 'cycle', this.cycle));
    const killDelayMs = Math.round(killDelayMsMin + schedule() * (killDelayMsMax - killDelayMsMin));
    const operationDelaysMs = Array.from({ length: Math.floor(schedule() * 3) }, () =>
      Math.round(schedule() * killDelayMs),
    );
    const load = spawn(
      process.execPath,
      [
        loadScript,
        this.data,
        this.lunFile('raw'),
        this.records.files,
        this.records.raw,
        String(seed),
        String(this.cycle),
        String(regionBlocks),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let loadOutput = '';
    load.stdout!.setEncoding('utf8').on('data', (chunk: string) => (loadOutput += chunk));
    load.stderr!.setEncoding('utf8').on('data', (chunk: string) => (loadOutput += chunk));
    const loadExit = new Promise<number | null>((resolve) =>
      load.on('exit', (code) => resolve(code)),
    );
    let killed = false;
    this.note(
      `load started; SIGKILL planned at ${killDelayMs} ms, snapshot operations at [${operationDelaysMs.join(', ')}] ms`,
    );
    // A fault found by an operation is thrown after the kill (caught here so that it is not
    // unhandled meanwhile).
    const operations = this.snapshotOperations(operationDelaysMs, schedule, () => killed).then(
      () => undefined,
      (error: unknown) => error,
    );
    await sleep(killDelayMs);
    if (load.exitCode !== null)
      this.fault(`the load exited (${load.exitCode}) before the kill:\n${loadOutput}`);
    killed = true;
    this.note(`SIGKILL (planned at ${killDelayMs} ms)`);
    this.server.child.kill('SIGKILL');
    this.figures.kills += 1;
    load.kill('SIGKILL');
    await this.server.kill(); // waits for the exit, lazily unmounts the dead FUSE mount
    await loadExit;
    const operationError = await operations;
    if (operationError) throw operationError;
    await this.box.umount(this.data, { lazy: true });
    await this.box.detachLoop(this.loop);
    this.server = await this.box.mount(this.pool, this.mountpoint);
    this.note('mounted again');
    return { killDelayMs };
  }

  /**
   * Takes and deletes snapshots at the given instants until the kill; errors after it are expected.
   */
  async snapshotOperations(
    delaysMs: number[],
    schedule: Generator,
    killed: () => boolean,
  ): Promise<void> {
    const start = Date.now();
    for (const delayMs of delaysMs.sort((a, b) => a - b)) {
      await sleep(Math.max(0, delayMs - (Date.now() - start)));
      if (killed()) return;
      const live = [...this.snapshots.values()].filter((entry) => entry.state === 'live');
      const byCli = schedule() < 0.5 && useCli;
      try {
        if (live.length >= liveSnapshotsMax || (live.length > 0 && schedule() < 0.3)) {
          await this.deleteSnapshot(live[Math.floor(schedule() * live.length)]!, byCli);
        } else {
          await this.takeSnapshot(schedule() < 0.5 ? 'db' : 'raw', byCli);
        }
      } catch (error) {
        if (error instanceof SoakFault || !killed()) throw error;
        this.note(`the operation failed under the kill: ${String(error).split('\n')[0]}`);
        return; // the server died under the command: its outcome is checked after the restart
      }
    }
  }

  async takeSnapshot(lun: 'db' | 'raw', byCli: boolean): Promise<void> {
    const name = `${lun}@c${this.cycle}-${this.figures.snapshotsTaken + 1}`;
    const entry: SnapshotEntry = {
      name,
      lun,
      cycle: this.cycle,
      state: 'creating',
      cutBefore: fileSizeOf(this.records.raw),
      cutAfter: Infinity,
    };
    this.snapshots.set(name, entry);
    this.figures.snapshotsTaken += 1;
    this.note(
      `take ${name} (${byCli ? 'lunfs snapshot create' : 'touch'}), raw record at ${entry.cutBefore} bytes`,
    );
    if (byCli) await lunfsOk('snapshot', 'create', this.pool, name);
    else await runOk('touch', [join(this.mountpoint, 'control', 'snapshot', name)]);
    entry.cutAfter = fileSizeOf(this.records.raw);
    entry.state = 'live';
    this.note(`${name} taken, raw record at ${entry.cutAfter} bytes`);
    await this.fingerprint(entry);
    this.note(`${name} read: sha256 ${entry.fingerprint!.slice(0, 16)}`);
  }

  /** Reads a new snapshot whole: its sha256, and for a raw one the check of its instant. */
  async fingerprint(entry: SnapshotEntry): Promise<void> {
    const path = join(this.mountpoint, 'snapshots', entry.name);
    const image = await readFile(path);
    if (entry.lun === 'db') {
      entry.fingerprint = sha256(image);
      entry.chunkHashes = chunkHashes(image);
      return;
    }
    if (image.length !== rawLunBytes)
      this.fault(`snapshot ${entry.name} reads ${image.length} bytes, not ${rawLunBytes}`);
    const problems = checkRawImage(
      image,
      await readRawRecord(this.records.raw),
      entry.cycle,
      entry.cutBefore,
      entry.cutAfter,
    );
    if (problems.length > 0)
      this.fault(`snapshot ${entry.name} does not hold its instant:\n  ${problems.join('\n  ')}`);
    if (image.subarray(regionBlocks * blockBytes).some((byte) => byte !== 0))
      this.fault(`snapshot ${entry.name}: the raw LUN past the written region is not zero`);
    entry.fingerprint = sha256(image);
    entry.image = image;
  }

  /**
   * A snapshot read again after a restart: the same bytes as when it was taken, or a fault saying
   * what changed.
   */
  async checkFingerprint(entry: SnapshotEntry): Promise<void> {
    const image = await readFile(join(this.mountpoint, 'snapshots', entry.name));
    const now = sha256(image);
    if (now === entry.fingerprint) return;
    const changes: string[] = [];
    if (entry.image) {
      for (let block = 0; block < rawLunBytes / blockBytes; block += 1) {
        const was = entry.image.subarray(block * blockBytes, (block + 1) * blockBytes);
        const got = image.subarray(block * blockBytes, (block + 1) * blockBytes);
        if (!was.equals(got))
          changes.push(`block ${block}: was ${describeBlock(was)}, now ${describeBlock(got)}`);
      }
    } else if (entry.chunkHashes) {
      chunkHashes(image).forEach((hash, chunk) => {
        if (hash !== entry.chunkHashes![chunk])
          changes.push(
            `128 KiB chunk ${chunk}${image.subarray(chunk * chunkBytes, (chunk + 1) * chunkBytes).every((byte) => byte === 0) ? ' (now all zeros)' : ''}`,
          );
      });
    }
    this.fault(
      `snapshot ${entry.name} (taken in cycle ${entry.cycle}) reads differently than when it was taken (sha256 ${now}, was ${entry.fingerprint}); ${changes.length} ${entry.image ? 'blocks' : 'chunks'} differ:\n  ${changes.slice(0, 12).join('\n  ')}`,
    );
  }

  async deleteSnapshot(entry: SnapshotEntry, byCli: boolean): Promise<void> {
    entry.state = 'deleting';
    this.note(`delete ${entry.name}`);
    if (byCli) await lunfsOk('snapshot', 'rm', this.pool, entry.name);
    else await unlink(join(this.mountpoint, 'snapshots', entry.name));
    this.snapshots.delete(entry.name);
    this.figures.snapshotsDeleted += 1;
    this.note(`${entry.name} deleted (${byCli ? 'lunfs snapshot rm' : 'unlink'})`);
  }

  /** Everything checked after a restart; ends with the ext4 mounted again for the next load. */
  async verify(): Promise<void> {
    this.loop = await this.box.attachLoop(this.lunFile('db'));
    await this.box.mountExt4(this.loop, this.data); // replays the ext4 journal
    await this.box.umount(this.data);
    const fsck = await this.box.fsckExt4(this.loop);
    this.figures.fsckRuns += 1;
    if (fsck.code !== 0)
      this.fault(
        `fsck.ext4 -fn after the journal replay exits ${fsck.code}:\n${fsck.stdout}${fsck.stderr}`,
      );
    await this.box.mountExt4(this.loop, this.data);
    await this.verifyFiles();
    await this.verifyRaw();
    await this.verifySnapshots();
    const integrity = (await this.status()).integrity;
    if (integrity.checksumMismatches !== 0 || integrity.unrepairable !== 0)
      this.fault(`checksum mismatches after the restart: ${JSON.stringify(integrity)}`);
    if (this.cycle % cleanEvery === 0) await this.verifySpace();
  }

  /** Every fsync'ed file with its content; files the kill left half-made are removed. */
  async verifyFiles(): Promise<void> {
    const text = await readFile(this.records.files, 'utf8').catch(() => '');
    const made = new Map<string, number>();
    const deleting = new Set<string>();
    for (const line of text.split('\n')) {
      const [kind, cycle, number, size] = line.split(' ');
      if (kind === 'F') made.set(`${cycle}-${number}`, Number(size));
      else if (kind === 'D') deleting.add(`${cycle}-${number}`);
    }
    const directory = join(this.data, 'f');
    const present = new Set(await readdir(directory).catch(() => [] as string[]));
    for (const [name, size] of made) {
      if (deleting.has(name)) continue;
      if (!present.has(name))
        this.fault(`file f/${name} (${size} bytes) was fsync'ed, with its directory, and is gone`);
      const [cycle, number] = name.split('-').map(Number) as [number, number];
      const got = await readFile(join(directory, name));
      if (!got.equals(fileContentOf(seed, cycle, number, size)))
        this.fault(
          `file f/${name} was fsync'ed with ${size} bytes and reads ${got.length} bytes${got.length === size ? ' of other content' : ''}`,
        );
      this.figures.filesChecked += 1;
    }
    // Not recorded (the kill came before the record) or recorded as being deleted: remove.
    for (const name of present)
      if (!made.has(name) || deleting.has(name)) await unlink(join(directory, name));
  }

  async verifyRaw(): Promise<void> {
    const handle = await open(this.lunFile('raw'), 'r');
    const image = Buffer.alloc(regionBlocks * blockBytes);
    try {
      await handle.read(image, 0, image.length, 0);
    } finally {
      await handle.close();
    }
    const problems = checkRawImage(
      image,
      await readRawRecord(this.records.raw),
      Infinity,
      Infinity,
      Infinity,
    );
    if (problems.length > 0)
      this.fault(
        `the raw LUN lost fdatasync'ed writes or holds a block no write wrote:\n  ${problems.join('\n  ')}`,
      );
    this.figures.rawBlocksChecked += regionBlocks;
  }

  async verifySnapshots(): Promise<void> {
    const listed = new Map(
      (await this.status()).snapshots.map((snapshot) => [snapshot.name, snapshot]),
    );
    for (const name of listed.keys())
      if (!this.snapshots.has(name))
        this.fault(`snapshot ${name} is listed but was never taken, or its deletion returned`);
    for (const entry of [...this.snapshots.values()]) {
      const found = listed.get(entry.name);
      if (!found) {
        if (entry.state === 'live')
          this.fault(`snapshot ${entry.name} was taken (the command returned) and is gone`);
        this.figures.uncertainSnapshots += 1;
        this.snapshots.delete(entry.name); // created or deleted under the kill: gone is allowed
        continue;
      }
      if (found.state !== 'valid')
        this.fault(`snapshot ${entry.name} is ${found.state}: ${found.invalidReason ?? ''}`);
      if (entry.fingerprint === undefined) {
        if (entry.state === 'creating') this.figures.uncertainSnapshots += 1;
        entry.state = entry.state === 'deleting' ? 'deleting' : 'live';
        await this.fingerprint(entry); // taken under the kill, or not read before it: read it now
      } else {
        await this.checkFingerprint(entry);
      }
      this.figures.snapshotChecks += 1;
      // finish the deletion the kill cut
      if (entry.state === 'deleting') await this.deleteSnapshot(entry, false);
    }
  }

  /** All snapshots deleted: the pool's allocated space must be what the LUNs hold, no more. */
  async verifySpace(): Promise<void> {
    for (const entry of [...this.snapshots.values()]) await this.deleteSnapshot(entry, false);
    await runOk('sync', ['-f', this.data]);
    const status = await this.status();
    if (status.snapshots.length > 0)
      this.fault(
        `snapshots left after deleting all: ${status.snapshots.map((snapshot) => snapshot.name).join(' ')}`,
      );
    const lunBytes = status.luns.reduce((sum, lun) => sum + lun.allocatedBytes, 0);
    this.figures.spaceChecks += 1;
    this.figures.allocatedBytesMax = Math.max(
      this.figures.allocatedBytesMax,
      status.pool.allocatedBytes,
    );
    if (status.pool.allocatedBytes !== lunBytes)
      this.fault(
        `space leak: the pool has ${status.pool.allocatedBytes} bytes allocated, the LUNs hold ${lunBytes} (${status.luns.map((lun) => `${lun.name} ${lun.allocatedBytes}`).join(', ')}), no snapshot left`,
      );
  }

  /** A clean stop at the end: SIGTERM flushes and unmounts; then the pool checks offline. */
  async tearDown(): Promise<void> {
    await this.verifySpace();
    await this.box.umount(this.data);
    await this.box.detachLoop(this.loop);
    const exit = await this.server.stop();
    if (exit.code !== 0)
      this.fault(
        `the last lunfs mount did not stop cleanly: ${JSON.stringify(exit)}\n${this.server.stderr}`,
      );
    const offline = await lunfs('status', this.pool, '--json');
    if (offline.code !== 0) this.fault(`lunfs status after the clean stop: ${offline.stderr}`);
  }
}

describe('crash soak', () => {
  const sandbox = useSandbox('soak');

  it(
    `${cycleCount} cycles of load, snapshots, SIGKILL, remount and verify`,
    async () => {
      const startMs = Date.now();
      console.info(
        `soak: seed ${seed}, ${cycleCount} cycles${useCli ? '' : ', snapshot operations without the CLI'} (replay: make soak COUNT=${cycleCount} SEED=${seed})`,
      );
      const box = sandbox();
      const pool = await box.createPool('pool', { drives: 3, driveSize: '256M', raid: 5 });
      const soak = new Soak(box, pool);
      await soak.setUp();
      try {
        for (soak.cycle = 1; soak.cycle <= cycleCount && Date.now() < stopAtMs; soak.cycle += 1) {
          const cycleStartMs = Date.now();
          const { killDelayMs } = await soak.crashCycle();
          await soak.verify();
          const live = [...soak.snapshots.values()].length;
          console.info(
            `soak: cycle ${soak.cycle}/${cycleCount}: SIGKILL after ${killDelayMs} ms, verified (${soak.figures.filesChecked} file checks, ${live} snapshots live) in ${Date.now() - cycleStartMs} ms`,
          );
        }
        soak.cycle -= 1; // the last cycle run
        await soak.tearDown();
      } catch (error) {
        if (!(error instanceof SoakFault))
          console.error(
            `soak: error at cycle ${soak.cycle} of ${cycleCount}, seed ${seed} (replay: make soak COUNT=${cycleCount} SEED=${seed})`,
          );
        throw error;
      }
      const seconds = Math.round((Date.now() - startMs) / 1000);
      const stoppedEarly =
        soak.cycle < cycleCount
          ? ` (stopped by LUNFS_SOAK_STOP_AT after ${soak.cycle} of ${cycleCount})`
          : '';
      console.info(
        `soak: done: ${soak.cycle} cycles${stoppedEarly}, ${soak.figures.kills} kills, 0 faults, ${seconds} s, seed ${seed}; ${JSON.stringify(soak.figures)}`,
      );
      expect(soak.figures.kills).toBe(soak.cycle);
      if (stopAtMs === Infinity) expect(soak.cycle).toBe(cycleCount);
    },
    120_000 + cycleCount * 60_000,
  );
});
