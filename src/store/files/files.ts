import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { withTransaction } from '../../db/transaction.js';
import { NotFoundError, ValidationError, type ValidationIssue } from '../../domain/errors.js';
import { encryptKey, type KeyEncryptionKey } from '../../domain/key-encryption.js';
import { promptPrefixHash, promptPrefixHashOf } from '../../domain/prompt-prefix.js';
import {
  CustomIdSet,
  isJsonContentType,
  type RequestTemplateInput,
  validateTemplate,
} from '../../domain/templates.js';
import type { CreateFileOptions, FileInfo, FilePurpose, ListOptions, Page } from '../../domain/types.js';
import { assertId, FILE_COLUMNS, type FileRow, isUuid, toFileInfo } from '../rows.js';
import { copyRow } from './copy-text.js';
import { measureFiles } from './output-files.js';

/** A template as streamed into a file; `lineNumber` (1-based) defaults to its position + 1. */
export type TemplateItem = RequestTemplateInput & { lineNumber?: number };

/** Rows per flush of the COPY stream: bounded memory however large the file (rule 11 of docs/decisions/0003). */
const FLUSH_BYTES = 1 << 20;

/**
 * Stores a file and its templates in one transaction, streaming the templates into COPY as they
 * arrive. The first invalid template aborts the transaction: nothing of the file is stored, and
 * the ValidationError names the template's index (and line number).
 */
export async function insertFile(
  pool: pg.Pool,
  schema: string,
  name: string,
  description: string | null,
  templates: AsyncIterable<TemplateItem> | Iterable<TemplateItem>,
  options: CreateFileOptions = {},
  /** Seals each template's upstream key (src/domain/key-encryption.ts); null stores keys as given. */
  kek: KeyEncryptionKey | null = null,
): Promise<string> {
  const fileId = randomUUID();
  return withTransaction(pool, async (client) => {
    let copy: ReturnType<typeof copyFrom> | undefined;
    try {
      await client.query(
        `INSERT INTO ${schema}.files (id, name, description, purpose, owner, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
        [
          fileId,
          name,
          description,
          options.purpose ?? 'batch',
          options.owner ?? null,
          options.expiresAt ?? null,
        ],
      );
      // The templates' file_id is checked once for the COPY, not per row
      // (migrations/0025_reference_checks.sql): 20,000 short templates take 150–160 ms of
      // PostgreSQL CPU against 210–220 ms with the foreign key (load 12, docs/decisions/store-phase.md).
      copy = client.query(
        copyFrom(
          `COPY ${schema}.request_templates
             (file_id, line_number, custom_id, endpoint, method, path, body, model, api_key, content_type,
              prefix_hash) FROM STDIN`,
        ),
      );
      const copyDone = once(copy, 'finish');
      copyDone.catch(() => {}); // observed below; an early error must not be unhandled
      const ids = new CustomIdSet();
      let index = 0;
      let bodyBytes = 0;
      let chunk = '';
      const lines = new Set<number>();
      for await (const t of templates) {
        const parsed: { body?: unknown } = {};
        const issues: ValidationIssue[] = validateTemplate(t, index, parsed);
        const dup = issues.length === 0 ? ids.check(t.customId, index) : undefined;
        if (dup) issues.push(dup);
        const line = t?.lineNumber ?? index + 1;
        if (issues.length === 0 && (!Number.isInteger(line) || line < 1 || lines.has(line))) {
          issues.push({
            code: 'invalid_line_number',
            message: `line number ${line} is invalid or repeated`,
            index,
          });
        }
        if (issues.length > 0) {
          throw new ValidationError(issues.map((i) => (t?.lineNumber !== undefined ? { ...i, line } : i)));
        }
        lines.add(line);
        bodyBytes += Buffer.byteLength(t.body);
        chunk += copyRow([
          fileId,
          line,
          t.customId ?? null,
          t.endpoint,
          t.method.toUpperCase(),
          t.path,
          t.body,
          t.model,
          kek && t.apiKey ? encryptKey(t.apiKey, kek) : (t.apiKey ?? ''),
          t.contentType ?? null,
          isJsonContentType(t.contentType) && t.body !== '' ? prefixHash(t.body, parsed.body) : null,
        ]);
        index++;
        if (chunk.length >= FLUSH_BYTES) {
          if (!copy.write(chunk)) await once(copy, 'drain');
          chunk = '';
        }
      }
      copy.end(chunk);
      await copyDone;
      copy = undefined;
      await client.query(`UPDATE ${schema}.files SET size_bytes = $2, template_count = $3 WHERE id = $1`, [
        fileId,
        options.sizeBytes ?? bodyBytes,
        index,
      ]);
      return fileId;
    } catch (err) {
      if (copy) {
        // Abandon the COPY: the server rejects it and the transaction rolls back.
        copy.destroy(new Error('aborted'));
        await once(copy, 'close').catch(() => {});
      }
      throw err;
    }
  });
}

/**
 * The body's prompt-prefix hash from the value validateTemplate parsed (JSON.parse never gives
 * undefined: undefined means the body was not parsed there, and it is parsed here). One parse a
 * body fewer: the store's node work over `fusillade run`'s 20,000 lines in a fresh process (run's
 * parser, validation, prefix hash, COPY text) takes 272 ms of CPU against 295 ms parsing twice
 * (medians of 10 alternating processes at load 27).
 */
function prefixHash(body: string, parsed: unknown): string | null {
  return parsed === undefined ? promptPrefixHash(body) : promptPrefixHashOf(parsed);
}

/** A file with its real size and line count (output and error files are measured, see measured()). */
export async function getFile(
  pool: pg.Pool,
  schema: string,
  id: string,
  owner?: string | null,
): Promise<FileInfo> {
  return (await measured(pool, schema, [await findFile(pool, schema, id, owner)]))[0]!;
}

/** A file as stored: for reading its content, which needs no measuring. */
export async function findFile(
  pool: pg.Pool,
  schema: string,
  id: string,
  owner?: string | null,
): Promise<FileInfo> {
  assertId('file', id);
  const { rows } = await pool.query<FileRow>(
    `SELECT ${FILE_COLUMNS} FROM ${schema}.files
      WHERE id = $1 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        AND ($2::text IS NULL OR owner = $2)`,
    [id, owner ?? null],
  );
  if (!rows[0]) throw new NotFoundError('file', id);
  return toFileInfo(rows[0]);
}

/**
 * Output and error files with their real size and line count (sizeBytes, templateCount), measured
 * from their batch's requests as they are now (output-files.ts measureFiles); input files as stored.
 */
async function measured(pool: pg.Pool, schema: string, files: FileInfo[]): Promise<FileInfo[]> {
  const sizes = await measureFiles(pool, schema, files);
  return files.map((f) => {
    const size = sizes.get(f.id);
    return size ? { ...f, sizeBytes: size.bytes, templateCount: size.lines } : f;
  });
}

export interface ListFilesOptions extends ListOptions {
  purpose?: FilePurpose;
  order?: 'asc' | 'desc';
}

/** Newest first (or oldest with order "asc"), keyset-paginated by the last id seen. */
export async function listFiles(
  pool: pg.Pool,
  schema: string,
  options: ListFilesOptions = {},
): Promise<Page<FileInfo>> {
  const limit = Math.min(Math.max(options.limit ?? 20, 1), 10_000);
  const asc = options.order === 'asc';
  const after = options.after !== undefined && isUuid(options.after) ? options.after : null;
  if (options.after !== undefined && after === null) return { data: [], hasMore: false };
  const cmp = asc ? '>' : '<';
  const dir = asc ? 'ASC' : 'DESC';
  const { rows } = await pool.query<FileRow>(
    `SELECT ${FILE_COLUMNS} FROM ${schema}.files f
      WHERE deleted_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        AND ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR purpose = $2)
        AND ($3::uuid IS NULL OR (created_at, id) ${cmp} (SELECT created_at, id FROM ${schema}.files WHERE id = $3))
      ORDER BY created_at ${dir}, id ${dir}
      LIMIT $4`,
    [options.owner ?? null, options.purpose ?? null, after, limit + 1],
  );
  const data = await measured(pool, schema, rows.slice(0, limit).map(toFileInfo));
  return { data, hasMore: rows.length > limit };
}

/**
 * Soft delete: the file disappears from reads at once; the purge removes its data in the background
 * (src/db/purge.ts), an input file's templates once no batch made from it remains.
 */
export async function deleteFile(
  pool: pg.Pool,
  schema: string,
  id: string,
  owner?: string | null,
): Promise<void> {
  assertId('file', id);
  const { rowCount } = await pool.query(
    `UPDATE ${schema}.files SET deleted_at = now()
      WHERE id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR owner = $2)`,
    [id, owner ?? null],
  );
  if (!rowCount) throw new NotFoundError('file', id);
}

/**
 * The first line of a file whose URL path differs from `path` (a batch's endpoint must match every
 * line), or undefined. Walks the file's templates in line order through their unique index.
 */
export async function firstPathMismatch(
  pool: pg.Pool,
  s: string,
  fileId: string,
  path: string,
): Promise<{ line: number; path: string } | undefined> {
  const { rows } = await pool.query<{ line_number: number; path: string }>(
    `SELECT line_number, path FROM ${s}.request_templates
      WHERE file_id = $1 AND path <> $2 ORDER BY line_number LIMIT 1`,
    [fileId, path],
  );
  return rows[0] ? { line: rows[0].line_number, path: rows[0].path } : undefined;
}

/** Sets an uploaded file's expiry, `seconds` after its created_at (OpenAI's expires_after), known only once the upload has ended. */
export async function setFileExpiry(
  pool: pg.Pool,
  s: string,
  fileId: string,
  seconds: number,
): Promise<void> {
  await pool.query(
    `UPDATE ${s}.files SET expires_at = created_at + $2::int * interval '1 second' WHERE id = $1`,
    [fileId, seconds],
  );
}
