// Minimal typings for fuse-native 2.2.6 (it ships none): what lunfs uses.
declare module 'fuse-native' {
  type Callback = (code: number, ...results: unknown[]) => void;
  interface FuseOptions {
    force?: boolean;
    mkdir?: boolean;
    debug?: boolean;
    fsname?: string;
    maxRead?: number;
    timeout?: number | false;
    allowOther?: boolean;
    autoUnmount?: boolean;
  }
  class Fuse {
    constructor(
      mountpoint: string,
      operations: Record<string, (...args: never[]) => void>,
      options?: FuseOptions,
    );
    mount(callback: (error: Error | null) => void): void;
    unmount(callback: (error: Error | null) => void): void;
    static unmount(mountpoint: string, callback: (error: Error | null) => void): void;
    static EPERM: number;
    static ENOENT: number;
    static EIO: number;
    static EBADF: number;
    static EACCES: number;
    static EBUSY: number;
    static EEXIST: number;
    static ENOTDIR: number;
    static EISDIR: number;
    static EINVAL: number;
    static EFBIG: number;
    static ENOSPC: number;
    static EROFS: number;
    static ENOTEMPTY: number;
    static EOPNOTSUPP: number;
    static ENOSYS: number;
    static ENAMETOOLONG: number;
  }
  export = Fuse;
  export type { Callback };
}
