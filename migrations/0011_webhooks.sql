-- Webhooks (src/webhooks/): an owner's receiver endpoints, and the outbox of deliveries.

-- An owner's receiver. `secret` is the Standard Webhooks signing secret (whsec_<base64>): signing
-- needs it in clear, so it is kept as given, shown once at creation and never listed or logged.
-- `failures` counts consecutive failed attempts since the last success (`failing_since` is when the
-- streak began); an endpoint that keeps failing is disabled (disabled_at) and receives nothing more
-- until it is enabled again. Removal is soft (deleted_at), so deliveries keep their endpoint.
CREATE TABLE webhook_endpoints (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner           text NOT NULL CHECK (owner <> ''),
  url             text NOT NULL,
  events          text[] NOT NULL CHECK (cardinality(events) > 0 AND events <@ ARRAY[
                    'batch.completed', 'batch.failed', 'batch.expired', 'batch.cancelled']::text[]),
  secret          text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  failures        integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
  failing_since   timestamptz,
  last_success_at timestamptz,
  last_failure_at timestamptz,
  last_error      text,
  disabled_at     timestamptz,
  deleted_at      timestamptz
);
CREATE INDEX webhook_endpoints_owner_idx ON webhook_endpoints (owner) WHERE deleted_at IS NULL;

-- The outbox: one row per event and endpoint, written by the statement that ends the batch
-- (src/store/sql/finalize-batch.ts), so an event exists if and only if the batch ended.
--   pending    due at next_attempt_at. A claim pushes next_attempt_at past the attempt's lease and
--              sets lease_token; the outcome is written only with that token (a deliverer whose
--              lease ran out cannot overwrite a newer attempt).
--   delivered  a 2xx arrived (delivered_at)
--   failed     every attempt failed, or the endpoint was disabled or removed
-- event_id is the Standard Webhooks message id (webhook-id) and the event body's id: the same for
-- every endpoint and every attempt of one event, so receivers can drop a repeat.
CREATE TABLE webhook_deliveries (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id),
  event_id         text NOT NULL,
  event_type       text NOT NULL,
  batch_id         uuid NOT NULL,
  event_created_at timestamptz NOT NULL,
  state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  lease_token      uuid,
  last_status      integer,
  last_error       text,
  delivered_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (endpoint_id, event_id),
  CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);
-- The deliverers' claim: due pending rows, oldest first.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_batch_idx ON webhook_deliveries (batch_id);
