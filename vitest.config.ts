import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end tests share the kernel's loop devices and FUSE: run files one at a time there.
    fileParallelism: true,
    pool: 'forks',
  },
});
