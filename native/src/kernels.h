// What lunfs_native.c (the kernels and their synchronous exports) shares with byte_jobs.c (the
// same kernels as asynchronous work on libuv's thread pool). The kernels touch only the bytes
// they are given and no N-API state, so they may run on any thread; the argument helpers call
// N-API and run on the JavaScript thread only.

#ifndef LUNFS_KERNELS_H
#define LUNFS_KERNELS_H

#include <node_api.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Kernels (any thread).

/** CRC-32C of bytes continuing from seed (a previous result, 0 to start). */
uint32_t lunfs_crc32c(uint32_t seed, const uint8_t *bytes, size_t length);

/** entries[i] = CRC-32C of block i (seed 0); length a multiple of block_bytes. */
void lunfs_crc32c_blocks(const uint8_t *bytes, size_t length, size_t block_bytes,
                         uint32_t *entries);

/**
 * target ^= sources[0] ^ sources[1] ^ ..., as if each source were XORed in turn, each seeing the
 * target as the earlier ones left it (a source that overlaps the target is read as it is at its
 * turn). False only when memory for an overlapping source's copy ran out.
 */
bool lunfs_xor_sources_into(uint8_t *target, const uint8_t *const *sources, size_t source_count,
                            size_t length);

// Argument helpers (JavaScript thread). Each throws a TypeError naming function_name and returns
// NULL / false on bad input, leaving everything unchanged.

napi_value lunfs_throw_type_error(napi_env env, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/**
 * The call's arguments into arguments[0..capacity) (those not passed: NULL) and their number into
 * count (which may exceed capacity); fewer than minimum throws "function_name: too_few".
 */
bool lunfs_get_arguments(napi_env env, napi_callback_info info, napi_value *arguments,
                         size_t capacity, size_t *count, size_t minimum,
                         const char *function_name, const char *too_few);

/** A Buffer or Uint8Array (nothing else) as (bytes, length); role names it in the message. */
bool lunfs_get_byte_array(napi_env env, napi_value value, const char *function_name,
                          const char *role, uint8_t **bytes, size_t *length);

/** An optional crc32c seed (value NULL or undefined: 0), an integer in 0..2^32-1. */
bool lunfs_get_crc32c_seed(napi_env env, napi_value value, const char *function_name,
                           uint32_t *seed);

/** (data, blockBytes, out) of crc32cBlocks, with every relation between them checked. */
bool lunfs_get_crc32c_blocks_arguments(napi_env env, const napi_value arguments[3],
                                       const char *function_name, uint8_t **bytes, size_t *length,
                                       size_t *block_bytes, uint32_t **entries);

bool lunfs_export_function(napi_env env, napi_value exports, const char *name,
                           napi_callback callback);

/** Registers crc32cAsync, crc32cBlocksAsync, xorIntoAsync and copyAsync (byte_jobs.c). */
bool lunfs_register_byte_jobs(napi_env env, napi_value exports);

#endif
