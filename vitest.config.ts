import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A deadline for hangs, not a speed check: the suite must pass on a loaded 2-core machine.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    // Two cores on CI: files run in parallel forks, each test file creates its own schema.
    pool: 'forks',
    maxWorkers: 3,
    reporters: ['default'],
  },
});
