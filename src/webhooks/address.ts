import dns from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

/**
 * Receiver addresses a webhook may not reach unless private webhooks are allowed
 * (`--allow-private-webhooks`): loopback, private networks, link-local (cloud metadata services
 * live there), carrier-grade NAT, multicast and reserved ranges, in IPv4 and IPv6 (IPv4-mapped IPv6
 * addresses are checked as IPv4). The URL's host is checked when the endpoint is added, and the
 * address actually connected to is checked at every delivery (the DNS answer may have changed
 * since: DNS rebinding), through the connection's own lookup.
 */

const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  blocked.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  blocked.addSubnet(net, prefix, 'ipv6');
}

/** Whether an IP address (v4 or v6 text) is private, loopback, link-local or otherwise not public. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family !== 6) return true; // not an address at all: refuse
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, 'ipv4');
  return blocked.check(address, 'ipv6');
}

export class PrivateAddressError extends Error {
  readonly code = 'EPRIVATEADDRESS';
  constructor(host: string, address: string) {
    super(
      `receiver ${host} resolves to the private address ${address} (allow with --allow-private-webhooks)`,
    );
    this.name = 'PrivateAddressError';
  }
}

/** The host of a URL without IPv6 brackets. */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

/**
 * Checks a receiver URL as given: http(s), no credentials, and (unless allowed) not a literal
 * private address or `localhost`. Returns the normalised URL or throws with a one-line reason.
 */
export function checkWebhookUrl(value: string, allowPrivate: boolean): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`the webhook URL ${JSON.stringify(value)} is not a valid URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new Error(`the webhook URL must be http(s), got ${JSON.stringify(url.protocol)}`);
  }
  if (url.username || url.password) throw new Error('the webhook URL must not carry credentials');
  if (value.length > 2048) throw new Error('the webhook URL is longer than 2048 characters');
  const host = hostOf(url);
  if (!allowPrivate) {
    const literal = isIP(host) !== 0;
    if ((literal && isPrivateAddress(host)) || host === 'localhost' || host.endsWith('.localhost')) {
      throw new Error(
        `the webhook URL points at a private or loopback address (${host}); the server refuses it unless started with --allow-private-webhooks`,
      );
    }
  }
  return url.toString();
}

/**
 * A `lookup` for net/tls connections that refuses private answers: every address the name resolves
 * to must be public (one private answer among public ones is how rebinding attacks hide).
 */
export const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '', 0);
    const list = addresses as dns.LookupAddress[];
    const bad = list.find((a) => isPrivateAddress(a.address));
    if (bad) return callback(new PrivateAddressError(hostname, bad.address), '', 0);
    if (options.all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, list);
    const first = list[0];
    if (!first)
      return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
    callback(null, first.address, first.family);
  });
};

/** Refuses a literal private address in a URL about to be sent to (names go through publicOnlyLookup). */
export function refuseLiteralPrivate(url: URL): void {
  const host = hostOf(url);
  if (isIP(host) !== 0 && isPrivateAddress(host)) throw new PrivateAddressError(host, host);
}
