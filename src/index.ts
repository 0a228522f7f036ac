export type { DaemonConfig, UpstreamRoute, UpstreamRouter } from './daemon/config.js';
export { DEFAULT_DAEMON_CONFIG } from './daemon/config.js';
export type { Limiter } from './daemon/limiter.js';
export type { LogEntry, Logger, LogLevel } from './daemon/logger.js';
export type { UpstreamClient, UpstreamRequest } from './daemon/upstream-client.js';
export type { BatchInputLimits, BatchInputLine } from './domain/batch-input.js';
export { BATCH_ENDPOINTS, BatchInputParser } from './domain/batch-input.js';
export type { BatchLifecycleStatus } from './domain/batch-lifecycle.js';
export * from './domain/errors.js';
export { REQUEST_STATES, TERMINAL_STATES } from './domain/request-state.js';
export type { AttemptOutcome } from './domain/retry.js';
export type { RequestTemplateInput } from './domain/templates.js';
export * from './domain/types.js';
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
export type { RoutingConfig } from './server/upstream-routing.js';
export { createUpstreamRouter, normalizeBaseUrl } from './server/upstream-routing.js';
export type { ApiKeyInfo, CreatedApiKey } from './store/api-keys.js';
export { createApiKey, listApiKeys, revokeApiKey, verifyApiKey } from './store/api-keys.js';
export type { TemplateItem } from './store/files.js';
export type { MigrateOptions } from './store/migrate.js';
export { migrate } from './store/migrate.js';
export type { PurgeOptions, PurgeReport } from './store/purge.js';
export type { DaemonHandle, ManagerConfig, OwnerScope } from './store/request-manager.js';
export { PostgresRequestManager } from './store/request-manager.js';
