import { type ApiClient, type BatchObject, FINAL_STATUSES } from './api-client.js';
import { ProgressDisplay } from './progress.js';
import { shutdownSignal } from './signals.js';

/** Polls a batch (OpenAI id) until it is final, showing progress; stops early on SIGINT/SIGTERM. */
export async function waitForBatch(
  client: ApiClient,
  batchId: string,
): Promise<{ batch: BatchObject } | { signal: NodeJS.Signals }> {
  const shutdown = shutdownSignal();
  const progress = new ProgressDisplay(process.stdout);
  let received: NodeJS.Signals | undefined;
  void shutdown.signal.then((s) => {
    received = s;
  });
  try {
    for (;;) {
      const batch = await client.json<BatchObject>('GET', `/batches/${encodeURIComponent(batchId)}`);
      const c = batch.request_counts;
      const counts = { total: c.total, completed: c.completed, failed: c.failed, canceled: 0 };
      if (FINAL_STATUSES.has(batch.status)) {
        progress.finish(counts);
        return { batch };
      }
      if (received) {
        progress.interrupt();
        return { signal: received };
      }
      progress.update(counts);
      await Promise.race([new Promise((r) => setTimeout(r, 500)), shutdown.signal]);
    }
  } finally {
    shutdown.dispose();
  }
}
