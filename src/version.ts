import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * This package's version, from its package.json (found upwards from this module: src/ under tsx,
 * dist/src/ when built). Daemons record it when they register, so the dashboard can show it.
 */
function readVersion(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'fusillade' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // No package.json at this level: look further up.
    }
    dir = dirname(dir);
  }
  return null;
}

export const VERSION: string | null = readVersion();
