// Operating errors: a typed error with a code. Bugs are assertions (see assert.ts) and crash;
// everything a user or a drive can cause is a LunfsError. Only the FUSE front turns codes into
// errno values and only the CLI turns them into messages and exit codes.

export type LunfsErrorCode =
  | 'ENOENT' // unknown pool, LUN, drive or path
  | 'EEXIST' // a name that is taken
  | 'EINVAL' // invalid argument: size, name, range, option
  | 'ENOSPC' // the pool has no free space left
  | 'EFBIG' // larger than the pool can ever map
  | 'EIO' // a drive failed or returned an error
  | 'EBUSY' // in use: mounted, open, locked by another process
  | 'EPERM' // not permitted on this object: chmod or chown of a file under the mountpoint
  // permission denied: the pool or its control socket belongs to another user; control/status
  // opened for writing
  | 'EACCES'
  | 'EBADF' // a FUSE request names a file handle the front does not know
  | 'ECORRUPT' // on-disk structure failed its magic/version/checksum check
  | 'ENOTSUP'; // not supported (yet)

export class LunfsError extends Error {
  readonly code: LunfsErrorCode;

  constructor(code: LunfsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LunfsError';
    this.code = code;
  }
}

export function isLunfsError(error: unknown, code?: LunfsErrorCode): error is LunfsError {
  return error instanceof LunfsError && (code === undefined || error.code === code);
}

/** Wraps an error from the operating system (a drive's file) into an EIO LunfsError. */
export function driveError(operation: string, path: string, cause: unknown): LunfsError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new LunfsError('EIO', `${operation} failed on drive ${path}: ${detail}`, { cause });
}
