/**
 * The JSONL lines of a file's content, one text row per line, built by PostgreSQL so
 * that Node only relays bytes (rule 11 of docs/decisions/0003: never buffer a whole file).
 *
 * Output file (batch_output): completed requests,
 *   {"id":"batch_req_…","custom_id":…,"response":{"status_code":…,"request_id":…,"body":…},"error":null}
 * A template whose contentType is not JSON takes any answer: its body is the answer's JSON value if
 * it is JSON, else the answer as a JSON string.
 * Error file (batch_error): failed requests with an HTTP error answer keep it in `response` with
 * "error":null; a failed 2xx (its body is not JSON) keeps it too, with "error" saying so; failed ones
 * without an answer (timeouts, connection errors) and canceled or expired ones (request_view's
 * effective state) have "response":null and "error":{"code","message"}.
 * Input file (batch): the uploaded lines rebuilt from their templates; bodies are the stored text
 * (a body of a non-JSON contentType as a JSON string).
 *
 * The batch or file id is inlined (COPY takes no parameters); callers pass a validated UUID.
 * Alternatives: keyset pages of rows assembled in Node (JSON.parse of every body to check it is
 * JSON) — dearer than one COPY TO, which streams with back-pressure on one statement. The output
 * file, the large case, is sent as bare columns (outputRowsSql) and framed in Node.
 * Measured (bench/server-transfer.ts, 50,000 results of ~4 KB, shared and loaded 2-core machine):
 * the download ran at 0.45–0.68 of a raw COPY TO of the bodies across runs (75–102 MB/s; the API
 * path has one more process relaying the bytes than the baseline); at 20,000 rows
 * the statements alone took: raw bodies ~400 ms, bare columns ~440 ms, columns with to_json() and
 * replace() ~540 ms, lines built with concat() ~600 ms, lines sorted by line number 2.1 s (the sort
 * spilled 80 MB to disk), translate() for newlines on every body +140 µs a row.
 */

import { zippedBytesSql, zippedInLineSql } from '../../../domain/body-codec.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function literal(uuid: string): string {
  if (!UUID.test(uuid)) throw new TypeError(`not a uuid: ${uuid}`);
  return `'${uuid}'::uuid`;
}

const REQUEST_ID = `'"batch_req_' || replace(r.id::text, '-', '') || '"'`;
const CUSTOM_ID = `coalesce(to_json(r.custom_id)::text, 'null')`;

/**
 * `lines` selects each line as text; `size` selects each line's byte length (newline included)
 * without reading the bodies of answers used as they are: octet_length of a stored text is known
 * without decompressing it. A body the line quotes (not JSON) is measured as quoted.
 */
export type LinesMode = 'lines' | 'size';

function httpResponse(body: string): string {
  return `'{"status_code":' || r.response_status || ',"request_id":' || coalesce(to_json(r.upstream_request_id)::text, 'null')
      || ',"body":' || ${body} || '}'`;
}

/**
 * The body as a JSON value. A completed request's body is JSON: the daemon completes a 2xx only if
 * its body parses (src/daemon/settle.ts), so one that starts like JSON is used as it is (substr()
 * decompresses only the first bytes; left() decompressed the whole body); anything else goes through jsonl_value(). Checking every
 * body with jsonl_value() halved the download rate (the json cast costs ~15 µs a 4 KB row).
 * Raw newlines (pretty-printed JSON) are blanked on the way out by CopyTextToJsonl.
 * A compressed answer (response_body_z, migration 0022: only completed answers of JSON templates
 * that start like JSON are compressed, src/db/sql/compression) travels as marked hex and is
 * inflated on the way out (src/store/compression-splice.ts).
 */
function trustedJson(s: string): string {
  return `CASE WHEN r.response_body_z IS NOT NULL THEN ${zippedInLineSql('r.response_body_z')}
          WHEN r.content_type IS NULL AND substr(r.response_body, 1, 1) IN ('{', '[') THEN r.response_body
          ELSE ${s}.jsonl_value(r.response_body) END`;
}

/**
 * The bytes of trustedJson's value: a compressed answer's decoded length (its header); a JSON
 * template's answer as stored (octet_length, without reading the body); another template's answer
 * (any text) as jsonl_value quotes it.
 */
function trustedJsonBytes(s: string): string {
  return `CASE WHEN r.response_body_z IS NOT NULL THEN ${zippedBytesSql('r.response_body_z')}
          WHEN r.content_type IS NULL THEN coalesce(octet_length(r.response_body), 4)
          ELSE octet_length(${s}.jsonl_value(r.response_body)) END`;
}

/**
 * Lines come in storage order, not input order (OpenAI does not promise order either): sorting
 * 50,000 wide rows spilled to disk. Each body is read once, by the concat() that builds its line.
 */
function rows(columns: string, from: string): string {
  return `(SELECT ${columns}, r.response_body, r.response_body_z ${from}) r`;
}

/**
 * The template of each request, looked for among its batch's file only, so the join reads one
 * file's templates through request_templates_file_line_idx, not the whole table.
 */
function sameFile(s: string, batchId: string): string {
  return `t.id = r.template_id AND t.file_id = (SELECT b.file_id FROM ${s}.batches b WHERE b.id = ${literal(batchId)})`;
}

function select(mode: LinesMode, line: string, bodyBytes: string): string {
  return mode === 'lines' ? `SELECT ${line} AS line` : `SELECT octet_length(${line}) + ${bodyBytes} + 1 AS n`;
}

/** Lines of a batch's output file: its completed requests. */
export function outputLinesSql(s: string, batchId: string, mode: LinesMode = 'lines'): string {
  const body = mode === 'lines' ? trustedJson(s) : `''`;
  // One concat() copies the body once; chained || copied it once per operator.
  const line = `concat('{"id":"batch_req_', replace(r.id::text, '-', ''), '","custom_id":', ${CUSTOM_ID},
       ',"response":{"status_code":', r.response_status,
       ',"request_id":', coalesce(to_json(r.upstream_request_id)::text, 'null'),
       ',"body":', ${body}, '},"error":null}')`;
  return `${select(mode, line, trustedJsonBytes(s))}
  FROM ${rows(
    'r.id, r.response_status, r.upstream_request_id, t.custom_id, t.content_type',
    `FROM ${s}.requests r JOIN ${s}.request_templates t ON ${sameFile(s, batchId)}
     WHERE r.batch_id = ${literal(batchId)} AND r.state = 'completed'`,
  )}`;
}

/**
 * The output file as bare columns, for OutputRowsToJsonl to frame in Node: request id, custom_id,
 * status, upstream request id and body. PostgreSQL then sends each body as COPY sends a bare
 * column. Measured at 20,000 4 KB rows against a raw COPY of the bodies (~400 ms): lines built
 * with concat() in SQL ~600 ms; columns with to_json() and replace() ~540 ms; bare columns ~440 ms.
 */
export function outputRowsSql(s: string, batchId: string): string {
  return `SELECT r.id, r.custom_id, r.response_status, r.upstream_request_id, ${trustedJson(s)}
  FROM ${rows(
    'r.id, r.response_status, r.upstream_request_id, t.custom_id, t.content_type',
    `FROM ${s}.requests r JOIN ${s}.request_templates t ON ${sameFile(s, batchId)}
     WHERE r.batch_id = ${literal(batchId)} AND r.state = 'completed'`,
  )}`;
}

/** Lines of a batch's error file: failed, canceled and expired requests. */
export function errorLinesSql(s: string, batchId: string, mode: LinesMode = 'lines'): string {
  const hasResponse = `(r.effective_state = 'failed' AND r.response_status IS NOT NULL)`;
  const code = `coalesce(r.effective_error_code, r.error_code, 'request_failed')`;
  const message = `coalesce(r.error_message, CASE ${code}
        WHEN 'batch_cancelled' THEN 'The batch was cancelled before this request completed.'
        WHEN 'batch_expired' THEN 'This request could not be executed before the completion window expired.'
        ELSE ${code} END)`;
  // A 2xx fails only when its body is not JSON (src/daemon/settle.ts stores it as invalid_response)
  // or the caller's shouldRetry hook rejected it to the end (rejected_response, with its message):
  // the status alone would read as success, so the error says what is wrong.
  const badSuccess = `(r.response_status BETWEEN 200 AND 299)`;
  const badSuccessError = `'{"code":' || to_json(coalesce(r.error_code, 'invalid_response'))::text
            || ',"message":' || to_json(CASE WHEN r.error_code = 'rejected_response' THEN r.error_message
                 ELSE 'The upstream answered ' || r.response_status || ' with a body that is not JSON.' END)::text
            || '}'`;
  // Failed bodies are whatever the upstream sent (HTML from a proxy, plain text): always checked.
  const body = mode === 'lines' ? `${s}.jsonl_value(r.response_body)` : `''`;
  const line = `'{"id":' || ${REQUEST_ID} || ',"custom_id":' || ${CUSTOM_ID}
       || ',"response":' || CASE WHEN ${hasResponse} THEN ${httpResponse(body)} ELSE 'null' END
       || ',"error":' || CASE WHEN ${hasResponse} AND ${badSuccess} THEN ${badSuccessError}
            WHEN ${hasResponse} THEN 'null'
            ELSE '{"code":' || to_json(${code})::text || ',"message":' || to_json(${message})::text || '}' END
       || '}'`;
  // A failed body is often not JSON (a proxy's HTML page): the line quotes it, so it is measured
  // as quoted. Error files are small next to output files; their bodies are read to measure them.
  const bodyBytes = `CASE WHEN ${hasResponse} THEN octet_length(${s}.jsonl_value(r.response_body)) ELSE 0 END`;
  return `${select(mode, line, bodyBytes)}
  FROM ${rows(
    `r.id, r.effective_state, r.effective_error_code, r.error_code, r.error_message, r.response_status,
     r.upstream_request_id, t.custom_id`,
    `FROM ${s}.request_view r JOIN ${s}.request_templates t ON ${sameFile(s, batchId)}
     WHERE r.batch_id = ${literal(batchId)} AND r.effective_state IN ('failed', 'canceled')`,
  )}`;
}

/**
 * Lines of an uploaded input file, rebuilt from its templates in line order. The sort runs on the
 * narrow rows before the lines are built (building first made PostgreSQL sort the wide lines).
 */
export function inputLinesSql(s: string, fileId: string): string {
  return `SELECT '{"custom_id":' || ${CUSTOM_ID} || ',"method":' || to_json(r.method)::text
       || ',"url":' || to_json(r.path)::text
       || ',"body":' || CASE WHEN r.content_type IS NOT NULL THEN ${s}.jsonl_value(r.body)
                             WHEN r.body = '' THEN 'null' ELSE r.body END || '}' AS line
  FROM (SELECT custom_id, method, path, body, content_type FROM ${s}.request_templates
         WHERE file_id = ${literal(fileId)} ORDER BY line_number) r`;
}
