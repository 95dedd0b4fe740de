// lunfs native OS calls that Node.js does not offer: flock(2) on an open file descriptor (the pool
// lock and the per-drive ownership lock, both released by the kernel when the process dies, so a
// kill -9 never leaves a lock to be "taken over"), and the peer credentials of a connected Unix
// socket (SO_PEERCRED), so the control socket serves only its owner. src/native/os-calls.ts is
// the TypeScript side and says what happens where the addon is missing.
//
// Exports (registered by lunfs_native.c):
//   flock(fd: number, exclusive: boolean): boolean   non-blocking; false when another open file
//                                                    description holds a conflicting lock
//   unflock(fd: number): void
//   peerCredentials(fd: number): { pid, uid, gid }   Linux only; throws elsewhere
//   allocHugePages(bytes: number): Buffer | null     zeroed memory in 2 MiB huge pages where the
//                                                    kernel grants them (Linux THP, madvise mode);
//                                                    null where it cannot be had (not Linux, mmap
//                                                    refused). Freed by the Buffer's finalizer.

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

static napi_value throw_errno(napi_env env, const char *call, int error) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", call, strerror(error));
  napi_value code_value, message_value, error_value, errno_value;
  const char *code = error == EBADF ? "EBADF" : error == EINVAL ? "EINVAL" : error == ENOLCK ? "ENOLCK"
                   : error == ENOTSOCK ? "ENOTSOCK" : error == ENOTCONN ? "ENOTCONN" : "EIO";
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value);
  napi_create_error(env, code_value, message_value, &error_value);
  napi_create_int32(env, -error, &errno_value);
  napi_set_named_property(env, error_value, "errno", errno_value);
  napi_throw(env, error_value);
  return NULL;
}

static bool read_fd(napi_env env, napi_value value, int *fd) {
  if (napi_get_value_int32(env, value, fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, NULL, "expected a file descriptor (a non-negative integer)");
    return false;
  }
  return true;
}

static napi_value flock_export(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "flock(fd, exclusive) takes two arguments");
    return NULL;
  }
  int fd;
  bool exclusive;
  if (!read_fd(env, argv[0], &fd)) return NULL;
  if (napi_get_value_bool(env, argv[1], &exclusive) != napi_ok) {
    napi_throw_type_error(env, NULL, "flock: exclusive must be a boolean");
    return NULL;
  }
  int result;
  do result = flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
  while (result != 0 && errno == EINTR);
  napi_value locked;
  if (result == 0) {
    napi_get_boolean(env, true, &locked);
    return locked;
  }
  if (errno == EWOULDBLOCK) {
    napi_get_boolean(env, false, &locked);
    return locked;
  }
  return throw_errno(env, "flock", errno);
}

static napi_value unflock_export(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "unflock(fd) takes one argument");
    return NULL;
  }
  if (!read_fd(env, argv[0], &fd)) return NULL;
  if (flock(fd, LOCK_UN) != 0) return throw_errno(env, "flock(LOCK_UN)", errno);
  return NULL;
}

static napi_value peer_credentials_export(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "peerCredentials(fd) takes one argument");
    return NULL;
  }
  if (!read_fd(env, argv[0], &fd)) return NULL;
#ifdef SO_PEERCRED
  struct ucred credentials;
  socklen_t length = sizeof credentials;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  }
  napi_value result, pid, uid, gid;
  napi_create_object(env, &result);
  napi_create_int32(env, (int32_t)credentials.pid, &pid);
  napi_create_uint32(env, (uint32_t)credentials.uid, &uid);
  napi_create_uint32(env, (uint32_t)credentials.gid, &gid);
  napi_set_named_property(env, result, "pid", pid);
  napi_set_named_property(env, result, "uid", uid);
  napi_set_named_property(env, result, "gid", gid);
  return result;
#else
  return throw_errno(env, "getsockopt(SO_PEERCRED)", ENOSYS);
#endif
}

// Cache memory in huge pages. On this project's reference machine (a paravirtualized VM) a 4 KiB
// pwrite from a page of a 256 MiB cache costs 6-14 us when the cache is in 4 KiB pages and ~3 us
// in 2 MiB pages: the kernel's copy from user memory misses the TLB on every cold 4 KiB page.
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

static void unmap_huge(napi_env env, void *data, void *hint) {
  munmap(data, (size_t)(uintptr_t)hint);
  napi_adjust_external_memory(env, -(int64_t)(uintptr_t)hint, NULL);
}

static napi_value alloc_huge_pages_export(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double requested;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &requested) != napi_ok || !(requested > 0) || requested > (double)((size_t)1 << 40)) {
    napi_throw_type_error(env, NULL, "allocHugePages(bytes) takes a positive byte count");
    return NULL;
  }
  napi_value result;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  size_t bytes = ((size_t)requested + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
  // Map one huge page more and trim both ends, so the region starts on a 2 MiB boundary.
  size_t mapped = bytes + HUGE_PAGE_BYTES;
  char *raw = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    napi_get_null(env, &result);
    return result;
  }
  char *start = (char *)(((uintptr_t)raw + HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1));
  if (start > raw) munmap(raw, (size_t)(start - raw));
  char *end = start + bytes;
  if (raw + mapped > end) munmap(end, (size_t)(raw + mapped - end));
  madvise(start, bytes, MADV_HUGEPAGE); // advice only: 4 KiB pages where the kernel says no
  if (napi_create_external_buffer(env, bytes, start, unmap_huge, (void *)(uintptr_t)bytes, &result) != napi_ok) {
    munmap(start, bytes);
    napi_throw_error(env, NULL, "allocHugePages: could not wrap the mapping in a Buffer");
    return NULL;
  }
  napi_adjust_external_memory(env, (int64_t)bytes, NULL);
  return result;
#else
  napi_get_null(env, &result);
  return result;
#endif
}

static bool export_os_call(napi_env env, napi_value exports, const char *name, napi_callback callback) {
  napi_value function;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, NULL, &function) == napi_ok &&
         napi_set_named_property(env, exports, name, function) == napi_ok;
}

bool lunfs_register_os_calls(napi_env env, napi_value exports) {
  return export_os_call(env, exports, "flock", flock_export) &&
         export_os_call(env, exports, "unflock", unflock_export) &&
         export_os_call(env, exports, "peerCredentials", peer_credentials_export) &&
         export_os_call(env, exports, "allocHugePages", alloc_huge_pages_export);
}
