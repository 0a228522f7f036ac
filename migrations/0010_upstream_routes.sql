-- Version 10: where each request goes is recorded when its batch is created (src/domain/upstream-route.ts).
-- A daemon claims only the routes it can send exactly as recorded, instead of sending every row it
-- claimed to its own upstream with its own key.

-- The routes: an upstream (base URL, or "mock") and the credential a sender needs (never a key: a
-- fingerprint of it, "none", or "template" for the key in the template row). A handful of rows;
-- never deleted, so requests refer to them without a foreign key (one check per inserted request
-- saved on batch creation).
CREATE TABLE upstream_routes (
  id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  upstream   text NOT NULL CHECK (upstream <> ''),
  credential text NOT NULL CHECK (credential ~ '^[a-z][a-z0-9-]*(:[A-Za-z0-9:_.-]+)?$'),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (upstream, credential)
);

-- Every request that can still be sent has a route. Rows that ended before this version keep NULL
-- (they were sent before routes were recorded); NOT VALID: the check holds for rows written from
-- now on without scanning the table.
ALTER TABLE requests ADD COLUMN route_id integer;
ALTER TABLE requests ADD CONSTRAINT requests_route_check
  CHECK (route_id IS NOT NULL OR state IN ('completed', 'canceled')) NOT VALID;

-- The routes of each batch, per model, written at creation (and by a reroute): the claim's model
-- refresh reads them for live batches, the API shows them, and the server tells from them whether
-- any live daemon serves a batch.
CREATE TABLE batch_routes (
  batch_id uuid NOT NULL REFERENCES batches (id),
  model    text NOT NULL,
  route_id integer NOT NULL REFERENCES upstream_routes (id),
  PRIMARY KEY (batch_id, model, route_id)
);

-- What each daemon can send: the routes of its configuration, and the credentials it sends to any
-- upstream (self-contained ones such as "template"). The server compares a live batch's routes
-- with those of live daemons.
ALTER TABLE daemons ADD COLUMN route_ids integer[] NOT NULL DEFAULT '{}',
                    ADD COLUMN any_upstream_credentials text[] NOT NULL DEFAULT '{}';

-- Backfill. Rows that can still be sent (pending, in flight, or failed and retriable) get the route
-- their template implies: a template with its own key keeps it ("template"); a template without one
-- was routed by the daemon that claimed it, so it gets "daemon": any daemon configured for the
-- template's upstream sends it with its key, as before (only backfilled rows use that credential).
INSERT INTO upstream_routes (upstream, credential)
SELECT DISTINCT t.endpoint, CASE WHEN t.api_key <> '' THEN 'template' ELSE 'daemon' END
  FROM requests r JOIN request_templates t ON t.id = r.template_id
 WHERE r.state NOT IN ('completed', 'canceled')
ON CONFLICT DO NOTHING;

UPDATE requests r SET route_id = u.id
  FROM request_templates t, upstream_routes u
 WHERE t.id = r.template_id AND r.state NOT IN ('completed', 'canceled')
   AND u.upstream = t.endpoint AND u.credential = CASE WHEN t.api_key <> '' THEN 'template' ELSE 'daemon' END;

INSERT INTO batch_routes (batch_id, model, route_id)
SELECT DISTINCT batch_id, model, route_id FROM requests WHERE route_id IS NOT NULL;

-- The claim takes a batch's oldest pending rows of one model on one route (src/store/sql/claim.ts).
CREATE INDEX requests_pending_route_idx ON requests (batch_id, model, route_id, line_number) WHERE state = 'pending';
DROP INDEX requests_pending_idx;
