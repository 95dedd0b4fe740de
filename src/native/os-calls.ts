// OS calls Node.js does not offer, from the native addon (native/src/os_calls.c): flock(2) on an
// open file and the peer credentials of a Unix socket. They have no TypeScript twin that could do
// the same, so each caller is told when they are missing (the addon was not built, or
// LUNFS_NO_NATIVE=1) and keeps a weaker fallback of its own: the pool lock falls back to an
// exclusive-create lock file, drive ownership and peer checks to file modes alone.

import { nativeAddonOrNull } from './native-kernels.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface OsCallExports {
  allocHugePages?(bytes: number): Buffer | null;
  flock(fd: number, exclusive: boolean): boolean;
  unflock(fd: number): void;
  peerCredentials(fd: number): PeerCredentials;
}

const osCalls: OsCallExports | null =
  nativeAddonOrNull !== null &&
  typeof nativeAddonOrNull['flock'] === 'function' &&
  typeof nativeAddonOrNull['unflock'] === 'function' &&
  typeof nativeAddonOrNull['peerCredentials'] === 'function'
    ? (nativeAddonOrNull as unknown as OsCallExports)
    : null;

/** Whether flock and peerCredentials are available in this process. */
export const osCallsAvailable = osCalls !== null;

/**
 * Takes an flock(2) lock on fd without waiting: 'locked' when this open file now holds it, 'busy'
 * when another open file holds a conflicting lock, 'unsupported' without the addon. The kernel
 * drops the lock when the file is closed or the process dies.
 */
export function tryFlock(fd: number, exclusive = true): 'locked' | 'busy' | 'unsupported' {
  if (osCalls === null) return 'unsupported';
  return osCalls.flock(fd, exclusive) ? 'locked' : 'busy';
}

/** Releases an flock(2) lock taken by tryFlock (closing the file does too). */
export function unflock(fd: number): void {
  osCalls?.unflock(fd);
}

/**
 * The pid, uid and gid of the process at the other end of a connected Unix socket, or null without
 * the addon.
 */
export function peerCredentials(fd: number): PeerCredentials | null {
  if (osCalls === null) return null;
  return osCalls.peerCredentials(fd);
}

/**
 * Zeroed memory for long-lived I/O buffers (cache pages, FUSE request slots), in 2 MiB huge pages
 * where the addon can ask the kernel for them (Linux transparent huge pages, "madvise" or
 * "always" mode), else an ordinary Buffer. Every page is touched before it is returned, so the
 * first request into it pays no page fault. Why: with 4 KiB pages, the kernel's copy from a cold
 * cache page for a 4 KiB pwrite cost 6-14 us on the reference VM, with 2 MiB pages ~3 us.
 */
export function allocateIoMemory(bytes: number): Buffer {
  const huge =
    process.env['LUNFS_NO_HUGEPAGES'] !== '1' &&
    nativeAddonOrNull !== null &&
    typeof nativeAddonOrNull['allocHugePages'] === 'function'
      ? (
          nativeAddonOrNull as unknown as Required<Pick<OsCallExports, 'allocHugePages'>>
        ).allocHugePages(bytes)
      : null;
  const memory = huge === null ? Buffer.allocUnsafeSlow(bytes) : huge.subarray(0, bytes);
  memory.fill(0); // fault every page in now (a fresh mapping is zero but not yet present)
  return memory;
}
