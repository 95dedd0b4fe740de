// Parsing and printing byte sizes ("8G", "512M", "4096") for the CLI and the FUSE front.

import { LunfsError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const unitBytes: Record<string, number> = {
  '': 1,
  B: 1,
  K: KiB,
  KB: KiB,
  KIB: KiB,
  M: MiB,
  MB: MiB,
  MIB: MiB,
  G: GiB,
  GB: GiB,
  GIB: GiB,
  T: TiB,
  TB: TiB,
  TIB: TiB,
  S: 512, // sectors
};

/** Parses "20G", "1.5T", "4096", "8s" (sectors); binary units. Throws EINVAL on anything else. */
export function parseSize(text: string, what = 'size'): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match ? unitBytes[match[2]!.toUpperCase()] : undefined;
  if (!match || unit === undefined) {
    throw new LunfsError(
      'EINVAL',
      `invalid ${what} '${text}': expected a number with an optional unit K, M, G, T (binary) or s (512-byte sectors)`,
    );
  }
  const bytes = Math.round(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes))
    throw new LunfsError('EINVAL', `invalid ${what} '${text}': too large`);
  return bytes;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let index = 0;
  while (value >= 1024 && index < units.length - 1) {
    value /= 1024;
    index += 1;
  }
  return index === 0 ? `${bytes} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[index]}`;
}

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

export function alignDown(value: number, alignment: number): number {
  return Math.floor(value / alignment) * alignment;
}
