import { WEBHOOK_EVENT_TYPES } from '../../domain/webhooks.js';
import { withManager } from '../database.js';
import type { CommandContext } from '../main.js';
import { printTable } from './keys.js';

/**
 * `fusillade webhooks add|list|remove|enable`: an owner's webhook receivers, straight in the
 * database (like `keys`). `add` prints the signing secret as its last line, for `tail -1`.
 */
export async function webhooksAdd({ settings, flags }: CommandContext): Promise<number> {
  return withManager(settings, async (manager) => {
    const created = await manager.webhookEndpoints.add({
      owner: String(flags.owner),
      url: String(flags.url),
      ...(typeof flags.events === 'string' ? { events: flags.events } : {}),
      allowPrivate: settings.allowPrivateWebhooks,
    });
    console.log(
      `added webhook endpoint ${created.id} for owner "${created.owner}": ${created.url} (${created.events.join(', ')})`,
    );
    console.log('signing secret (shown once; verify deliveries with any Standard Webhooks library):');
    console.log(created.secret);
    return 0;
  });
}

export async function webhooksList({ settings, flags }: CommandContext): Promise<number> {
  return withManager(settings, async (manager) => {
    const endpoints = await manager.webhookEndpoints.list({
      ...(typeof flags.owner === 'string' ? { owner: flags.owner } : {}),
    });
    if (endpoints.length === 0) {
      console.log('no webhook endpoints (add one with `fusillade webhooks add --owner NAME --url URL`)');
      return 0;
    }
    const rows = endpoints.map((e) => [
      e.id,
      e.owner,
      e.url,
      e.events.length === WEBHOOK_EVENT_TYPES.length ? 'all' : e.events.join(','),
      e.status === 'disabled'
        ? `disabled (${e.failures} failures)`
        : e.failures > 0
          ? `active (${e.failures} failing)`
          : 'active',
      e.lastSuccessAt?.toISOString() ?? 'never',
      e.lastError ?? '',
    ]);
    printTable(['ID', 'OWNER', 'URL', 'EVENTS', 'STATUS', 'LAST SUCCESS', 'LAST ERROR'], rows);
    return 0;
  });
}

export async function webhooksRemove({ settings }: CommandContext, id: string): Promise<number> {
  return withManager(settings, async (manager) => {
    const removed = await manager.webhookEndpoints.remove(id);
    console.log(`removed webhook endpoint ${removed.id} (${removed.url}) of owner "${removed.owner}"`);
    return 0;
  });
}

export async function webhooksEnable({ settings }: CommandContext, id: string): Promise<number> {
  return withManager(settings, async (manager) => {
    const enabled = await manager.webhookEndpoints.enable(id);
    console.log(`enabled webhook endpoint ${enabled.id} (${enabled.url}) of owner "${enabled.owner}"`);
    return 0;
  });
}
