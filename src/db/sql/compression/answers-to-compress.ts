/**
 * $1 batch, $2 the last line number walked, $3 how many rows, $4 how many body bytes at most, $5
 * the largest answer compressed (bytes). The
 * next requests of an ended batch in line order after $2 (a keyset walk of
 * requests_batch_line_idx: each chunk reads only its own stretch of the batch, never the rows
 * already done), each with its answer when it is one to compress: a completed answer of a JSON
 * template that starts like JSON, is still text and is at most $5 bytes: PostgreSQL compresses
 * larger rows itself (TOAST, over ~2 KB), and a small cap keeps every inflate on a reader's
 * event loop short and its memory small (a 30 MB answer downloads as stored text, streamed). The chunk stops before the row that would take
 * it past $4 bytes (one row at least), so a chunk of large answers stays bounded in memory.
 * The reads then use a compressed body as it is (the answer's JSON value, output-lines.ts); failed
 * rows, whose bodies the error file quotes, the failure code searches and retries copy, stay text.
 * Nothing is walked while the batch is live (a retry that reopened it). No row locks: nothing else
 * writes a completed row (the terminal guard, migration 0022), compressors take turns (the pass's
 * advisory lock), and the write checks the row is still uncompressed.
 */
export function answersToCompressSql(s: string): string {
  return `
SELECT w.id, w.line_number, w.body FROM (
  SELECT w.*, sum(coalesce(octet_length(w.body), 0)) OVER (ORDER BY w.line_number)
              - coalesce(octet_length(w.body), 0) AS before
    FROM (SELECT r.id, r.line_number,
                 CASE WHEN r.state = 'completed' AND r.response_body_z IS NULL AND t.content_type IS NULL
                           AND substr(r.response_body, 1, 1) IN ('{', '[')
                           AND octet_length(r.response_body) <= $5
                      THEN r.response_body END AS body
            FROM ${s}.requests r JOIN ${s}.request_templates t ON t.id = r.template_id
           WHERE r.batch_id = $1 AND r.line_number > $2
             AND EXISTS (SELECT 1 FROM ${s}.batches b WHERE b.id = $1 AND b.finished_at IS NOT NULL)
           ORDER BY r.line_number LIMIT $3) w) w
 WHERE w.before = 0 OR w.before + coalesce(octet_length(w.body), 0) <= $4
 ORDER BY w.line_number`;
}
