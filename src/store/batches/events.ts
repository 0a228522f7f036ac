import { eventsChannel } from '../../db/schema.js';
import type { BatchEvents } from './batches.js';

export type BatchEvent = Parameters<BatchEvents['notify']>[1];

/** Batch events over NOTIFY on the schema's channel; delivered when the transaction commits. */
export function notifyEvents(schemaName: string): BatchEvents {
  const channel = eventsChannel(schemaName);
  return {
    async notify(client, event) {
      await client.query('SELECT pg_notify($1, $2)', [channel, JSON.stringify(event)]);
    },
  };
}
