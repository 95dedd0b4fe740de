// lunfs native kernels: CRC-32C (Castagnoli), per-block CRC-32C and XOR parity, exported to
// JavaScript through plain N-API. src/native/crc32c-fallback.ts and src/native/xor-fallback.ts
// are the TypeScript twins with the same semantics; src/native/native-kernels.ts chooses.
//
// Exports:
//   crc32c(data: Buffer|Uint8Array, seed?: number): number   three interleaved SSE4.2 streams when
//                                                             the CPU has SSE4.2, else tables
//   crc32cWithTables(data, seed?): number                     always the slicing-by-8 tables (for tests)
//   crc32cSingleStream(data, seed?): number                   one SSE4.2 register (or the tables):
//                                                             the path crc32c had before three
//                                                             streams, for the benchmark and tests
//   crc32cBlocks(data: Buffer|Uint8Array, blockBytes: number, out: Uint32Array): void
//                                                             out[i] = crc32c of block i (seed 0),
//                                                             one call for a whole request; with
//                                                             SSE4.2, three blocks at a time
//   xorInto(target: Buffer|Uint8Array, source: Buffer|Uint8Array): void   target[i] ^= source[i]
//   crc32cImplementation: "sse4.2-three-streams" | "slicing-by-8"   which path crc32c takes here
//   flock, unflock, peerCredentials                           OS calls Node lacks (os_calls.c)

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

// LUNFS_PORTABLE_ONLY (a -D flag) builds only the portable C paths, as on a non-x86 machine: a way
// to check that build and its results on this one.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LUNFS_PORTABLE_ONLY)
#define LUNFS_HAVE_SSE42_PATH 1
#include <nmmintrin.h>
#else
#define LUNFS_HAVE_SSE42_PATH 0
#endif

// ---------------------------------------------------------------------------------------------
// CRC-32C, portable slicing-by-8
// ---------------------------------------------------------------------------------------------

#define CRC32C_REFLECTED_POLYNOMIAL 0x82F63B78u

// crc32c_tables[k][b] is the CRC of byte b followed by k zero bytes (table 0 is the classic one).
static uint32_t crc32c_tables[8][256];

static void build_crc32c_tables(void) {
  for (uint32_t byte_value = 0; byte_value < 256; byte_value++) {
    uint32_t crc = byte_value;
    for (int bit = 0; bit < 8; bit++) {
      crc = (crc & 1u) ? (crc >> 1) ^ CRC32C_REFLECTED_POLYNOMIAL : crc >> 1;
    }
    crc32c_tables[0][byte_value] = crc;
  }
  for (uint32_t byte_value = 0; byte_value < 256; byte_value++) {
    uint32_t crc = crc32c_tables[0][byte_value];
    for (int slice = 1; slice < 8; slice++) {
      crc = (crc >> 8) ^ crc32c_tables[0][crc & 0xFFu];
      crc32c_tables[slice][byte_value] = crc;
    }
  }
}

// Little-endian 32-bit load from any alignment; compiles to one mov on little-endian machines.
static inline uint32_t load_u32_little_endian(const uint8_t *bytes) {
  return (uint32_t)bytes[0] | ((uint32_t)bytes[1] << 8) | ((uint32_t)bytes[2] << 16) |
         ((uint32_t)bytes[3] << 24);
}

// Updates a raw (already inverted) CRC register over length bytes.
static uint32_t crc32c_update_with_tables(uint32_t crc, const uint8_t *bytes, size_t length) {
  while (length >= 8) {
    uint32_t low = crc ^ load_u32_little_endian(bytes);
    uint32_t high = load_u32_little_endian(bytes + 4);
    crc = crc32c_tables[7][low & 0xFFu] ^ crc32c_tables[6][(low >> 8) & 0xFFu] ^
          crc32c_tables[5][(low >> 16) & 0xFFu] ^ crc32c_tables[4][low >> 24] ^
          crc32c_tables[3][high & 0xFFu] ^ crc32c_tables[2][(high >> 8) & 0xFFu] ^
          crc32c_tables[1][(high >> 16) & 0xFFu] ^ crc32c_tables[0][high >> 24];
    bytes += 8;
    length -= 8;
  }
  while (length > 0) {
    crc = (crc >> 8) ^ crc32c_tables[0][(crc ^ *bytes) & 0xFFu];
    bytes++;
    length--;
  }
  return crc;
}

// ---------------------------------------------------------------------------------------------
// CRC-32C, SSE4.2 crc32 instruction (x86-64 only, chosen at run time)
// ---------------------------------------------------------------------------------------------

#if LUNFS_HAVE_SSE42_PATH
__attribute__((target("sse4.2"))) static uint32_t crc32c_update_with_sse42(uint32_t crc,
                                                                          const uint8_t *bytes,
                                                                          size_t length) {
  // Bytes until an 8-byte boundary, then 8 bytes per instruction, then the tail.
  while (length > 0 && ((uintptr_t)bytes & 7u) != 0) {
    crc = _mm_crc32_u8(crc, *bytes);
    bytes++;
    length--;
  }
  uint64_t wide_crc = crc;
  while (length >= 8) {
    uint64_t word;
    memcpy(&word, bytes, sizeof word);
    wide_crc = _mm_crc32_u64(wide_crc, word);
    bytes += 8;
    length -= 8;
  }
  crc = (uint32_t)wide_crc;
  while (length > 0) {
    crc = _mm_crc32_u8(crc, *bytes);
    bytes++;
    length--;
  }
  return crc;
}
#endif

#if LUNFS_HAVE_SSE42_PATH
// CRC-32C of three equally long blocks at once, each from seed 0. The crc32 instruction has a
// latency of three cycles but issues one per cycle, so three independent registers run about
// three times as fast as one; crc32cBlocks has independent blocks to hand, so no CRC combining.
__attribute__((target("sse4.2"))) static void crc32c_three_blocks_with_sse42(const uint8_t *first,
                                                                            const uint8_t *second,
                                                                            const uint8_t *third,
                                                                            size_t length,
                                                                            uint32_t *out) {
  uint64_t first_crc = 0xFFFFFFFFu;
  uint64_t second_crc = 0xFFFFFFFFu;
  uint64_t third_crc = 0xFFFFFFFFu;
  size_t index = 0;
  for (; index + 8 <= length; index += 8) {
    uint64_t first_word;
    uint64_t second_word;
    uint64_t third_word;
    memcpy(&first_word, first + index, sizeof first_word);
    memcpy(&second_word, second + index, sizeof second_word);
    memcpy(&third_word, third + index, sizeof third_word);
    first_crc = _mm_crc32_u64(first_crc, first_word);
    second_crc = _mm_crc32_u64(second_crc, second_word);
    third_crc = _mm_crc32_u64(third_crc, third_word);
  }
  uint32_t first_tail = (uint32_t)first_crc;
  uint32_t second_tail = (uint32_t)second_crc;
  uint32_t third_tail = (uint32_t)third_crc;
  for (; index < length; index++) {
    first_tail = _mm_crc32_u8(first_tail, first[index]);
    second_tail = _mm_crc32_u8(second_tail, second[index]);
    third_tail = _mm_crc32_u8(third_tail, third[index]);
  }
  out[0] = ~first_tail;
  out[1] = ~second_tail;
  out[2] = ~third_tail;
}
#endif

// ---------------------------------------------------------------------------------------------
// CRC-32C, three interleaved SSE4.2 streams over one buffer
// ---------------------------------------------------------------------------------------------
//
// One crc32 instruction waits three cycles for the previous one's result, but the CPU starts one
// every cycle: a single register runs at a third of the possible speed. So a long buffer is cut
// into rounds of three equal lanes, each lane's register runs in the same loop, and the three are
// joined at the end of each round with the identity (registers are raw, not inverted)
//   register(r, A then B) = shift_|B|(register(r, A)) ^ register(0, B),
// where shift_n(x) is x fed with n zero bytes: multiplication by x^(8n) modulo the polynomial,
// linear in x, so one table of 4 x 256 entries per lane length gives it in four look-ups. Long
// lanes keep the join rare on big buffers, short lanes let a few KiB use all three streams.

#define CRC32C_LONG_LANE_BYTES 8192u
#define CRC32C_SHORT_LANE_BYTES 256u

// crc32c_shift_long[k][b] = shift by one long lane of (b << 8k); the same for short lanes.
static uint32_t crc32c_shift_long[4][256];
static uint32_t crc32c_shift_short[4][256];

// a * b modulo the CRC-32C polynomial, in the reflected bit order of the register (bit 31 is
// the coefficient of x^0).
static uint32_t multiply_modulo_polynomial(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t mask = 1u << 31; mask != 0; mask >>= 1) {
    if (a & mask) product ^= b;
    b = (b & 1u) ? (b >> 1) ^ CRC32C_REFLECTED_POLYNOMIAL : b >> 1;
  }
  return product;
}

// x^(8 * byte_count) modulo the polynomial: the operator "feed byte_count zero bytes".
static uint32_t zero_bytes_operator(uint64_t byte_count) {
  uint32_t result = 1u << 31;       // x^0
  uint32_t power = 1u << (31 - 8);  // x^8, one zero byte
  for (uint64_t exponent = byte_count; exponent != 0; exponent >>= 1) {
    if (exponent & 1u) result = multiply_modulo_polynomial(result, power);
    power = multiply_modulo_polynomial(power, power);
  }
  return result;
}

static void build_shift_table(uint32_t table[4][256], uint32_t lane_bytes) {
  uint32_t operator_value = zero_bytes_operator(lane_bytes);
  for (int byte_index = 0; byte_index < 4; byte_index++) {
    for (uint32_t byte_value = 0; byte_value < 256; byte_value++) {
      table[byte_index][byte_value] =
          multiply_modulo_polynomial(operator_value, byte_value << (8 * byte_index));
    }
  }
}

static inline uint32_t shift_with_table(uint32_t table[4][256], uint32_t crc) {
  return table[0][crc & 0xFFu] ^ table[1][(crc >> 8) & 0xFFu] ^ table[2][(crc >> 16) & 0xFFu] ^
         table[3][crc >> 24];
}

#if LUNFS_HAVE_SSE42_PATH
// Rounds of three lanes of lane_bytes each (a multiple of 8) while the buffer has a whole round
// left; advances *bytes and *length past them. Inlined with a constant lane_bytes.
__attribute__((target("sse4.2"), always_inline)) static inline uint32_t crc32c_three_lane_rounds(
    uint32_t crc, const uint8_t **bytes, size_t *length, size_t lane_bytes,
    uint32_t shift_table[4][256]) {
  const uint8_t *cursor = *bytes;
  size_t remaining = *length;
  while (remaining >= 3 * lane_bytes) {
    uint64_t first_crc = crc;
    uint64_t second_crc = 0;
    uint64_t third_crc = 0;
    const uint8_t *lane_end = cursor + lane_bytes;
    do {
      uint64_t first_word;
      uint64_t second_word;
      uint64_t third_word;
      memcpy(&first_word, cursor, sizeof first_word);
      memcpy(&second_word, cursor + lane_bytes, sizeof second_word);
      memcpy(&third_word, cursor + 2 * lane_bytes, sizeof third_word);
      first_crc = _mm_crc32_u64(first_crc, first_word);
      second_crc = _mm_crc32_u64(second_crc, second_word);
      third_crc = _mm_crc32_u64(third_crc, third_word);
      cursor += 8;
    } while (cursor < lane_end);
    crc = shift_with_table(shift_table, (uint32_t)first_crc) ^ (uint32_t)second_crc;
    crc = shift_with_table(shift_table, crc) ^ (uint32_t)third_crc;
    cursor += 2 * lane_bytes;
    remaining -= 3 * lane_bytes;
  }
  *bytes = cursor;
  *length = remaining;
  return crc;
}

// The fast path: three streams for every whole round, one stream for what is left (under 768
// bytes). Same results as crc32c_update_with_sse42 and the tables for every input.
__attribute__((target("sse4.2"))) static uint32_t crc32c_update_interleaved_sse42(
    uint32_t crc, const uint8_t *bytes, size_t length) {
  if (length < 3 * CRC32C_SHORT_LANE_BYTES) return crc32c_update_with_sse42(crc, bytes, length);
  while (((uintptr_t)bytes & 7u) != 0) {
    crc = _mm_crc32_u8(crc, *bytes);
    bytes++;
    length--;
  }
  crc = crc32c_three_lane_rounds(crc, &bytes, &length, CRC32C_LONG_LANE_BYTES, crc32c_shift_long);
  crc =
      crc32c_three_lane_rounds(crc, &bytes, &length, CRC32C_SHORT_LANE_BYTES, crc32c_shift_short);
  return crc32c_update_with_sse42(crc, bytes, length);
}
#endif

typedef uint32_t (*crc32c_update_function)(uint32_t crc, const uint8_t *bytes, size_t length);

// crc32c_update is the fastest path this CPU has; crc32c_update_single_stream the one register
// path it replaced, kept for the benchmark (bench/kernels.mjs) and the agreement tests.
static crc32c_update_function crc32c_update = crc32c_update_with_tables;
static crc32c_update_function crc32c_update_single_stream = crc32c_update_with_tables;
static const char *crc32c_implementation_name = "slicing-by-8";
static bool crc32c_uses_sse42 = false;

// Runs once when the shared object is loaded, before any module instance (main thread or
// worker) is initialised, so the tables and the function choice are never written concurrently.
#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor))
#endif
static void initialise_kernels_once(void) {
  static int initialised = 0;
  if (initialised) return;
  initialised = 1;
  build_crc32c_tables();
  build_shift_table(crc32c_shift_long, CRC32C_LONG_LANE_BYTES);
  build_shift_table(crc32c_shift_short, CRC32C_SHORT_LANE_BYTES);
#if LUNFS_HAVE_SSE42_PATH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) {
    crc32c_update = crc32c_update_interleaved_sse42;
    crc32c_update_single_stream = crc32c_update_with_sse42;
    crc32c_implementation_name = "sse4.2-three-streams";
    crc32c_uses_sse42 = true;
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// The kernels as byte_jobs.c (the asynchronous forms) calls them; see kernels.h
// ---------------------------------------------------------------------------------------------

uint32_t lunfs_crc32c(uint32_t seed, const uint8_t *bytes, size_t length) {
  return length == 0 ? seed : ~crc32c_update(~seed, bytes, length);
}

void lunfs_crc32c_blocks(const uint8_t *bytes, size_t length, size_t block_bytes,
                         uint32_t *entries) {
  size_t block_count = length / block_bytes;
  size_t block = 0;
#if LUNFS_HAVE_SSE42_PATH
  if (crc32c_uses_sse42) {
    for (; block + 3 <= block_count; block += 3) {
      const uint8_t *start = bytes + block * block_bytes;
      crc32c_three_blocks_with_sse42(start, start + block_bytes, start + 2 * block_bytes,
                                     block_bytes, entries + block);
    }
  }
#endif
  for (; block < block_count; block++) {
    entries[block] = ~crc32c_update(~0u, bytes + block * block_bytes, block_bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// XOR parity
// ---------------------------------------------------------------------------------------------

// target[i] ^= source[i]; the two ranges must not overlap (the callers handle that).
static void xor_bytes_into(uint8_t *restrict target, const uint8_t *restrict source, size_t length) {
  size_t index = 0;
  for (; index + 32 <= length; index += 32) {
    uint64_t target_words[4];
    uint64_t source_words[4];
    memcpy(target_words, target + index, sizeof target_words);
    memcpy(source_words, source + index, sizeof source_words);
    target_words[0] ^= source_words[0];
    target_words[1] ^= source_words[1];
    target_words[2] ^= source_words[2];
    target_words[3] ^= source_words[3];
    memcpy(target + index, target_words, sizeof target_words);
  }
  for (; index + 8 <= length; index += 8) {
    uint64_t target_word;
    uint64_t source_word;
    memcpy(&target_word, target + index, sizeof target_word);
    memcpy(&source_word, source + index, sizeof source_word);
    target_word ^= source_word;
    memcpy(target + index, &target_word, sizeof target_word);
  }
  for (; index < length; index++) {
    target[index] ^= source[index];
  }
}

static bool ranges_overlap(const uint8_t *first, const uint8_t *second, size_t length) {
  uintptr_t first_start = (uintptr_t)first;
  uintptr_t second_start = (uintptr_t)second;
  return first_start < second_start + length && second_start < first_start + length;
}

// target ^= source with the source as it was before the call, whatever the overlap (the
// TypeScript twin's semantics). False only when a copy of a partly overlapping source could not
// be allocated; the target is then unchanged.
static bool xor_into_any_overlap(uint8_t *target, const uint8_t *source, size_t length) {
  if (length == 0) return true;
  if (target == source) {
    // x ^ x == 0 for every byte.
    memset(target, 0, length);
    return true;
  }
  if (!ranges_overlap(target, source, length)) {
    xor_bytes_into(target, source, length);
    return true;
  }
  uint8_t *source_copy = malloc(length);
  if (source_copy == NULL) return false;
  memcpy(source_copy, source, length);
  xor_bytes_into(target, source_copy, length);
  free(source_copy);
  return true;
}

// Slices of this many bytes stay in the first-level cache while every source is XORed into them.
#define XOR_SLICE_BYTES 16384u

bool lunfs_xor_sources_into(uint8_t *target, const uint8_t *const *sources, size_t source_count,
                            size_t length) {
  bool any_source_overlaps_target = false;
  for (size_t source = 0; source < source_count; source++) {
    if (length > 0 && ranges_overlap(target, sources[source], length)) {
      any_source_overlaps_target = true;
    }
  }
  if (any_source_overlaps_target) {
    // One source after the other, each seeing the target as the earlier ones left it.
    for (size_t source = 0; source < source_count; source++) {
      if (!xor_into_any_overlap(target, sources[source], length)) return false;
    }
    return true;
  }
  for (size_t start = 0; start < length; start += XOR_SLICE_BYTES) {
    size_t slice_bytes = length - start < XOR_SLICE_BYTES ? length - start : XOR_SLICE_BYTES;
    for (size_t source = 0; source < source_count; source++) {
      xor_bytes_into(target + start, sources[source] + start, slice_bytes);
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Argument helpers (shared with byte_jobs.c through kernels.h)
// ---------------------------------------------------------------------------------------------

napi_value lunfs_throw_type_error(napi_env env, const char *format, ...) {
  bool exception_pending = false;
  if (napi_is_exception_pending(env, &exception_pending) == napi_ok && !exception_pending) {
    char message[240];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    napi_throw_type_error(env, NULL, message);
  }
  return NULL;
}

bool lunfs_get_byte_array(napi_env env, napi_value value, const char *function_name,
                          const char *role, uint8_t **bytes, size_t *length) {
  bool is_typed_array = false;
  napi_typedarray_type element_type;
  size_t element_count = 0;
  void *data = NULL;
  if (napi_is_typedarray(env, value, &is_typed_array) != napi_ok || !is_typed_array ||
      napi_get_typedarray_info(env, value, &element_type, &element_count, &data, NULL, NULL) !=
          napi_ok ||
      element_type != napi_uint8_array) {
    lunfs_throw_type_error(env, "%s: %s must be a Buffer or Uint8Array", function_name, role);
    return false;
  }
  // A detached or empty array may report a NULL data pointer; it has no bytes to touch.
  *bytes = element_count == 0 ? NULL : (uint8_t *)data;
  *length = element_count;
  return true;
}

bool lunfs_get_crc32c_seed(napi_env env, napi_value value, const char *function_name,
                           uint32_t *seed) {
  napi_valuetype seed_type = napi_undefined;
  if (value != NULL && napi_typeof(env, value, &seed_type) != napi_ok) {
    lunfs_throw_type_error(env, "%s: could not read the seed", function_name);
    return false;
  }
  *seed = 0;
  if (value == NULL || seed_type == napi_undefined) return true;
  double seed_number = 0;
  if (seed_type != napi_number || napi_get_value_double(env, value, &seed_number) != napi_ok ||
      !(seed_number >= 0 && seed_number <= 4294967295.0) || floor(seed_number) != seed_number) {
    lunfs_throw_type_error(
        env, "%s: seed must be an integer from 0 to 4294967295 (a previous crc32c result)",
        function_name);
    return false;
  }
  *seed = (uint32_t)seed_number;
  return true;
}

bool lunfs_get_crc32c_blocks_arguments(napi_env env, const napi_value arguments[3],
                                       const char *function_name, uint8_t **bytes, size_t *length,
                                       size_t *block_bytes, uint32_t **entries) {
  if (!lunfs_get_byte_array(env, arguments[0], function_name, "data", bytes, length)) {
    return false;
  }
  napi_valuetype block_bytes_type = napi_undefined;
  double block_bytes_number = 0;
  if (napi_typeof(env, arguments[1], &block_bytes_type) != napi_ok ||
      block_bytes_type != napi_number ||
      napi_get_value_double(env, arguments[1], &block_bytes_number) != napi_ok ||
      !(block_bytes_number >= 1 && block_bytes_number <= 4294967295.0) ||
      floor(block_bytes_number) != block_bytes_number) {
    lunfs_throw_type_error(env, "%s: blockBytes must be an integer from 1 to 4294967295",
                           function_name);
    return false;
  }
  *block_bytes = (size_t)block_bytes_number;
  bool is_typed_array = false;
  napi_typedarray_type element_type;
  size_t entry_count = 0;
  void *entries_data = NULL;
  if (napi_is_typedarray(env, arguments[2], &is_typed_array) != napi_ok || !is_typed_array ||
      napi_get_typedarray_info(env, arguments[2], &element_type, &entry_count, &entries_data, NULL,
                               NULL) != napi_ok ||
      element_type != napi_uint32_array) {
    lunfs_throw_type_error(env, "%s: out must be a Uint32Array", function_name);
    return false;
  }
  if (*length % *block_bytes != 0) {
    lunfs_throw_type_error(env, "%s: data length %zu is not a multiple of blockBytes %zu",
                           function_name, *length, *block_bytes);
    return false;
  }
  size_t block_count = *length / *block_bytes;
  if (entry_count < block_count) {
    lunfs_throw_type_error(env, "%s: out has %zu entries, fewer than the %zu blocks of data",
                           function_name, entry_count, block_count);
    return false;
  }
  // A Uint32Array is always 4-byte aligned in its ArrayBuffer, so the entries can be stored as is.
  *entries = (uint32_t *)entries_data;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Exported functions
// ---------------------------------------------------------------------------------------------

static napi_value crc32c_entry(napi_env env, napi_callback_info info,
                               crc32c_update_function update) {
  size_t argument_count = 0;
  napi_value arguments[2];
  if (!lunfs_get_arguments(env, info, arguments, 2, &argument_count, 1, "crc32c",
                           "data must be a Buffer or Uint8Array")) {
    return NULL;
  }
  uint8_t *bytes = NULL;
  size_t length = 0;
  uint32_t seed = 0;
  if (!lunfs_get_byte_array(env, arguments[0], "crc32c", "data", &bytes, &length) ||
      !lunfs_get_crc32c_seed(env, argument_count >= 2 ? arguments[1] : NULL, "crc32c", &seed)) {
    return NULL;
  }
  uint32_t crc = length == 0 ? seed : ~update(~seed, bytes, length);
  napi_value result;
  if (napi_create_uint32(env, crc, &result) != napi_ok) {
    return lunfs_throw_type_error(env, "crc32c: could not create the result");
  }
  return result;
}

static napi_value crc32c_export(napi_env env, napi_callback_info info) {
  return crc32c_entry(env, info, crc32c_update);
}

static napi_value crc32c_with_tables_export(napi_env env, napi_callback_info info) {
  return crc32c_entry(env, info, crc32c_update_with_tables);
}

static napi_value crc32c_single_stream_export(napi_env env, napi_callback_info info) {
  return crc32c_entry(env, info, crc32c_update_single_stream);
}

// crc32cBlocks(data, blockBytes, out): out[i] = crc32c(data[i * blockBytes, (i + 1) * blockBytes))
// for every block, each from seed 0. data.length must be a multiple of blockBytes and out must
// have room for every block (entries past the last block are left alone). One N-API call for a
// whole request instead of one per block: the per-call overhead is what it saves.
static napi_value crc32c_blocks_export(napi_env env, napi_callback_info info) {
  size_t argument_count = 0;
  napi_value arguments[3];
  if (!lunfs_get_arguments(env, info, arguments, 3, &argument_count, 3, "crc32cBlocks",
                           "expected three arguments (data, blockBytes, out)")) {
    return NULL;
  }
  uint8_t *bytes = NULL;
  size_t length = 0;
  size_t block_bytes = 0;
  uint32_t *entries = NULL;
  if (!lunfs_get_crc32c_blocks_arguments(env, arguments, "crc32cBlocks", &bytes, &length,
                                         &block_bytes, &entries)) {
    return NULL;
  }
  lunfs_crc32c_blocks(bytes, length, block_bytes, entries);
  return NULL;
}

static napi_value xor_into_export(napi_env env, napi_callback_info info) {
  size_t argument_count = 0;
  napi_value arguments[2];
  if (!lunfs_get_arguments(env, info, arguments, 2, &argument_count, 2, "xorInto",
                           "expected two arguments (target, source)")) {
    return NULL;
  }
  uint8_t *target = NULL;
  uint8_t *source = NULL;
  size_t target_length = 0;
  size_t source_length = 0;
  if (!lunfs_get_byte_array(env, arguments[0], "xorInto", "target", &target, &target_length) ||
      !lunfs_get_byte_array(env, arguments[1], "xorInto", "source", &source, &source_length)) {
    return NULL;
  }
  if (target_length != source_length) {
    return lunfs_throw_type_error(
        env,
        "xorInto: target and source must have the same length (target %zu bytes, source %zu "
        "bytes)",
        target_length, source_length);
  }
  if (!xor_into_any_overlap(target, source, target_length)) {
    napi_throw_error(env, NULL, "xorInto: out of memory copying an overlapping source");
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// Module registration
// ---------------------------------------------------------------------------------------------

bool lunfs_register_os_calls(napi_env env, napi_value exports); // os_calls.c

bool lunfs_get_arguments(napi_env env, napi_callback_info info, napi_value *arguments,
                         size_t capacity, size_t *count, size_t minimum,
                         const char *function_name, const char *too_few) {
  for (size_t index = 0; index < capacity; index++) arguments[index] = NULL;
  *count = capacity;
  if (napi_get_cb_info(env, info, count, arguments, NULL, NULL) != napi_ok) {
    lunfs_throw_type_error(env, "%s: could not read the arguments", function_name);
    return false;
  }
  if (*count < minimum) {
    lunfs_throw_type_error(env, "%s: %s", function_name, too_few);
    return false;
  }
  return true;
}

bool lunfs_export_function(napi_env env, napi_value exports, const char *name,
                           napi_callback callback) {
  napi_value function;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, NULL, &function) == napi_ok &&
         napi_set_named_property(env, exports, name, function) == napi_ok;
}

NAPI_MODULE_INIT() {
  initialise_kernels_once();
  napi_value implementation_name;
  if (!lunfs_export_function(env, exports, "crc32c", crc32c_export) ||
      !lunfs_export_function(env, exports, "crc32cWithTables", crc32c_with_tables_export) ||
      !lunfs_export_function(env, exports, "crc32cSingleStream", crc32c_single_stream_export) ||
      !lunfs_export_function(env, exports, "crc32cBlocks", crc32c_blocks_export) ||
      !lunfs_export_function(env, exports, "xorInto", xor_into_export) ||
      !lunfs_register_byte_jobs(env, exports) || !lunfs_register_os_calls(env, exports) ||
      napi_create_string_utf8(env, crc32c_implementation_name, NAPI_AUTO_LENGTH,
                              &implementation_name) != napi_ok ||
      napi_set_named_property(env, exports, "crc32cImplementation", implementation_name) !=
          napi_ok) {
    napi_throw_error(env, NULL, "lunfs_native: could not register the exports");
    return NULL;
  }
  return exports;
}
