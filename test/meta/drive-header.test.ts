// The drive header (first 4 KiB of every drive): it round-trips every field, and any damage is
// caught and named: a foreign or blank drive (magic), a newer format (version), a flipped bit
// anywhere in the 4 KiB (checksum); a format-4 header still reads (one label). Through Pool.open,
// a damaged head label is replaced by the tail's (test/volume/label-damage.test.ts has the rest).

import { describe, expect, it } from 'vitest';
import { formatVersion, oldestReadableFormatVersion } from '../../src/meta/checksum.js';
import {
  decodeDriveHeader,
  driveHeaderBytes,
  encodeDriveHeader,
  labelCountOf,
  tailLabelOffsetBytes,
  tailLabelReserveBytes,
  type DriveHeader,
} from '../../src/meta/drive-header.js';
import { SeededRandom } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';
import { Pool } from '../../src/pool/pool.js';
import { formatMemoryPool } from '../support/memory-pool.js';

const header: DriveHeader = {
  formatVersion,
  poolUuid: '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9',
  driveUuid: '11111111-2222-4333-8444-555555555555',
  driveIndex: 2,
  driveCount: 5,
  driveSizeBytes: 12 * 2 ** 40 + 4096, // past 32 bits
  psegSizeBytes: 2 * 2 ** 20,
  psegCount: 6_291_455,
  quorumOffsetBytes: 4096,
  checkpointSlotBytes: 201 * 65536,
  journalBytes: 64 * 2 ** 20,
  psegAreaOffsetBytes: 3 * 2 ** 30,
  holdsQuorumCopy: true,
  createdAtMs: 1_732_000_000_123,
  checksumTableOffsetBytes: 2 * 2 ** 30 + 2 ** 20,
  checksumTableBytes: 13 * 2 ** 30, // past 32 bits
  rowLogOffsetBytes: 5 * 2 ** 32 + 8192, // past 32 bits
  rowLogBytes: 16 * (4096 + 128 * 1024) + 8192,
};

describe('drive header', () => {
  it('round-trips every field in exactly 4 KiB', () => {
    const encoded = encodeDriveHeader(header);
    expect(encoded.length).toBe(driveHeaderBytes);
    expect(decodeDriveHeader(encoded)).toEqual({ ok: true, header });
    expect(
      decodeDriveHeader(encodeDriveHeader({ ...header, holdsQuorumCopy: false, driveIndex: 0 })),
    ).toEqual({ ok: true, header: { ...header, holdsQuorumCopy: false, driveIndex: 0 } });
  });

  it('says a blank or foreign drive is not a lunfs drive', () => {
    const blank = decodeDriveHeader(Buffer.alloc(driveHeaderBytes));
    expect(blank.ok).toBe(false);
    expect(!blank.ok && blank.reason).toMatch(/not a lunfs drive/);
    const foreign = Buffer.alloc(driveHeaderBytes);
    foreign.write('\x7fELF', 0, 'latin1');
    expect(decodeDriveHeader(foreign).ok).toBe(false);
  });

  it('refuses a format version it does not know, and says which', () => {
    const encoded = encodeDriveHeader(header);
    for (const version of [oldestReadableFormatVersion - 1, formatVersion + 1]) {
      encoded.writeUInt32LE(version, 8);
      const decoded = decodeDriveHeader(encoded);
      expect(decoded.ok).toBe(false);
      expect(!decoded.ok && decoded.reason).toMatch(
        new RegExp(`version ${version} is not supported`),
      );
    }
  });

  it('keeps the checksum table fields at bytes 156..171, the row log fields at 172..187, and zeros after them', () => {
    const encoded = encodeDriveHeader(header);
    expect(Number(encoded.readBigUInt64LE(156))).toBe(header.checksumTableOffsetBytes);
    expect(Number(encoded.readBigUInt64LE(164))).toBe(header.checksumTableBytes);
    expect(Number(encoded.readBigUInt64LE(172))).toBe(header.rowLogOffsetBytes);
    expect(Number(encoded.readBigUInt64LE(180))).toBe(header.rowLogBytes);
    expect(encoded.subarray(188).every((byte) => byte === 0)).toBe(true);
  });

  it('catches a flipped bit anywhere in the 4 KiB', () => {
    const encoded = encodeDriveHeader(header);
    const random = new SeededRandom(4);
    const positions = [
      ...Array(200).keys(),
      ...Array.from({ length: 300 }, () => 200 + random.integer(driveHeaderBytes - 200)),
    ];
    for (const byte of positions) {
      const bit = byte % 8;
      const damaged = Buffer.from(encoded);
      damaged[byte] = damaged[byte]! ^ (1 << bit);
      const decoded = decodeDriveHeader(damaged);
      expect(decoded.ok, `bit ${bit} of byte ${byte} flipped went unnoticed`).toBe(false);
      expect(!decoded.ok && decoded.reason, `byte ${byte}`).toMatch(
        /magic|version|checksum mismatch/,
      );
    }
  });

  it('reads a format-4 header (an older pool) and says it carries one label', () => {
    const old = encodeDriveHeader({ ...header, formatVersion: 4 });
    expect(old.readUInt32LE(8)).toBe(4);
    expect(decodeDriveHeader(old)).toEqual({ ok: true, header: { ...header, formatVersion: 4 } });
    expect(labelCountOf({ ...header, formatVersion: 4 })).toBe(1);
    expect(labelCountOf(header)).toBe(2);
  });

  it('puts the tail label in the last whole 4 KiB of the drive', () => {
    expect(tailLabelOffsetBytes(6 * 2 ** 20 + 4096)).toBe(6 * 2 ** 20);
    expect(tailLabelOffsetBytes(6 * 2 ** 20 + 5000)).toBe(6 * 2 ** 20);
    expect(tailLabelReserveBytes(6 * 2 ** 20 + 5000)).toBe(5000);
  });

  it('a damaged head label through Pool.open: the tail names the drive, the head is rewritten from it', async () => {
    const { pool, drives } = await formatMemoryPool({ raidLevel: 1, name: 'hdr' });
    await pool.close();
    drives[1]!.flipBit(100, 3);
    for (const drive of drives) drive.reopen();
    const opened = await Pool.open(drives, { clock: { nowMs: () => 0 }, log: silentLogger() });
    expect(opened.health.failedDrives()).toEqual([]);
    expect(opened.labelDamage[1]).toEqual([
      { position: 'head', reason: expect.stringMatching(/checksum mismatch/) },
    ]);
    expect(opened.health.integrity.labelRepairs).toBe(1);
    await opened.close();
    drives[1]!.reopen();
    const head = Buffer.alloc(driveHeaderBytes);
    const tail = Buffer.alloc(driveHeaderBytes);
    await drives[1]!.read(0, head);
    await drives[1]!.read(tailLabelOffsetBytes(drives[1]!.sizeBytes), tail);
    expect(decodeDriveHeader(head).ok).toBe(true);
    expect(head.equals(tail)).toBe(true);
  });
});
