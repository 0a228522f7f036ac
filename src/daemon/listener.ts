import pg from 'pg';
import type { DaemonLog } from './logger.js';
import { errorFields } from './logger.js';

export interface BatchEventMessage {
  type: 'batch_created' | 'batch_cancelled' | 'batch_reopened' | string;
  batchId: string;
}

/**
 * LISTEN on the schema's events channel over a dedicated connection (a pooled one would be handed
 * to others). On any error or end it reconnects with capped exponential backoff and reports
 * `onReconnect`, since notifications sent while it was away are lost: the daemon then polls.
 */
export class EventListener {
  private client: pg.Client | null = null;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private attempt = 0;

  constructor(
    private readonly connection: pg.ClientConfig,
    private readonly channel: string,
    private readonly onEvent: (event: BatchEventMessage) => void,
    private readonly onReconnect: () => void,
    private readonly log: DaemonLog,
  ) {}

  /** Connects once; later failures are retried in the background. */
  async start(): Promise<void> {
    await this.connect().catch((err) => {
      this.log.warn('listen connection failed, retrying', errorFields(err));
      this.scheduleReconnect();
    });
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ ...this.connection, keepAlive: true });
    client.on('error', (err) => {
      this.log.warn('listen connection lost', errorFields(err));
      this.drop(client);
    });
    client.on('end', () => this.drop(client));
    client.on('notification', (msg) => {
      if (!msg.payload) return;
      try {
        this.onEvent(JSON.parse(msg.payload) as BatchEventMessage);
      } catch {
        this.log.warn('unreadable notification', { channel: msg.channel });
      }
    });
    this.client = client;
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
    } catch (err) {
      this.drop(client);
      throw err;
    }
    if (this.stopped) {
      await client.end().catch(() => {});
      return;
    }
    if (this.attempt > 0) this.onReconnect();
    this.attempt = 0;
  }

  private drop(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = null;
    client.removeAllListeners('notification');
    client.end().catch(() => {});
    if (!this.stopped) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = Math.min(10_000, 100 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect().catch((err) => {
        this.log.warn('listen reconnect failed', errorFields(err));
        this.scheduleReconnect();
      });
    }, delay);
  }

  get connected(): boolean {
    return this.client !== null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = null;
    if (client) await client.end().catch(() => {});
  }
}
