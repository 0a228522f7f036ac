/**
 * OpenAI-style ids over the store's UUIDs: `file-<32 hex>` and `batch_<32 hex>` (and Anthropic's
 * `msgbatch_<32 hex>`). Anything that does
 * not decode cannot exist, so routes answer 404 for it.
 */

const HEX32 = /^[0-9a-f]{32}$/;

function hex(uuid: string): string {
  return uuid.replace(/-/g, '').toLowerCase();
}

function uuidOf(h: string): string | null {
  if (!HEX32.test(h)) return null;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export const fileId = (uuid: string): string => `file-${hex(uuid)}`;
export const batchId = (uuid: string): string => `batch_${hex(uuid)}`;
/** Anthropic's message batch id over the same batch UUID: `msgbatch_<32 hex>`. */
export const messageBatchId = (uuid: string): string => `msgbatch_${hex(uuid)}`;
export const batchRequestId = (uuid: string): string => `batch_req_${hex(uuid)}`;

export function parseFileId(id: string | null | undefined): string | null {
  return typeof id === 'string' && id.startsWith('file-') ? uuidOf(id.slice(5)) : null;
}

export function parseBatchId(id: string | null | undefined): string | null {
  return typeof id === 'string' && id.startsWith('batch_') ? uuidOf(id.slice(6)) : null;
}

export function parseMessageBatchId(id: string | null | undefined): string | null {
  return typeof id === 'string' && id.startsWith('msgbatch_') ? uuidOf(id.slice(9)) : null;
}
