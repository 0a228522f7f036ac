/** Rewrites the README's settings tables from src/config/schema.ts (`npm run docs:settings`). */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { updateReadme } from '../src/config/settings-table.js';

const path = join(import.meta.dirname, '..', 'README.md');
const before = await readFile(path, 'utf8');
const after = updateReadme(before);
if (after === before) {
  console.log('README.md: settings tables are up to date');
} else {
  await writeFile(path, after);
  console.log('README.md: settings tables rewritten');
}
