import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The server and the CLI reach the database through the manager (its methods and the repositories
 * it builds: apiKeys, webhookEndpoints, apiReads, dashboardReads), never by handing a pool to a store
 * or db function or querying one themselves. What they may take from src/store and src/db directly:
 * types, and the values below (constants, pure helpers, and what the composition roots need to open
 * and migrate a database). docs/decisions/0006-folder-layers.md.
 */
const ALLOWED_VALUES = new Set([
  'db/migrate.ts: migrate',
  'db/statement-deadline.ts: deadlinePool',
  'db/statement-deadline.ts: withStatementDeadline',
  'db/statement-deadline.ts: withoutStatementDeadline',
  'db/purge.ts: describePurge',
  'store/reads/dashboard/requests.ts: MAX_OFFSET',
  'store/reads/dashboard/requests.ts: REQUEST_SORTS',
  'store/reads/dashboard/scope.ts: isBatchStatus',
  'store/owner-weights.ts: checkOwnerWeight',
]);

/** Where the CLI opens its database (and checks that it answers) before handing the pool to a manager. */
const OPENS_THE_DATABASE = 'cli/database.ts';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Each value (not type-only) imported by `file` from src/store or src/db, as "db/x.ts: name". */
function storeValueImports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false);
  const out: string[] = [];
  for (const node of source.statements) {
    if (!ts.isImportDeclaration(node) || !ts.isStringLiteral(node.moduleSpecifier)) continue;
    const spec = node.moduleSpecifier.text;
    if (!spec.startsWith('.')) continue;
    const target = path
      .relative(SRC, path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')))
      .split(path.sep)
      .join('/');
    if (!target.startsWith('store/') && !target.startsWith('db/')) continue;
    const clause = node.importClause;
    if (!clause || clause.isTypeOnly) continue;
    if (clause.name) out.push(`${target}: default`);
    const bindings = clause.namedBindings;
    if (bindings && ts.isNamespaceImport(bindings)) out.push(`${target}: * as ${bindings.name.text}`);
    if (bindings && ts.isNamedImports(bindings)) {
      for (const el of bindings.elements) {
        if (!el.isTypeOnly) out.push(`${target}: ${(el.propertyName ?? el.name).text}`);
      }
    }
  }
  return out;
}

describe('the server and the CLI', () => {
  const files = [...sourceFiles(path.join(SRC, 'server')), ...sourceFiles(path.join(SRC, 'cli'))];

  it('import no store or db function beyond constants, pure helpers and migrations', () => {
    const offending = files.flatMap((f) =>
      storeValueImports(f)
        .filter((i) => !ALLOWED_VALUES.has(i))
        .map((i) => `${path.relative(SRC, f)} -> ${i}`),
    );
    expect(offending).toEqual([]);
  });

  it('run no query on a pool themselves', () => {
    const offending = files
      .filter((f) => path.relative(SRC, f).split(path.sep).join('/') !== OPENS_THE_DATABASE)
      .flatMap((f) =>
        fs
          .readFileSync(f, 'utf8')
          .split('\n')
          .map((line, i) => ({ line, n: i + 1 }))
          .filter(({ line }) => /\bpool\s*\.\s*(query|connect)\s*[<(]/.test(line))
          .map(({ line, n }) => `${path.relative(SRC, f)}:${n}: ${line.trim()}`),
      );
    expect(offending).toEqual([]);
  });
});
