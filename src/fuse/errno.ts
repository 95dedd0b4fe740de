// The only place where lunfs error codes become errno values.

import Fuse from 'fuse-native';
import { isLunfsError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

const errnoByCode: Record<string, number> = {
  ENOENT: Fuse.ENOENT,
  EEXIST: Fuse.EEXIST,
  EINVAL: Fuse.EINVAL,
  ENOSPC: Fuse.ENOSPC,
  EFBIG: Fuse.EFBIG,
  EIO: Fuse.EIO,
  EBUSY: Fuse.EBUSY,
  EPERM: Fuse.EPERM,
  EACCES: Fuse.EACCES,
  EBADF: Fuse.EBADF,
  ECORRUPT: Fuse.EIO,
  ENOTSUP: Fuse.EOPNOTSUPP,
};

/** A negative errno for FUSE; unexpected errors are logged and become EIO. */
export function errnoFor(error: unknown, log: Logger, context: Record<string, unknown>): number {
  if (isLunfsError(error)) {
    if (error.code === 'EIO' || error.code === 'ECORRUPT')
      log.error({ ...context, err: error }, error.message);
    else log.debug({ ...context, code: error.code }, error.message);
    return errnoByCode[error.code] ?? Fuse.EIO;
  }
  log.error({ ...context, err: error }, 'unexpected error in FUSE handler');
  return Fuse.EIO;
}
