import { zippedInLineSql } from '../../../domain/body-codec.js';
import { ANTHROPIC_ERROR_TYPES } from '../../../domain/message-batch.js';

/**
 * The result lines of a message batch (Anthropic's results JSONL), one text row per line, built by
 * PostgreSQL and streamed with COPY TO like the OpenAI output files (sql/output-lines.ts):
 *
 *   completed            {"custom_id":…,"result":{"type":"succeeded","message":<the answer>}}
 *   failed               {"custom_id":…,"result":{"type":"errored","error":<error response>}}
 *   canceled (cancel)    {"custom_id":…,"result":{"type":"canceled"}}
 *   canceled (deadline)  {"custom_id":…,"result":{"type":"expired"}}
 *
 * The error response is the upstream's own Anthropic envelope ({"type":"error","error":{…}}) when
 * it sent one; otherwise one is made: the type from the status (ANTHROPIC_ERROR_TYPES, api_error
 * for failures without an answer such as timeouts), the message from an OpenAI-style error body or
 * the failure's code and message. Canceled and expired come from request_view's effective state
 * (pending rows of a cancelled or expired batch read as canceled with batch_cancelled /
 * batch_expired). Order is storage order: Anthropic does not promise input order either.
 * Failed rows are few; only theirs are parsed (json casts), succeeded bodies are used as stored,
 * as trustedJson does for output files.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function literal(uuid: string): string {
  if (!UUID.test(uuid)) throw new TypeError(`not a uuid: ${uuid}`);
  return `'${uuid}'::uuid`;
}

const errorTypeSql = (status: string) =>
  `CASE ${ANTHROPIC_ERROR_TYPES.map(([code, type]) => `WHEN ${status} = ${code} THEN '${type}'`).join(' ')}
        WHEN ${status} >= 500 THEN 'api_error' ELSE 'invalid_request_error' END`;

export function messageBatchResultsSql(s: string, batchId: string): string {
  const id = literal(batchId);
  // v: the failed answer as a JSON value (a JSON string when it is not JSON), null without one.
  const envelope = `(json_typeof(e.v::json) = 'object' AND e.v::json->>'type' = 'error'
        AND json_typeof(e.v::json->'error') = 'object')`;
  const message = `coalesce(
        CASE WHEN json_typeof(e.v::json) = 'object' AND json_typeof(e.v::json->'error') = 'object'
             THEN e.v::json->'error'->>'message' END,
        CASE WHEN r.response_status IS NOT NULL
             THEN 'The upstream answered ' || r.response_status || ': ' || left(coalesce(r.response_body, ''), 500) END,
        coalesce(r.error_code, 'request_failed') || ': ' || coalesce(r.error_message, ''))`;
  const made = `json_build_object('type', 'error',
        'error', json_build_object('type', CASE WHEN r.response_status IS NULL THEN 'api_error'
                                           ELSE ${errorTypeSql('r.response_status')} END,
                                   'message', ${message}),
        'request_id', r.upstream_request_id)::text`;
  // A compressed answer (migration 0022) travels as marked hex, inflated on the way out.
  const body = `CASE WHEN r.response_body_z IS NOT NULL THEN ${zippedInLineSql('r.response_body_z')}
                     WHEN substr(r.response_body, 1, 1) = '{' THEN r.response_body ELSE ${s}.jsonl_value(r.response_body) END`;
  return `SELECT concat('{"custom_id":', coalesce(to_json(r.custom_id)::text, 'null'), ',"result":',
       CASE r.effective_state
         WHEN 'completed' THEN concat('{"type":"succeeded","message":', ${body}, '}')
         WHEN 'failed' THEN concat('{"type":"errored","error":', CASE WHEN ${envelope} THEN e.v ELSE ${made} END, '}')
         ELSE CASE WHEN coalesce(r.effective_error_code, r.error_code) = 'batch_expired'
                   THEN '{"type":"expired"}' ELSE '{"type":"canceled"}' END
       END, '}') AS line
  FROM (SELECT r.effective_state, r.effective_error_code, r.error_code, r.error_message, r.response_status,
               r.response_body, r.response_body_z, r.upstream_request_id, t.custom_id
          FROM ${s}.request_view r
          JOIN ${s}.request_templates t
            ON t.id = r.template_id AND t.file_id = (SELECT b.file_id FROM ${s}.batches b WHERE b.id = ${id})
         WHERE r.batch_id = ${id} AND r.effective_state IN ('completed', 'failed', 'canceled')) r
  LEFT JOIN LATERAL (SELECT CASE WHEN r.effective_state = 'failed' AND r.response_body IS NOT NULL
                                 THEN ${s}.jsonl_value(r.response_body) END AS v) e ON true`;
}
