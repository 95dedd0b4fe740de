import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Generous: these only catch a hang. Two test files run at once (below), and on a 2-core
    // machine an end-to-end test then takes up to 3x its time alone.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    // Two files at a time: most of an end-to-end test's time is spent waiting on other processes
    // (mounts, mkfs, fio, the CLI), so the suite's wall time falls while each sandbox
    // (test/e2e/support.ts: own directories, loop devices and mounts) keeps tests apart.
    fileParallelism: true,
    pool: 'forks',
    maxWorkers: 2,
  },
});
