import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';

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
  };
}
