import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { RETRY_SCHEDULE_MS, retryDelay } from '../../src/domain/webhooks.js';
import { checkWebhookUrl, isPrivateAddress } from '../../src/webhooks/address.js';
import { eventBody } from '../../src/webhooks/delivery.js';
import {
  parseWebhookEndpointId,
  parseWebhookEvents,
  webhookEndpointId,
} from '../../src/webhooks/endpoints.js';
import { newWebhookSecret, signWebhook, webhookHeaders } from '../../src/webhooks/signing.js';

describe('Standard Webhooks signing', () => {
  it('signs what the standardwebhooks package verifies, and nothing else', () => {
    const secret = newWebhookSecret();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const body = eventBody({
      event_id: 'evt_0123',
      event_type: 'batch.completed',
      batch_id: '0e636927-ddc6-4cdd-b6c3-aeb269fe399e',
      event_created_at: '1764650000',
    });
    expect(JSON.parse(body)).toEqual({
      object: 'event',
      id: 'evt_0123',
      type: 'batch.completed',
      created_at: 1764650000,
      data: { id: 'batch_0e636927ddc64cddb6c3aeb269fe399e' },
    });
    const headers = webhookHeaders(secret, 'evt_0123', body);
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
    // Any change to the body, the id or the key fails verification.
    expect(() => new Webhook(secret).verify(body.replace('completed', 'cancelled'), headers)).toThrow();
    expect(() => new Webhook(secret).verify(body, { ...headers, 'webhook-id': 'evt_x' })).toThrow();
    expect(() => new Webhook(newWebhookSecret()).verify(body, headers)).toThrow();
    // The package's own signature is the same value.
    const t = Number(headers['webhook-timestamp']);
    expect(new Webhook(secret).sign('evt_0123', new Date(t * 1000), body)).toBe(
      signWebhook(secret, 'evt_0123', t, body),
    );
  });
});

describe('receiver addresses', () => {
  it('tells private, loopback, link-local and reserved addresses from public ones', () => {
    for (const a of [
      '127.0.0.1',
      '127.8.9.10',
      '10.1.2.3',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '::1',
      '::',
      'fe80::1',
      'fd00::1',
      '::ffff:127.0.0.1',
      '::ffff:10.0.0.1',
      'not-an-ip',
    ]) {
      expect(isPrivateAddress(a), a).toBe(true);
    }
    for (const a of [
      '8.8.8.8',
      '1.1.1.1',
      '172.32.0.1',
      '192.169.0.1',
      '2606:4700::1111',
      '::ffff:8.8.8.8',
    ]) {
      expect(isPrivateAddress(a), a).toBe(false);
    }
  });

  it('checks a receiver URL when it is added', () => {
    expect(checkWebhookUrl('https://example.com/hooks', false)).toBe('https://example.com/hooks');
    for (const url of [
      'http://127.0.0.1:8080/x',
      'http://localhost/x',
      'http://api.localhost/x',
      'http://[::1]/x',
      'http://10.0.0.5/x',
      'http://169.254.169.254/latest/meta-data',
    ]) {
      expect(() => checkWebhookUrl(url, false), url).toThrow(/--allow-private-webhooks/);
      expect(checkWebhookUrl(url, true)).toBeTruthy();
    }
    expect(() => checkWebhookUrl('ftp://example.com', true)).toThrow(/http/);
    expect(() => checkWebhookUrl('https://user:pw@example.com', true)).toThrow(/credentials/);
    expect(() => checkWebhookUrl('nonsense', true)).toThrow(/not a valid URL/);
  });
});

describe('retry schedule and event lists', () => {
  it('retries within seconds, then ever later, for about a day, then stops', () => {
    expect(retryDelay(1, RETRY_SCHEDULE_MS, () => 0)).toBe(5000);
    expect(retryDelay(1, RETRY_SCHEDULE_MS, () => 0.999)).toBeLessThanOrEqual(5500);
    const delays = RETRY_SCHEDULE_MS.map((_, i) => retryDelay(i + 1, RETRY_SCHEDULE_MS, () => 0)!);
    for (let i = 1; i < delays.length; i++) expect(delays[i]!).toBeGreaterThanOrEqual(delays[i - 1]!);
    const total = delays.reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(20 * 3_600_000);
    expect(total).toBeLessThan(28 * 3_600_000);
    expect(retryDelay(RETRY_SCHEDULE_MS.length + 1)).toBeNull();
  });

  it('parses event lists and endpoint ids', () => {
    expect(parseWebhookEvents(undefined)).toHaveLength(4);
    expect(parseWebhookEvents('batch.completed, batch.failed,batch.completed')).toEqual([
      'batch.completed',
      'batch.failed',
    ]);
    expect(() => parseWebhookEvents('batch.done')).toThrow(/unknown event "batch.done"/);
    expect(() => parseWebhookEvents(' , ')).toThrow(/at least one/);
    const uuid = '0e636927-ddc6-4cdd-b6c3-aeb269fe399e';
    expect(parseWebhookEndpointId(webhookEndpointId(uuid))).toBe(uuid);
    expect(parseWebhookEndpointId(uuid)).toBe(uuid);
    expect(parseWebhookEndpointId('we_nothex')).toBeNull();
  });
});
