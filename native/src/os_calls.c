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

static bool export_os_call(napi_env env, napi_value exports, const char *name, napi_callback callback) {
  napi_value function;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, NULL, &function) == napi_ok &&
         napi_set_named_property(env, exports, name, function) == napi_ok;
}

bool lunfs_register_os_calls(napi_env env, napi_value exports) {
  return export_os_call(env, exports, "flock", flock_export) &&
         export_os_call(env, exports, "unflock", unflock_export) &&
         export_os_call(env, exports, "peerCredentials", peer_credentials_export);
}
