import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { PostgresRequestManager } from '../manager/request-manager.js';

/**
 * The server's Prometheus registry. The daemon running in the same process registers its metrics
 * here too (daemonConfig.metricsRegistry), so /metrics is one exposition without duplicates.
 */
export interface ServerMetrics {
  registry: Registry;
  requests: Counter<'method' | 'route' | 'status'>;
  duration: Histogram<'method' | 'route'>;
  uploadedLines: Counter;
  uploadedBytes: Counter;
  /** Batches created over the API, by wire format: `openai` (/v1/batches) or `anthropic` (/v1/messages/batches). */
  batchesCreated: Counter<'api'>;
  /** Requests in those batches, by wire format. */
  batchRequestsCreated: Counter<'api'>;
}

export function createServerMetrics(): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({
      name: 'fusillade_http_requests_total',
      help: 'API requests answered, by method, route pattern and status',
      labelNames: ['method', 'route', 'status'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'fusillade_http_request_duration_seconds',
      help: 'Time to answer an API request (downloads: until the last byte)',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [registry],
    }),
    uploadedLines: new Counter({
      name: 'fusillade_uploaded_lines_total',
      help: 'Request lines accepted in uploaded batch input files',
      registers: [registry],
    }),
    uploadedBytes: new Counter({
      name: 'fusillade_uploaded_bytes_total',
      help: 'Bytes of accepted batch input files',
      registers: [registry],
    }),
    batchesCreated: new Counter({
      name: 'fusillade_batches_created_total',
      help: 'Batch creations answered by the API (an idempotent repeat counts again), by wire format (openai: /v1/batches, anthropic: /v1/messages/batches)',
      labelNames: ['api'],
      registers: [registry],
    }),
    batchRequestsCreated: new Counter({
      name: 'fusillade_batch_requests_created_total',
      help: 'Requests of the batches created over the API, by wire format',
      labelNames: ['api'],
      registers: [registry],
    }),
  };
}

/**
 * fusillade_batches_waiting_for_daemon: live batches with requests pending on an upstream (and key)
 * no live daemon can send, read from the database at each scrape (one query over the live batches).
 * No labels: upstream URLs are the users' own and unbounded; the batch's `errors` names them. A
 * failed or slow (2 s) read keeps the last value: the scrape must not fail or hang with the database.
 */
export function registerWaitingGauge(registry: Registry, manager: PostgresRequestManager): void {
  new Gauge({
    name: 'fusillade_batches_waiting_for_daemon',
    help: 'Live batches whose pending requests no live daemon can send (their upstream or key is served by none)',
    registers: [registry],
    async collect() {
      let timer: NodeJS.Timeout | undefined;
      try {
        const n = await Promise.race([
          manager.apiReads.waitingBatches(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('timeout')), 2000);
          }),
        ]);
        this.set(n);
      } catch {
        // keep the last value
      } finally {
        clearTimeout(timer);
      }
    },
  });
}
