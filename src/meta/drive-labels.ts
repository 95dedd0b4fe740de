// A drive's labels: its header (src/meta/drive-header.ts) kept twice from format 5 on, the same
// bytes at offset 0 (the head) and in the drive's last whole 4 KiB (the tail), as ZFS keeps
// labels at both ends of a device: damage at either end leaves one. Any one good label names the
// drive; which pool and index it may claim is decided by the pool (src/volume/drive-identity.ts).
//
// Invariants: the head is written and flushed before the tail, so when both are good and differ
// the head is the newer and wins. A format-4 drive has only the head (its PSEG area may reach the
// tail), so its tail is never read as a label. A tail is taken only at format 5 or later and only
// where a label of its recorded drive size would lie.

import { isLunfsError } from '../util/errors.js';
import {
  decodeDriveHeader,
  driveHeaderBytes,
  encodeDriveHeader,
  labelCountOf,
  tailLabelOffsetBytes,
  type DriveHeader,
} from './drive-header.js';

export type LabelPosition = 'head' | 'tail';

export interface LabelProblem {
  position: LabelPosition;
  reason: string;
}

export interface LabelScan {
  /** The label taken: the head when it is good, else the tail; undefined when neither is. */
  header?: DriveHeader;
  /** The labels that are not good (or disagree with the one taken), with why. */
  damaged: LabelProblem[];
  /** Every label read failed with EIO: the drive is dead rather than unlabelled. */
  unreadable: boolean;
}

export function labelOffsetBytes(position: LabelPosition, driveSizeBytes: number): number {
  return position === 'head' ? 0 : tailLabelOffsetBytes(driveSizeBytes);
}

/** Reads both labels of a drive and says which one names it. */
/**
 * What the labels need of a drive: the part of the drive interface (src/drive/drive.ts) they use,
 * stated here so that meta/ does not import from drive/, the layer that depends on it.
 */
export interface LabelDrive {
  readonly sizeBytes: number;
  read(offsetBytes: number, target: Buffer): Promise<void>;
  write(offsetBytes: number, source: Buffer): Promise<void>;
  flush(): Promise<void>;
}

export async function readLabels(drive: LabelDrive): Promise<LabelScan> {
  const head = await readLabel(drive, 'head');
  const tail =
    drive.sizeBytes >= 2 * driveHeaderBytes
      ? await readLabel(drive, 'tail')
      : { raw: undefined, reason: 'the drive is too small for a tail label', eio: false };
  const tailHeader = tail.raw ? decodeTail(tail.raw, drive.sizeBytes) : undefined;
  const tailProblem: LabelProblem = {
    position: 'tail',
    reason:
      tail.raw === undefined
        ? tail.reason
        : tailHeader && 'reason' in tailHeader
          ? tailHeader.reason
          : '',
  };
  if (head.raw) {
    const decoded = decodeDriveHeader(head.raw);
    if (decoded.ok) {
      if (labelCountOf(decoded.header) < 2)
        return { header: decoded.header, damaged: [], unreadable: false };
      if (tailHeader && 'header' in tailHeader) {
        const same = tail.raw!.equals(head.raw);
        return {
          header: decoded.header,
          damaged: same
            ? []
            : [{ position: 'tail', reason: 'differs from the head label (written before it)' }],
          unreadable: false,
        };
      }
      return { header: decoded.header, damaged: [tailProblem], unreadable: false };
    }
    head.reason = decoded.reason;
  }
  const damaged: LabelProblem[] = [{ position: 'head', reason: head.reason }];
  if (tailHeader && 'header' in tailHeader)
    return { header: tailHeader.header, damaged, unreadable: false };
  return { damaged: [...damaged, tailProblem], unreadable: head.eio && tail.eio };
}

/**
 * Writes the drive's labels (the head, flushed, then the tail, flushed), or only those at `only`.
 */
export async function writeLabels(
  drive: LabelDrive,
  header: DriveHeader,
  only?: LabelPosition[],
): Promise<void> {
  const encoded = encodeDriveHeader(header);
  const positions: LabelPosition[] = labelCountOf(header) >= 2 ? ['head', 'tail'] : ['head'];
  for (const position of positions) {
    if (only && !only.includes(position)) continue;
    await drive.write(labelOffsetBytes(position, header.driveSizeBytes), encoded);
    await drive.flush();
  }
}

async function readLabel(
  drive: LabelDrive,
  position: LabelPosition,
): Promise<{ raw?: Buffer; reason: string; eio: boolean }> {
  const raw = Buffer.alloc(driveHeaderBytes);
  try {
    await drive.read(labelOffsetBytes(position, drive.sizeBytes), raw);
    return { raw, reason: '', eio: false };
  } catch (error) {
    if (!isLunfsError(error, 'EIO')) throw error;
    return { reason: `unreadable: ${error.message}`, eio: true };
  }
}

/** A tail label counts only at format 5 or later, and only where its own drive size puts it. */
function decodeTail(
  raw: Buffer,
  driveSizeBytes: number,
): { header: DriveHeader } | { reason: string } {
  const decoded = decodeDriveHeader(raw);
  if (!decoded.ok) return { reason: decoded.reason };
  if (labelCountOf(decoded.header) < 2)
    return {
      reason: `a format-${decoded.header.formatVersion} label, which is never kept at the tail`,
    };
  if (
    tailLabelOffsetBytes(decoded.header.driveSizeBytes) !== tailLabelOffsetBytes(driveSizeBytes)
  ) {
    return {
      reason: `a label for a drive of ${decoded.header.driveSizeBytes} bytes, not ${driveSizeBytes}`,
    };
  }
  return { header: decoded.header };
}
