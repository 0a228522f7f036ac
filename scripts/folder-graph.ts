import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * The import graph of src/ between folders: each top-level folder of src/ is a node (a file at the
 * top of src/ is a node of its own, e.g. "index.ts"); an edge A -> B means a file of A imports a
 * file of B (value, type or dynamic import). Print it: node --import tsx scripts/folder-graph.ts
 */
export interface FolderGraph {
  /** Folder -> folder -> the file-level imports behind the edge ("a/x.ts -> b/y.ts"). */
  edges: Map<string, Map<string, string[]>>;
}

const SRC = fileURLToPath(new URL('../src/', import.meta.url));

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

function folderOf(relative: string): string {
  const parts = relative.split('/');
  return parts.length > 1 ? parts[0]! : relative;
}

export function folderGraph(src: string = SRC): FolderGraph {
  const edges = new Map<string, Map<string, string[]>>();
  for (const file of sourceFiles(src)) {
    const from = path.relative(src, file).split(path.sep).join('/');
    const info = ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true);
    for (const { fileName } of info.importedFiles) {
      if (!fileName.startsWith('.')) continue;
      const target = path.resolve(path.dirname(file), fileName.replace(/\.js$/, '.ts'));
      const to = path.relative(src, target).split(path.sep).join('/');
      if (to.startsWith('..')) continue;
      const a = folderOf(from);
      const b = folderOf(to);
      if (a === b) continue;
      const out = edges.get(a) ?? new Map<string, string[]>();
      edges.set(a, out);
      out.set(b, [...(out.get(b) ?? []), `${from} -> ${to}`]);
    }
  }
  return { edges };
}

/** The cycles between folders, each as the list of folders around it (one per strongly connected set). */
export function folderCycles(graph: FolderGraph): string[][] {
  // Tarjan's strongly connected components; a component of more than one folder is a cycle.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.edges.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) cycles.push(component.sort());
    }
  };
  for (const v of graph.edges.keys()) if (!index.has(v)) visit(v);
  return cycles;
}

/** The graph as text: one line per folder, its targets with the number of file imports behind each. */
export function formatFolderGraph(graph: FolderGraph): string {
  return [...graph.edges.keys()]
    .sort()
    .map((a) => {
      const targets = [...graph.edges.get(a)!].sort(([x], [y]) => x.localeCompare(y));
      return `${a.padEnd(14)} -> ${targets.map(([b, files]) => `${b} (${files.length})`).join(', ')}`;
    })
    .join('\n');
}

/** The folder graph before the store/daemon split (2026-12-02, docs/decisions/0006), kept to compare. */
const BEFORE = `cli            -> config, daemon, domain, embedded, mock-upstream, server, store
daemon         -> config, domain, store, version.ts
server         -> config, daemon, domain, store, webhooks
store          -> daemon, domain, webhooks
webhooks       -> daemon, domain, store
cycle: daemon <-> store <-> webhooks`;

/** The files of a folder of src/ by subfolder, e.g. "store/batches: batches.ts, batch-options.ts". */
function layout(folder: string, src: string): string[] {
  const lines: string[] = [];
  const walk = (dir: string): void => {
    const entries = fs.readdirSync(path.join(src, dir), { withFileTypes: true });
    const files = entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => e.name);
    if (files.length > 0) lines.push(`${`${dir}/`.padEnd(24)} ${files.sort().join(', ')}`);
    for (const e of entries.filter((e) => e.isDirectory()).sort((a, b) => a.name.localeCompare(b.name))) {
      walk(`${dir}/${e.name}`);
    }
  };
  walk(folder);
  return lines;
}

/** docs/architecture.md: the folder graph now, the one before the split, and where each job's code lives. */
export function architectureMarkdown(src: string = SRC): string {
  const graph = folderGraph(src);
  const cycles = folderCycles(graph);
  const fence = (text: string) => ['```', text, '```'];
  return [
    '# Architecture: the folders of src/ and what imports what',
    '',
    'Written by `npm run deps:graph` (scripts/folder-graph.ts); do not edit by hand. The layers and the',
    'rule they follow are in docs/decisions/0006-folder-layers.md; test/architecture/folder-cycles.test.ts',
    'fails on any cycle between folders. An edge `a -> b (n)` means n imports from files of a into files',
    'of b (type and dynamic imports count).',
    '',
    '## Now',
    '',
    ...fence(
      [
        formatFolderGraph(graph),
        cycles.length === 0 ? 'cycles: none' : cycles.map((c) => `cycle: ${c.join(' <-> ')}`).join('\n'),
      ].join('\n'),
    ),
    '',
    '## Before the store/daemon split (2026-12-02)',
    '',
    ...fence(BEFORE),
    '',
    '## Repositories by job',
    '',
    'The SQL of each operation (`db/sql`), by the job it serves: the queue the daemons claim from and',
    'complete into, the batch lifecycle, the results streamed out; `store` holds the repositories on',
    'top of it: batches, files, and the read models of the API and the dashboard.',
    '',
    ...fence([...layout('db', src), ...layout('store', src)].join('\n')),
    '',
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--write')) {
    const out = fileURLToPath(new URL('../docs/architecture.md', import.meta.url));
    fs.writeFileSync(out, architectureMarkdown());
    console.log(`wrote ${path.relative(process.cwd(), out)}`);
  } else {
    const graph = folderGraph();
    console.log(formatFolderGraph(graph));
    for (const cycle of folderCycles(graph)) console.log(`cycle: ${cycle.join(' <-> ')}`);
  }
}
