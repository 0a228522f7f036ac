/**
 * The batch statuses moved to batch-lifecycle.ts (the state machine, its transitions and SQL).
 * This module re-exports them while imports elsewhere move; import from batch-lifecycle.js.
 */
export * from './batch-lifecycle.js';
