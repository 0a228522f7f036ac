export type { MigrateOptions } from './db/migrate.js';
export { migrate } from './db/migrate.js';
export type { PurgeOptions, PurgeReport } from './db/purge.js';
export type { DaemonConfig, UpstreamRoute, UpstreamRouter } from './dispatch/config.js';
export { DEFAULT_DAEMON_CONFIG } from './dispatch/config.js';
export type { DaemonHandle, Limiter, UpstreamClient, UpstreamRequest } from './dispatch/interfaces.js';
export type { LogEntry, Logger, LogLevel } from './dispatch/logger.js';
export type { RoutingConfig } from './dispatch/upstream-routing.js';
export { createUpstreamRouter, normalizeBaseUrl } from './dispatch/upstream-routing.js';
export type { BatchInputLimits, BatchInputLine } from './domain/batch-input.js';
export { BATCH_ENDPOINTS, BatchInputParser } from './domain/batch-input.js';
export type { BatchLifecycleStatus } from './domain/batch-lifecycle.js';
export * from './domain/errors.js';
export { REQUEST_STATES, TERMINAL_STATES } from './domain/request-state.js';
export type { AttemptOutcome } from './domain/retry.js';
export type { RequestTemplateInput } from './domain/templates.js';
export * from './domain/types.js';
export type { BatchCost, ModelPrice, ModelUsage, UsageTotals } from './domain/usage.js';
export { batchCost } from './domain/usage.js';
export type { ManagerConfig, OwnerScope } from './manager/request-manager.js';
export { PostgresRequestManager } from './manager/request-manager.js';
export type {
  BehaviourFn,
  MockBehaviour,
  MockRequestInfo,
  MockUpstream,
  MockUpstreamOptions,
} from './mock-upstream/server.js';
export { startMockUpstream } from './mock-upstream/server.js';
export type { FusilladeServer, ServerOptions } from './server/server.js';
export { createServer } from './server/server.js';
export type { ApiKeyInfo, CreatedApiKey } from './store/api-keys.js';
export { createApiKey, listApiKeys, revokeApiKey, verifyApiKey } from './store/api-keys.js';
export type { TemplateItem } from './store/files/files.js';
export type { OwnerWeight } from './store/owner-weights.js';
export { OwnerWeights } from './store/owner-weights.js';
