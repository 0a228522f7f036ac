import { failureCodeSql, retriableFailureCodeSql } from '../results/failure-code.js';

/**
 * Puts a batch's failed requests ($1) back to pending, all of them or, with $2 true, only those
 * whose failure a retry can fix with $3 (int[]) the retryable statuses (failure-code.ts), and
 * returns how many (`n`).
 *
 * History is kept, not rewritten: each failed outcome is first copied to request_failures, so the
 * batch's throughput chart and the request's page still show the failure after the retry. The
 * caller holds the batch row's lock (two retries serialise on it); failed rows are terminal for the
 * daemons, so nothing else writes them meanwhile.
 */
export function retryFailedSql(s: string): string {
  return `
WITH picked AS (
  SELECT r.id FROM ${s}.requests r
   WHERE r.batch_id = $1 AND r.state = 'failed'
     AND (NOT $2::boolean OR ${retriableFailureCodeSql(`(${failureCodeSql('r')})`, '$3::int[]')})
     FOR UPDATE
),
archived AS (
  INSERT INTO ${s}.request_failures (batch_id, request_id, line_number, attempt, started_at, failed_at,
                                     response_status, response_body, upstream_request_id, error_code,
                                     error_message)
  SELECT r.batch_id, r.id, r.line_number, r.attempt, r.started_at, r.completed_at, r.response_status,
         r.response_body, r.upstream_request_id, r.error_code, r.error_message
    FROM ${s}.requests r JOIN picked p ON p.id = r.id
),
requeued AS (
  UPDATE ${s}.requests r SET state = 'pending', attempt = 0, not_before = NULL, daemon_id = NULL,
         claimed_at = NULL, lease_expires_at = NULL, started_at = NULL, completed_at = NULL,
         response_status = NULL, response_body = NULL, upstream_request_id = NULL,
         error_code = NULL, error_message = NULL
    FROM picked p WHERE r.id = p.id
  RETURNING r.id
)
SELECT count(*)::int AS n FROM requeued`;
}

/**
 * Reopens batch $1 after $2 of its requests were requeued: its frozen counts and end go, and it
 * counts the retried requests.
 */
export function reopenBatchSql(s: string): string {
  return `
UPDATE ${s}.batches SET finished_at = NULL, finalizing_at = NULL, completed_at = NULL,
       completed_count = NULL, failed_count = NULL, canceled_count = NULL,
       input_tokens = NULL, cached_tokens = NULL, output_tokens = NULL, reasoning_tokens = NULL,
       total_tokens = NULL,
       retried_count = retried_count + $2
 WHERE id = $1`;
}
