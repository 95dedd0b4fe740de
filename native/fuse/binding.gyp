# Build description for lunfs's own FUSE front (issue 12): libfuse3's low-level API under N-API.
# Kept apart from native/binding.gyp so that a machine without libfuse3-dev still builds the
# kernels: the Makefile runs this second build and reports its failure; lunfs then falls back to
# fuse-native. Built by: npx node-gyp rebuild --directory native/fuse
# Output: native/fuse/build/Release/lunfs_fuse.node, loaded by src/fuse/native-front.ts.
{
  "targets": [
    {
      "target_name": "lunfs_fuse",
      "sources": ["../src/fuse_front.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-std=gnu11", "-Wall", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)"]
    }
  ]
}
