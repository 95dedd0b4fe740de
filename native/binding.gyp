# Build description for the lunfs native kernels (CRC-32C, XOR parity, copy; synchronous in
# lunfs_native.c, as libuv thread-pool work in byte_jobs.c) and the OS calls Node lacks (flock,
# SO_PEERCRED): one plain N-API addon written in C. Built by: npx node-gyp rebuild --directory native
# (add "-DLUNFS_PORTABLE_ONLY" to cflags to build only the portable C paths, as on non-x86).
# Output: native/build/Release/lunfs_native.node, loaded by src/native/native-kernels.ts.
{
  "targets": [
    {
      "target_name": "lunfs_native",
      "sources": ["src/lunfs_native.c", "src/byte_jobs.c", "src/os_calls.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O3", "-std=c11"],
      "cflags!": ["-O0", "-O1", "-O2"],
      "xcode_settings": {
        "GCC_OPTIMIZATION_LEVEL": "3",
        "OTHER_CFLAGS": ["-std=c11"]
      }
    }
  ]
}
