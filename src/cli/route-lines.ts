import type { BatchUpstream } from '../domain/types.js';
import { describeCredential, displayUpstream } from '../domain/upstream-route.js';
import type { BatchObject } from './api-client.js';

/**
 * A batch's routes for `fusillade status` and `fusillade reroute`, one line each: where its requests
 * go, with which credential (a key's fingerprint at most, never the key), for which models, and how
 * many live daemons can send them, or that they wait because none can.
 */
export function routeLines(upstreams: readonly BatchUpstream[]): string[] {
  return upstreams.map((u) => {
    const credential = u.credential === 'key' ? `key ${u.keyFingerprint}` : describeCredential(u.credential);
    const senders = u.waiting
      ? 'WAITING: no running daemon sends there'
      : `${u.daemons} daemon${u.daemons === 1 ? '' : 's'} can send`;
    return `  upstream ${displayUpstream(u.upstream)} (${credential})  models ${u.models.join(', ')}  ${senders}`;
  });
}

/** The API's `upstreams` entry as the library's BatchUpstream. */
export function fromApiUpstream(u: NonNullable<BatchObject['upstreams']>[number]): BatchUpstream {
  return {
    upstream: u.upstream,
    credential: u.credential,
    keyFingerprint: u.key_fingerprint,
    models: u.models,
    daemons: u.daemons,
    waiting: u.waiting,
  };
}
