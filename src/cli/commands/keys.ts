import { checkOwnerWeight } from '../../store/owner-weights.js';
import { withManager } from '../database.js';
import type { CommandContext } from '../main.js';

/** Prints the new key as the last line, so scripts can take it with `tail -1`. */
export async function keysCreate({ settings, flags }: CommandContext): Promise<number> {
  return withManager(settings, async (manager) => {
    const created = await manager.apiKeys.create({
      owner: String(flags.owner),
      name: typeof flags.name === 'string' ? flags.name : null,
    });
    console.log(`created API key ${created.id} for owner "${created.owner}" (shown once; keep it safe):`);
    console.log(created.key);
    return 0;
  });
}

export async function keysList({ settings, flags }: CommandContext): Promise<number> {
  return withManager(settings, async (manager) => {
    const keys = await manager.apiKeys.list({
      ...(typeof flags.owner === 'string' ? { owner: flags.owner } : {}),
    });
    if (keys.length === 0) {
      console.log('no API keys (create one with `fusillade keys create --owner NAME`)');
      return 0;
    }
    const rows = keys.map((k) => [
      k.id,
      `${k.prefix}…`,
      k.owner,
      k.name ?? '',
      k.createdAt.toISOString(),
      k.lastUsedAt?.toISOString() ?? 'never',
    ]);
    printTable(['ID', 'KEY', 'OWNER', 'NAME', 'CREATED', 'LAST USED'], rows);
    return 0;
  });
}

export async function keysRevoke({ settings }: CommandContext, id: string): Promise<number> {
  return withManager(settings, async (manager) => {
    const key = await manager.apiKeys.revoke(id);
    console.log(`revoked API key ${key.id} (${key.prefix}…) of owner "${key.owner}"`);
    return 0;
  });
}

/**
 * Sets an owner's weight in the fair share of every model's slots (default 1). The weight is
 * checked before the database is opened, so a bad one is one line on stderr (a ValidationError).
 */
export async function keysSetWeight({ settings, flags }: CommandContext, weight: string): Promise<number> {
  const owner = String(flags.owner);
  const n = /^\s*\d+(\.\d+)?\s*$/.test(weight) ? Number(weight) : Number.NaN;
  checkOwnerWeight(owner, Number.isNaN(n) ? weight : n);
  return withManager(settings, async (manager) => {
    const previous = await manager.ownerWeights.set(owner, n);
    console.log(`owner "${owner}" now has weight ${n} (was ${previous})`);
    return 0;
  });
}

export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  console.log(fmt(header));
  for (const r of rows) console.log(fmt(r));
}
