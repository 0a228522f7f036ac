import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, TEST_DATABASE_URL, type TestDb } from '../support/db.js';
import { createBatch, mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';
import { runCli } from './support/cli.js';

// Child processes on a shared 2-core machine: allow for a slow start under load.
// A deadline for hangs, not a speed check: 152 s were seen at load 30 on 2 cores.
vi.setConfig({ testTimeout: 400_000 });

let db: TestDb;
let mock: MockUpstream;
beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock.close();
  await db.close();
});

const quiet = { logger: () => {} };

async function count(sql: string, values: unknown[]): Promise<number> {
  return (await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, values)).rows[0]!.n;
}

describe('fusillade purge --older-than 0s', () => {
  it('removes the finished batches with their requests, templates, output and error files; the running one finishes untouched', async () => {
    const m = db.manager(quiet);
    const s = m.schema;
    // Two finished batches: one completed (an output file), one cancelled (an error file).
    const daemon = await m.run({ pollIntervalMs: 50 });
    const done = await createBatch(m, mockTemplates(mock, 30, { prefix: 'done-' }));
    await waitForBatchEnd(m, done);
    await daemon.stop();
    const cancelled = await createBatch(m, mockTemplates(mock, 20, { prefix: 'cancel-' }));
    await m.cancelBatch(cancelled);
    await m.finalizeBatch(cancelled);
    // The running batch: queued while no daemon runs.
    const running = await createBatch(m, mockTemplates(mock, 25, { prefix: 'run-' }));
    const finished = [await m.getBatch(done), await m.getBatch(cancelled)];
    expect(finished.map((b) => b.status)).toEqual(['completed', 'cancelled']);
    const outputs = [finished[0]!.outputFileId!, finished[1]!.errorFileId!];
    const inputs = finished.map((b) => b.fileId);
    const runningFile = (await m.getBatch(running)).fileId;
    expect((await m.getBatch(running)).status).toBe('in_progress');
    const dbArgs = ['--database-url', TEST_DATABASE_URL, '--schema', db.schema];

    const preview = await runCli(['purge', '--older-than', '0s', '--dry-run', ...dbArgs]);
    expect(preview.stderr).toBe('');
    expect(preview.code).toBe(0);
    expect(preview.stdout.trim()).toBe(
      'would remove 2 batches (50 requests), 2 output and error files, 2 input files (50 templates)',
    );
    expect(await count(`${s}.batches`, [])).toBe(3);

    const purged = await runCli(['purge', '--older-than', '0s', ...dbArgs]);
    expect(purged.stderr).toBe('');
    expect(purged.code).toBe(0);
    expect(purged.stdout.trim()).toBe(
      'removed 2 batches (50 requests), 2 output and error files, 2 input files (50 templates)',
    );
    const gone = [done, cancelled];
    expect(await count(`${s}.batches WHERE id = ANY($1)`, [gone])).toBe(0);
    expect(await count(`${s}.requests WHERE batch_id = ANY($1)`, [gone])).toBe(0);
    expect(await count(`${s}.batch_models WHERE batch_id = ANY($1)`, [gone])).toBe(0);
    expect(await count(`${s}.request_templates WHERE file_id = ANY($1)`, [inputs])).toBe(0);
    expect(await count(`${s}.files WHERE id = ANY($1)`, [[...inputs, ...outputs]])).toBe(0);
    // Every output and error file the two batches made, whichever they made, is gone.
    expect(await count(`${s}.files WHERE source_batch_id = ANY($1)`, [gone])).toBe(0);
    expect(await count(`${s}.request_failures WHERE batch_id = ANY($1)`, [gone])).toBe(0);

    // The running batch and its input are untouched, and it finishes.
    expect(await count(`${s}.requests WHERE batch_id = $1 AND state = 'pending'`, [running])).toBe(25);
    expect(await count(`${s}.request_templates WHERE file_id = $1`, [runningFile])).toBe(25);
    expect(await count(`${s}.files WHERE id = $1 AND deleted_at IS NULL`, [runningFile])).toBe(1);
    expect((await m.getBatch(running)).status).toBe('in_progress');
    const again = await m.run({ pollIntervalMs: 50 });
    const status = await waitForBatchEnd(m, running);
    await again.stop();
    expect([status.completedRequests, status.failedRequests]).toEqual([25, 0]);
    const lines: string[] = [];
    for await (const line of m.getBatchResults(running)) lines.push(line);
    expect(lines).toHaveLength(25);

    // Nothing is left to purge but the batch that just finished.
    const rest = await runCli(['purge', '--dry-run', ...dbArgs]);
    expect(rest.stdout.trim()).toBe(
      'would remove 0 batches (0 requests), 0 output and error files, 0 input files (0 templates)',
    );
  });
});
