/**
 * $1 request ids, $2 their answers compressed (src/domain/body-codec.ts). Moves each answer from
 * response_body to response_body_z, leaving '' (the completed-row CHECK wants a body; the terminal
 * guard lets exactly this update through, migration 0022). A row already compressed is left.
 * The two columns are not indexed: the update is HOT when the smaller row fits its page.
 */
export function writeCompressedAnswersSql(s: string): string {
  return `
UPDATE ${s}.requests r SET response_body = '', response_body_z = u.z
  FROM unnest($1::uuid[], $2::bytea[]) AS u(id, z)
 WHERE r.id = u.id AND r.state = 'completed' AND r.response_body_z IS NULL`;
}
