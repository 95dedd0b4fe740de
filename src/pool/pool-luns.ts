// The LUN table of a pool: the user LUNs by name, and each LUN's internal snapshot target volume
// (a LUN record with role 'target', named after its owner). Every change is one metadata op,
// applied and committed before the call returns; a removed volume's RSEGs go back to the
// allocator only once its removal is durable. Invariants: user LUN names are unique and valid
// (checkLunName); a LUN is a whole number of sectors, never larger than the pool can ever map
// (capacityBytes), and never shrinks.

import type { LmapEntry } from '../meta/lmap.js';
import {
  applyMetadataOp,
  type LunRecord,
  type MetadataOp,
  type PoolMetadata,
} from '../meta/pool-metadata.js';
import { rstoreDataBytes } from '../raid/rstore.js';
import { assert } from '../util/assert.js';
import type { Clock } from '../util/clock.js';
import { sectorBytes } from '../util/constants.js';
import { LunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

const lunNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function checkLunName(name: string): void {
  if (!lunNamePattern.test(name)) {
    throw new LunfsError(
      'EINVAL',
      `invalid LUN name '${name}': use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
}

/** What the LUN table needs of the pool. */
export interface LunTableContext {
  readonly metadata: PoolMetadata;
  readonly clock: Clock;
  readonly log: Logger;
  /** Refuses a change on a read-only or closed pool. */
  checkWritable(): void;
  /** Applies a metadata op now and commits it. */
  commitOp(op: MetadataOp): Promise<void>;
  queue(op: MetadataOp, afterCommit?: () => void): void;
  commit(): Promise<void>;
  /** Gives RSEGs back to the allocator (once the op that frees them is durable). */
  release(entries: LmapEntry[]): void;
}

export class LunTable {
  constructor(private readonly pool: LunTableContext) {}

  lunByName(name: string): LunRecord {
    for (const lun of this.pool.metadata.luns.values())
      if (lun.name === name && !lun.role) return lun;
    throw new LunfsError('ENOENT', `no LUN named '${name}'`);
  }

  hasLun(name: string): boolean {
    return this.userLuns().some((lun) => lun.name === name);
  }

  /** The LUNs users see (not the internal snapshot target volumes). */
  userLuns(): LunRecord[] {
    return [...this.pool.metadata.luns.values()].filter((lun) => !lun.role);
  }

  /** The snapshot target volume of a LUN, if it has one. */
  targetOf(lunId: number): LunRecord | undefined {
    for (const lun of this.pool.metadata.luns.values())
      if (lun.role === 'target' && lun.ownerLunId === lunId) return lun;
    return undefined;
  }

  /** Creates the internal target volume of a LUN's snapshots (committed before it returns). */
  async createTarget(owner: LunRecord, sizeBytes: number): Promise<LunRecord> {
    this.pool.checkWritable();
    await this.pool.commitOp({
      kind: 'lun-create',
      lunId: this.pool.metadata.nextLunId,
      name: `.snapshot-target-${owner.id}`,
      sizeBytes,
      createdAtMs: this.pool.clock.nowMs(),
      role: 'target',
      ownerLunId: owner.id,
    });
    return this.targetOf(owner.id)!;
  }

  /** Removes a target volume (its LUN has no snapshot left); its RSEGs are free once committed. */
  async removeTarget(target: LunRecord, releaseUnwritten: () => void): Promise<void> {
    assert(target.role === 'target', 'removeTarget of a user LUN');
    await this.removeVolume(target, releaseUnwritten);
  }

  /**
   * Removes a LUN or target volume record; its RSEGs go back to the allocator once that is
   * committed.
   */
  private async removeVolume(record: LunRecord, releaseUnwritten: () => void): Promise<void> {
    releaseUnwritten();
    const entries: LmapEntry[] = [];
    record.map.forEachMapped((_, entry) => entries.push(entry));
    applyMetadataOp(this.pool.metadata, { kind: 'lun-remove', lunId: record.id });
    this.pool.queue({ kind: 'lun-remove', lunId: record.id }, () => this.pool.release(entries));
    await this.pool.commit();
  }

  /** Creates a LUN; with cloneOf, a snapclone that reads that base until its BGCOPY ends. */
  async createLun(
    name: string,
    sizeBytes: number,
    cloneOf?: LunRecord['cloneOf'],
  ): Promise<LunRecord> {
    this.pool.checkWritable();
    checkLunName(name);
    if (this.hasLun(name)) throw new LunfsError('EEXIST', `a LUN named '${name}' exists already`);
    this.checkLunSize(sizeBytes);
    await this.pool.commitOp({
      kind: 'lun-create',
      lunId: this.pool.metadata.nextLunId,
      name,
      sizeBytes,
      createdAtMs: this.pool.clock.nowMs(),
      ...(cloneOf ? { cloneOf } : {}),
    });
    this.pool.log.info({ lun: name, sizeBytes }, 'LUN created');
    return this.lunByName(name);
  }

  /** Removes a LUN whose stack is closed; its RSEGs become free once the removal is committed. */
  async removeLun(name: string, releaseUnwritten: () => void): Promise<void> {
    this.pool.checkWritable();
    await this.removeVolume(this.lunByName(name), releaseUnwritten);
    this.pool.log.info({ lun: name }, 'LUN removed');
  }

  async resizeLun(name: string, sizeBytes: number): Promise<void> {
    this.pool.checkWritable();
    const lun = this.lunByName(name);
    this.checkLunSize(sizeBytes);
    if (sizeBytes < lun.sizeBytes)
      throw new LunfsError(
        'EINVAL',
        `LUN '${name}' is ${lun.sizeBytes} bytes; shrinking to ${sizeBytes} is not supported`,
      );
    if (sizeBytes === lun.sizeBytes) return;
    await this.pool.commitOp({ kind: 'lun-resize', lunId: lun.id, sizeBytes });
    this.pool.log.info({ lun: name, sizeBytes }, 'LUN resized');
  }

  /** The most data the pool can ever hold: what a single LUN may not exceed. */
  capacityBytes(): number {
    const { raidLevel, psegSizeBytes } = this.pool.metadata.config;
    let bytes = 0;
    for (const rss of this.pool.metadata.rss) {
      const psegs = rss.driveIndexes.map((index) => this.pool.metadata.drives[index]!.psegCount);
      const striped = raidLevel === 0 || raidLevel === 5;
      const rstores = striped
        ? Math.min(...psegs)
        : Math.min(
            Math.floor(psegs.reduce((a, b) => a + b, 0) / 2),
            psegs.reduce((a, b) => a + b, 0) - Math.max(...psegs),
          );
      const width = striped ? rss.driveIndexes.length : 2;
      bytes +=
        rstores *
        rstoreDataBytes(
          { raidLevel, members: new Array(width).fill({ driveIndex: 0, psegIndex: 0 }) } as never,
          psegSizeBytes,
        );
    }
    return bytes;
  }

  private checkLunSize(sizeBytes: number): void {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0)
      throw new LunfsError('EINVAL', `invalid LUN size ${sizeBytes}`);
    if (sizeBytes % sectorBytes !== 0)
      throw new LunfsError(
        'EINVAL',
        `LUN size ${sizeBytes} is not a whole number of ${sectorBytes}-byte sectors`,
      );
    const capacity = this.capacityBytes();
    if (sizeBytes > capacity)
      throw new LunfsError(
        'EFBIG',
        `LUN size ${sizeBytes} is larger than the pool can ever map (${capacity} bytes)`,
      );
  }
}
