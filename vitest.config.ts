import { defineConfig } from 'vitest/config';

/**
 * The API tests through the openai client that the `pgbouncer` project runs a second time, with
 * the server's pool behind a PgBouncer in transaction mode of each file's own and the in-process
 * daemon's session direct (test/server/support.ts, FUSILLADE_TEST_PGBOUNCER). A representative
 * set, not all of test/server: the four take ~100 s of test time under load (about 40 s of the
 * suite's wall time over 3 workers); all eight openai-client files would double that for
 * statements these already send. api: files, batches, idempotent create, pagination, cancel,
 * 404s of other owners, a download through COPY abandoned mid-way; e2e: upload to output and
 * error files through the daemon woken by NOTIFY; streams: streamed answers reassembled, retries;
 * validation: refused uploads and creates that leave nothing behind (rolled-back transactions).
 */
const THROUGH_PGBOUNCER = [
  'test/server/api.test.ts',
  'test/server/e2e.test.ts',
  'test/server/streams.test.ts',
  'test/server/validation.test.ts',
];

export default defineConfig({
  test: {
    // A deadline for hangs, not a speed check: the suite must pass on a loaded 2-core machine.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    // expect.poll waits for a condition; its 1 s default is a speed check on a loaded machine.
    expect: { poll: { timeout: 30_000, interval: 50 } },
    // Two cores on CI: files run in parallel forks, each test file creates its own schema.
    pool: 'forks',
    maxWorkers: 3,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'default', include: ['test/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'pgbouncer',
          include: THROUGH_PGBOUNCER,
          env: { FUSILLADE_TEST_PGBOUNCER: '1' },
        },
      },
    ],
  },
});
