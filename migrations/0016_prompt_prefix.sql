-- Shared prompts go together, version 16 (issue 15 item 3, docs/decisions/0008).
-- Each template and request keeps the hash of its prompt prefix (src/domain/prompt-prefix.ts,
-- computed at ingest; NULL: no prefix). The claim takes a batch's pending rows of a model in prefix
-- order, then line order (src/db/sql/claim.ts), so requests sharing a system prompt reach the
-- upstream together and its prefix cache serves them. int8: 8 bytes per row, nothing when NULL.
ALTER TABLE request_templates ADD COLUMN prefix_hash bigint;
ALTER TABLE requests ADD COLUMN prefix_hash bigint;

-- The claim's index gains the prefix between the route and the line (an ordered probe per batch,
-- model and route, as before). Rows written before this version have no prefix and keep line order.
DROP INDEX requests_pending_route_idx;
CREATE INDEX requests_pending_route_idx ON requests (batch_id, model, route_id, prefix_hash, line_number)
  WHERE state = 'pending';
