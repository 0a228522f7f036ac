import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/domain/errors.js';
import type { DaemonHandle, PostgresRequestManager } from '../../src/manager/request-manager.js';
import { type MockBehaviour, type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { batchObject } from '../../src/server/objects.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';

let db: TestDb;
let mock: MockUpstream;
let manager: PostgresRequestManager;
let daemon: DaemonHandle;

beforeAll(async () => {
  db = await createTestDb();
  mock = await startMockUpstream();
  mock.setBehaviour((req): MockBehaviour => {
    if (req.customId?.startsWith('flaky-') && req.attemptNo <= 2) return { kind: 'status', status: 503 };
    if (req.customId?.startsWith('bad-')) return { kind: 'status', status: 400, body: '{}' };
    return { kind: 'ok' };
  });
  manager = db.manager({ pollIntervalMs: 100, backoffMs: 5, maxBackoffMs: 10, logger: () => {} });
  daemon = await manager.run();
});
afterAll(async () => {
  await daemon.stop();
  await mock.close();
  await db.close();
});

async function file(prefix: string, n = 3): Promise<string> {
  return manager.createFile('in.jsonl', null, mockTemplates(mock, n, { prefix }));
}

describe('batches without a deadline', () => {
  it('createBatch(fileId, { completionWindow: null }) has no deadline, is sent, retried and completes', async () => {
    const batchId = await manager.createBatch(await file('flaky-'), { completionWindow: null });
    const batch = await manager.getBatch(batchId);
    expect(batch).toMatchObject({ completionWindow: null, expiresAt: null });
    expect(['validating', 'in_progress']).toContain(batch.status);
    const status = await waitForBatchEnd(manager, batchId);
    expect(status).toMatchObject({ status: 'completed', completedRequests: 3, expiresAt: null });
    const requests = await manager.getBatchRequests(batchId);
    expect(requests.map((r) => [r.state, r.attempt])).toEqual([
      ['completed', 3],
      ['completed', 3],
      ['completed', 3],
    ]);
  });

  it('without the option a batch gets 24 hours, unless the manager says otherwise', async () => {
    const fileId = await file('ok-', 1);
    const timed = await manager.getBatch(await manager.createBatch(fileId));
    expect(timed.completionWindow).toBe('24h');
    expect(timed.expiresAt!.getTime() - timed.createdAt.getTime()).toBe(24 * 3_600_000);

    const untimed = db.manager({ defaultCompletionWindow: null });
    const b = await untimed.getBatch(await untimed.createBatch(fileId));
    expect(b).toMatchObject({ completionWindow: null, expiresAt: null });
    // An explicit window still wins over the manager's default.
    const explicit = await untimed.getBatch(await untimed.createBatch(fileId, { completionWindow: '2h' }));
    expect(explicit.completionWindow).toBe('2h');
    await waitForBatchEnd(manager, b.id);
    await waitForBatchEnd(manager, explicit.id);
    await waitForBatchEnd(manager, timed.id);
  });

  it('bad windows are refused with a typed error', async () => {
    await expect(manager.createBatch(await file('x-', 1), { completionWindow: 'soon' })).rejects.toThrow(
      ValidationError,
    );
    expect(() => db.manager({ defaultCompletionWindow: 'forever' })).toThrow(ValidationError);
  });

  it('can be cancelled, and its failed requests retried', async () => {
    const idle = db.manager({ defaultCompletionWindow: null });
    // A model no daemon limit lets through: its requests stay pending until the cancel.
    await idle.setModelConcurrency('gpt-held', 0);
    const held = await idle.createBatch(
      await idle.createFile(
        'held.jsonl',
        null,
        mockTemplates(mock, 2, { model: 'gpt-held', prefix: 'held-' }),
      ),
    );
    const cancelled = await idle.cancelBatch(held);
    expect(cancelled.status === 'cancelled' || cancelled.status === 'cancelling').toBe(true);
    expect((await waitForBatchEnd(idle, held)).status).toBe('cancelled');

    const failing = await idle.createBatch(await file('bad-', 2));
    expect((await waitForBatchEnd(idle, failing)).failedRequests).toBe(2);
    mock.setBehaviour(() => ({ kind: 'ok' }));
    expect(await idle.retryFailedRequests(failing)).toBe(2);
    const again = await waitForBatchEnd(idle, failing);
    expect(again).toMatchObject({ status: 'completed', completedRequests: 2, failedRequests: 0 });
  });

  it('the API shows such a batch with completion_window "none" and expires_at null', async () => {
    const id = await manager.createBatch(await file('api-', 1), { completionWindow: null });
    const status = await waitForBatchEnd(manager, id);
    const object = batchObject(await manager.getBatch(id), status);
    expect(object).toMatchObject({ completion_window: 'none', expires_at: null, status: 'completed' });
  });
});
