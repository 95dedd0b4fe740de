// Which drive is which, at pool open: each given drive's labels (src/meta/drive-labels.ts) are
// read, and a drive is taken for drive i of the pool only on a good label of this pool that says
// so. A drive whose labels are all unreadable (dead) is missing; one with no good label (zeroed,
// overwritten, another file put in its place) or a label of another pool is a failed drive: a
// MissingDrive stands in for it with the reason, and the pool decides whether it can do without
// it (Pool.open, refuseIfDataLost). Nothing is guessed: the pool is the one a strict majority of
// the good labels name, a tie is refused, and a label of this pool given at another position is
// the caller's mistake (refused, naming both places). The pool metadata decides the rest (an
// older label of this pool, whose drive uuid the metadata no longer has at that index).

import type { Drive } from '../drive/drive.js';
import { isMissingDrive, MissingDrive } from '../drive/missing-drive.js';
import type { DriveHeader } from '../meta/drive-header.js';
import { readLabels, type LabelProblem } from '../meta/drive-labels.js';
import { LunfsError } from '../util/errors.js';

export interface IdentifiedDrives {
  /** The drives in index order, with a MissingDrive in the place of each one not taken. */
  drives: Drive[];
  /** The label of each drive taken (undefined for a stand-in). */
  headers: Array<DriveHeader | undefined>;
  /** Per drive taken: its labels that were not good, to rewrite from the good one. */
  labelDamage: LabelProblem[][];
}

export async function identifyDrives(given: Drive[]): Promise<IdentifiedDrives> {
  if (given.length === 0) throw new LunfsError('EINVAL', 'no drives given');
  const scans = await Promise.all(
    given.map((drive) => (isMissingDrive(drive) ? undefined : readLabels(drive))),
  );
  const drives = [...given];
  const standIn = async (
    position: number,
    reason: string,
    cause: 'error' | 'unusable',
  ): Promise<void> => {
    await drives[position]!.close().catch(() => undefined);
    drives[position] = new MissingDrive(given[position]!.path, reason, 0, cause);
  };
  for (const [position, scan] of scans.entries()) {
    if (!scan || scan.header) continue;
    const detail = scan.damaged
      .map((problem) => `${problem.position}: ${problem.reason}`)
      .join('; ');
    if (scan.unreadable) await standIn(position, detail, 'error');
    else await standIn(position, `no good lunfs label (${detail})`, 'unusable');
  }
  const poolUuid = choosePool(given, scans);
  const headers: Array<DriveHeader | undefined> = scans.map(() => undefined);
  for (const [position, scan] of scans.entries()) {
    const header = scan?.header;
    if (!header) continue;
    if (header.poolUuid !== poolUuid) {
      await standIn(
        position,
        `carries the label of another pool (${header.poolUuid}, drive ${header.driveIndex}), not of pool ${poolUuid}`,
        'unusable',
      );
      continue;
    }
    headers[position] = header;
  }
  const present = headers.flatMap((header, position) => (header ? [{ header, position }] : []));
  // The count first: with a drive left out, every drive after it would look out of order.
  const driveCount = present[0]!.header.driveCount;
  if (given.length !== driveCount) {
    const seen = new Set(present.map(({ header }) => header.driveIndex));
    const missing = [...Array(driveCount).keys()].filter((index) => !seen.has(index));
    throw new LunfsError(
      'EINVAL',
      `the pool has ${driveCount} drives but ${given.length} were given${missing.length > 0 ? `; missing drive index ${missing.join(', ')}` : ''}`,
    );
  }
  for (const { header, position } of present) {
    if (header.driveIndex !== position) {
      throw new LunfsError(
        'EINVAL',
        `drives given in the wrong order: ${given[position]!.path} is drive ${header.driveIndex} of the pool but was given as drive ${position}`,
      );
    }
  }
  return {
    drives,
    headers,
    labelDamage: scans.map((scan, position) => (headers[position] ? scan!.damaged : [])),
  };
}

/** The pool a strict majority of the good labels name; refused when there is none or a tie. */
function choosePool(given: Drive[], scans: Array<{ header?: DriveHeader } | undefined>): string {
  const votes = new Map<string, number[]>();
  scans.forEach((scan, position) => {
    if (scan?.header)
      votes.set(scan.header.poolUuid, [...(votes.get(scan.header.poolUuid) ?? []), position]);
  });
  if (votes.size === 0) {
    const why = given.map(
      (drive, position) =>
        `${drive.path} (${scans[position] === undefined ? (drive as MissingDrive).reason : 'no good lunfs label'})`,
    );
    throw new LunfsError('ENOENT', `none of the pool's drives is present: ${why.join(', ')}`);
  }
  const ranked = [...votes].sort((a, b) => b[1].length - a[1].length);
  if (ranked.length > 1 && ranked[0]![1].length === ranked[1]![1].length) {
    const sides = ranked.map(
      ([uuid, positions]) =>
        `pool ${uuid} on ${positions.map((position) => given[position]!.path).join(', ')}`,
    );
    throw new LunfsError(
      'EINVAL',
      `the drives given carry labels of different pools (${sides.join('; ')}) and none has a majority: cannot tell which pool this is`,
    );
  }
  return ranked[0]![0];
}
