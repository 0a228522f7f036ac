import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  architectureMarkdown,
  folderCycles,
  folderGraph,
  formatFolderGraph,
} from '../../scripts/folder-graph.js';

/**
 * The folders of src/ form layers: no import cycle between two folders (type imports included), and
 * in particular neither store nor daemon imports the other (both build on src/db; the composition
 * roots in src/manager, src/server and src/cli start the daemon).
 */
describe('the folder dependency graph of src/', () => {
  const graph = folderGraph();

  it('has no cycle between folders', () => {
    const cycles = folderCycles(graph).map((folders) => ({
      folders,
      imports: folders.flatMap((a) => folders.flatMap((b) => graph.edges.get(a)?.get(b) ?? [])),
    }));
    expect(cycles, formatFolderGraph(graph)).toEqual([]);
  });

  it('keeps store and daemon apart, and domain and db below everything else', () => {
    const imports = (a: string, b: string) => graph.edges.get(a)?.get(b) ?? [];
    expect(imports('store', 'daemon')).toEqual([]);
    expect(imports('daemon', 'store')).toEqual([]);
    expect([...(graph.edges.get('domain')?.keys() ?? [])]).toEqual([]);
    expect([...(graph.edges.get('db')?.keys() ?? [])].filter((f) => f !== 'domain')).toEqual([]);
  });

  it('finds a cycle when two folders import each other', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'folder-graph-'));
    try {
      for (const [file, text] of [
        ['a/x.ts', "import { y } from '../b/y.js';\nexport const x = y;\n"],
        ['b/y.ts', "import type { z } from '../c/z.js';\nexport const y = 1 as z;\n"],
        ['c/z.ts', "export type z = number;\nexport const w = () => import('../a/x.js');\n"],
        ['d/free.ts', "import { y } from '../b/y.js';\nexport const f = y;\n"],
      ]) {
        fs.mkdirSync(path.join(dir, path.dirname(file!)), { recursive: true });
        fs.writeFileSync(path.join(dir, file!), text!);
      }
      expect(folderCycles(folderGraph(dir))).toEqual([['a', 'b', 'c']]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is what docs/architecture.md shows (`npm run deps:graph` rewrites it)', () => {
    const doc = fs.readFileSync(new URL('../../docs/architecture.md', import.meta.url), 'utf8');
    expect(doc).toBe(architectureMarkdown());
  });
});
