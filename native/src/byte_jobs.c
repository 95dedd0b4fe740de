// Asynchronous forms of the byte kernels: each call checks its arguments on the JavaScript
// thread (throwing a TypeError there, before anything is queued or changed), takes a reference
// to every Buffer it was given, and queues the work on libuv's thread pool (napi_async_work);
// the returned promise settles on the JavaScript thread when the work is done, after which the
// references are dropped. So the JavaScript thread only plans, and the bytes stay alive while
// a pool thread reads or writes them.
//
// Exports (registered by lunfs_native.c):
//   crc32cAsync(data, seed?): Promise<number>
//   crc32cBlocksAsync(data, blockBytes, out: Uint32Array): Promise<void>
//   xorIntoAsync(target, ...sources): Promise<void>   target ^= every source, 1..64 sources, all
//                                                     of the target's length
//   copyAsync(target, source): Promise<void>          target.set(source), equal lengths, memmove
//
// The caller must neither write the bytes nor transfer (detach) their ArrayBuffers until the
// promise settles: the pool thread works on them in place, as fs.read does with its buffer.

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

// A RAID row has far fewer members; the limit keeps a job's size fixed.
#define MAX_XOR_SOURCES 64

typedef enum {
  BYTE_JOB_CRC32C,
  BYTE_JOB_CRC32C_BLOCKS,
  BYTE_JOB_XOR_INTO,
  BYTE_JOB_COPY,
} byte_job_kind;

typedef struct {
  byte_job_kind kind;
  const char *function_name;
  napi_async_work work;
  napi_deferred deferred;
  // One reference per Buffer the job reads or writes, held from the call until completion.
  napi_ref references[MAX_XOR_SOURCES + 1];
  size_t reference_count;
  uint8_t *target;  // crc32c and crc32cBlocks: the data (only read)
  size_t length;
  const uint8_t *sources[MAX_XOR_SOURCES];  // copy: sources[0]
  size_t source_count;
  uint32_t crc;  // crc32c: the seed, then the result
  size_t block_bytes;
  uint32_t *entries;
  bool out_of_memory;
} byte_job;

static void free_byte_job(napi_env env, byte_job *job) {
  for (size_t index = 0; index < job->reference_count; index++) {
    napi_delete_reference(env, job->references[index]);
  }
  if (job->work != NULL) napi_delete_async_work(env, job->work);
  free(job);
}

// Runs on a pool thread: no N-API calls here.
static void execute_byte_job(napi_env env, void *data) {
  (void)env;
  byte_job *job = data;
  switch (job->kind) {
    case BYTE_JOB_CRC32C:
      job->crc = lunfs_crc32c(job->crc, job->target, job->length);
      break;
    case BYTE_JOB_CRC32C_BLOCKS:
      lunfs_crc32c_blocks(job->target, job->length, job->block_bytes, job->entries);
      break;
    case BYTE_JOB_XOR_INTO:
      job->out_of_memory =
          !lunfs_xor_sources_into(job->target, job->sources, job->source_count, job->length);
      break;
    case BYTE_JOB_COPY:
      if (job->length > 0) memmove(job->target, job->sources[0], job->length);
      break;
  }
}

static void reject_with_message(napi_env env, napi_deferred deferred, const char *function_name,
                                const char *reason) {
  char text[160];
  snprintf(text, sizeof text, "%s: %s", function_name, reason);
  napi_value message;
  napi_value error;
  if (napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message) == napi_ok &&
      napi_create_error(env, NULL, message, &error) == napi_ok) {
    napi_reject_deferred(env, deferred, error);
  }
}

// Runs on the JavaScript thread once the work is done (or cancelled at environment teardown).
static void complete_byte_job(napi_env env, napi_status status, void *data) {
  byte_job *job = data;
  if (status != napi_ok) {
    reject_with_message(env, job->deferred, job->function_name,
                        "the work was cancelled before it ran");
  } else if (job->out_of_memory) {
    reject_with_message(env, job->deferred, job->function_name,
                        "out of memory copying an overlapping source");
  } else {
    napi_value result;
    napi_status made = job->kind == BYTE_JOB_CRC32C ? napi_create_uint32(env, job->crc, &result)
                                                    : napi_get_undefined(env, &result);
    if (made == napi_ok) {
      napi_resolve_deferred(env, job->deferred, result);
    } else {
      reject_with_message(env, job->deferred, job->function_name, "could not create the result");
    }
  }
  free_byte_job(env, job);
}

static byte_job *new_byte_job(napi_env env, byte_job_kind kind, const char *function_name) {
  byte_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, NULL, "lunfs_native: out of memory for an asynchronous job");
    return NULL;
  }
  job->kind = kind;
  job->function_name = function_name;
  return job;
}

// Keeps value (a Buffer the job uses) alive until the job completes.
static bool keep_until_complete(napi_env env, byte_job *job, napi_value value) {
  if (napi_create_reference(env, value, 1, &job->references[job->reference_count]) != napi_ok) {
    char message[80];
    snprintf(message, sizeof message, "%s: could not reference an argument", job->function_name);
    napi_throw_error(env, NULL, message);
    return false;
  }
  job->reference_count++;
  return true;
}

// Queues the job and returns its promise; on failure frees the job and throws.
static napi_value start_byte_job(napi_env env, byte_job *job) {
  napi_value promise;
  napi_value resource_name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, job->function_name, NAPI_AUTO_LENGTH, &resource_name) !=
          napi_ok ||
      napi_create_async_work(env, NULL, resource_name, execute_byte_job, complete_byte_job, job,
                             &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    // A created promise that is never settled is only garbage; the job is ours to free.
    char message[80];
    snprintf(message, sizeof message, "%s: could not queue the work", job->function_name);
    free_byte_job(env, job);
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  return promise;
}

static napi_value crc32c_async_export(napi_env env, napi_callback_info info) {
  size_t argument_count = 0;
  napi_value arguments[2];
  if (!lunfs_get_arguments(env, info, arguments, 2, &argument_count, 1, "crc32cAsync",
                           "data must be a Buffer or Uint8Array")) {
    return NULL;
  }
  uint8_t *bytes = NULL;
  size_t length = 0;
  uint32_t seed = 0;
  if (!lunfs_get_byte_array(env, arguments[0], "crc32cAsync", "data", &bytes, &length) ||
      !lunfs_get_crc32c_seed(env, argument_count >= 2 ? arguments[1] : NULL, "crc32cAsync",
                             &seed)) {
    return NULL;
  }
  byte_job *job = new_byte_job(env, BYTE_JOB_CRC32C, "crc32cAsync");
  if (job == NULL) return NULL;
  job->target = bytes;
  job->length = length;
  job->crc = seed;
  if (!keep_until_complete(env, job, arguments[0])) {
    free_byte_job(env, job);
    return NULL;
  }
  return start_byte_job(env, job);
}

static napi_value crc32c_blocks_async_export(napi_env env, napi_callback_info info) {
  size_t argument_count = 0;
  napi_value arguments[3];
  if (!lunfs_get_arguments(env, info, arguments, 3, &argument_count, 3, "crc32cBlocksAsync",
                           "expected three arguments (data, blockBytes, out)")) {
    return NULL;
  }
  byte_job *job = new_byte_job(env, BYTE_JOB_CRC32C_BLOCKS, "crc32cBlocksAsync");
  if (job == NULL) return NULL;
  if (!lunfs_get_crc32c_blocks_arguments(env, arguments, "crc32cBlocksAsync", &job->target,
                                         &job->length, &job->block_bytes, &job->entries) ||
      !keep_until_complete(env, job, arguments[0]) ||
      !keep_until_complete(env, job, arguments[2])) {
    free_byte_job(env, job);
    return NULL;
  }
  return start_byte_job(env, job);
}

static napi_value xor_into_async_export(napi_env env, napi_callback_info info) {
  size_t argument_count = 0;
  napi_value arguments[MAX_XOR_SOURCES + 2];
  if (!lunfs_get_arguments(env, info, arguments, MAX_XOR_SOURCES + 2, &argument_count, 2,
                           "xorIntoAsync",
                           "expected a target and at least one source (target, ...sources)")) {
    return NULL;
  }
  // argument_count is the number the caller passed, even past the array's room.
  if (argument_count > MAX_XOR_SOURCES + 1) {
    return lunfs_throw_type_error(env, "xorIntoAsync: at most %d sources, got %zu",
                                  MAX_XOR_SOURCES, argument_count - 1);
  }
  byte_job *job = new_byte_job(env, BYTE_JOB_XOR_INTO, "xorIntoAsync");
  if (job == NULL) return NULL;
  bool arguments_good =
      lunfs_get_byte_array(env, arguments[0], "xorIntoAsync", "target", &job->target, &job->length);
  for (size_t source = 0; arguments_good && source + 1 < argument_count; source++) {
    char role[32];
    snprintf(role, sizeof role, "source %zu", source + 1);
    uint8_t *source_bytes = NULL;
    size_t source_length = 0;
    arguments_good = lunfs_get_byte_array(env, arguments[source + 1], "xorIntoAsync", role,
                                          &source_bytes, &source_length);
    if (arguments_good && source_length != job->length) {
      lunfs_throw_type_error(env,
                             "xorIntoAsync: every source must have the target's length (target "
                             "%zu bytes, source %zu has %zu bytes)",
                             job->length, source + 1, source_length);
      arguments_good = false;
    }
    job->sources[source] = source_bytes;
  }
  job->source_count = argument_count - 1;
  for (size_t index = 0; arguments_good && index < argument_count; index++) {
    arguments_good = keep_until_complete(env, job, arguments[index]);
  }
  if (!arguments_good) {
    free_byte_job(env, job);
    return NULL;
  }
  return start_byte_job(env, job);
}

static napi_value copy_async_export(napi_env env, napi_callback_info info) {
  size_t argument_count = 0;
  napi_value arguments[2];
  if (!lunfs_get_arguments(env, info, arguments, 2, &argument_count, 2, "copyAsync",
                           "expected two arguments (target, source)")) {
    return NULL;
  }
  byte_job *job = new_byte_job(env, BYTE_JOB_COPY, "copyAsync");
  if (job == NULL) return NULL;
  uint8_t *source_bytes = NULL;
  size_t source_length = 0;
  bool arguments_good =
      lunfs_get_byte_array(env, arguments[0], "copyAsync", "target", &job->target, &job->length) &&
      lunfs_get_byte_array(env, arguments[1], "copyAsync", "source", &source_bytes,
                           &source_length);
  if (arguments_good && source_length != job->length) {
    lunfs_throw_type_error(env,
                           "copyAsync: target and source must have the same length (target %zu "
                           "bytes, source %zu bytes)",
                           job->length, source_length);
    arguments_good = false;
  }
  job->sources[0] = source_bytes;
  job->source_count = 1;
  if (!arguments_good || !keep_until_complete(env, job, arguments[0]) ||
      !keep_until_complete(env, job, arguments[1])) {
    free_byte_job(env, job);
    return NULL;
  }
  return start_byte_job(env, job);
}

bool lunfs_register_byte_jobs(napi_env env, napi_value exports) {
  return lunfs_export_function(env, exports, "crc32cAsync", crc32c_async_export) &&
         lunfs_export_function(env, exports, "crc32cBlocksAsync", crc32c_blocks_async_export) &&
         lunfs_export_function(env, exports, "xorIntoAsync", xor_into_async_export) &&
         lunfs_export_function(env, exports, "copyAsync", copy_async_export);
}
