import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A deadline for hangs, not a speed check: the suite must pass on a loaded 2-core machine.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    // expect.poll waits for a condition; its 1 s default is a speed check on a loaded machine.
    expect: { poll: { timeout: 30_000, interval: 50 } },
    // Two cores on CI: files run in parallel forks, each test file creates its own schema.
    pool: 'forks',
    maxWorkers: 3,
    reporters: ['default'],
  },
});
