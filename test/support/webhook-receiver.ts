import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

/** One request a test receiver got, verified with the `standardwebhooks` package. */
export interface ReceivedWebhook {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The verified event, or null when the signature did not verify (then `error` says why). */
  event: { object: string; id: string; type: string; created_at: number; data: { id: string } } | null;
  error: string | null;
  /** What the receiver answered. */
  status: number;
}

export interface WebhookReceiver {
  url: string;
  port: number;
  received: ReceivedWebhook[];
  /** The endpoint's signing secret, set once `webhooks add` has printed it. */
  secret: string | null;
  /** Status to answer each request with (default 200). */
  answer: (req: { body: string; nth: number; webhookId: string }) => number | 'hang';
  /** The accepted (2xx, verified) deliveries per webhook-id. */
  acceptedById(): Map<string, number>;
  close(): Promise<void>;
}

/** A webhook receiver on loopback, as a user would write one with the standardwebhooks package. */
export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const seen = new Map<string, number>();
  const sockets = new Set<import('node:net').Socket>();
  const receiver: WebhookReceiver = {
    url: '',
    port: 0,
    received: [],
    secret: null,
    answer: () => 200,
    acceptedById() {
      const m = new Map<string, number>();
      for (const r of receiver.received) {
        if (r.event && r.status >= 200 && r.status < 300) m.set(r.event.id, (m.get(r.event.id) ?? 0) + 1);
      }
      return m;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const webhookId = String(req.headers['webhook-id'] ?? '');
      const nth = (seen.get(webhookId) ?? 0) + 1;
      seen.set(webhookId, nth);
      let event: ReceivedWebhook['event'] = null;
      let error: string | null = null;
      try {
        if (!receiver.secret) throw new Error('no secret yet');
        event = new Webhook(receiver.secret).verify(body, {
          'webhook-id': webhookId,
          'webhook-timestamp': String(req.headers['webhook-timestamp'] ?? ''),
          'webhook-signature': String(req.headers['webhook-signature'] ?? ''),
        }) as ReceivedWebhook['event'];
      } catch (err) {
        error = (err as Error).message;
      }
      const answer = event ? receiver.answer({ body, nth, webhookId }) : 400;
      if (answer === 'hang') return;
      receiver.received.push({
        path: req.url ?? '/',
        headers: req.headers,
        body,
        event,
        error,
        status: answer,
      });
      res.writeHead(answer, { 'content-type': 'text/plain' });
      res.end(answer < 300 ? 'ok' : 'no');
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.port = (server.address() as AddressInfo).port;
  receiver.url = `http://127.0.0.1:${receiver.port}/hooks`;
  return receiver;
}
