import { FINAL_ERROR_CODES, INSUFFICIENT_QUOTA_CODE } from '../../../domain/retry.js';

/**
 * The failure code of a failed request row `r` as SQL, the grouping of the domain's
 * isRetriableFailureCode: the error code when there is one, `insufficient_quota` for a 429 whose
 * body says so, else the HTTP status as text. The quota test is a substring search of the body (the
 * daemon parses it); a body that merely mentions the word reads as final, so "retry only the
 * retriable ones" never re-sends what cannot succeed.
 */
export function failureCodeSql(r = 'r'): string {
  return `CASE WHEN ${r}.error_code IS NOT NULL THEN ${r}.error_code
     WHEN ${r}.response_status = 429 AND strpos(${r}.response_body, '${INSUFFICIENT_QUOTA_CODE}') > 0
       THEN '${INSUFFICIENT_QUOTA_CODE}'
     ELSE ${r}.response_status::text END`;
}

/**
 * Whether a failure code (an SQL text expression) is worth retrying, as isRetriableFailureCode;
 * `statuses` is the SQL of an int[] of the retryable HTTP statuses.
 */
export function retriableFailureCodeSql(code: string, statuses: string): string {
  const final = [...FINAL_ERROR_CODES, INSUFFICIENT_QUOTA_CODE].map((c) => `'${c}'`).join(', ');
  return `CASE WHEN ${code} ~ '^[0-9]{1,3}$' THEN ${code}::int = ANY(${statuses})
     ELSE ${code} NOT IN (${final}) END`;
}
