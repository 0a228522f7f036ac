import pg from 'pg';
import { takeLivenessLockSql } from '../db/sql/queue/liveness.js';
import type { DaemonLog } from '../dispatch/logger.js';
import { errorFields } from '../dispatch/logger.js';

export interface BatchEventMessage {
  type: 'batch_created' | 'batch_cancelled' | 'batch_reopened' | string;
  batchId: string;
}

/** The daemon's liveness lock (src/db/sql/queue/liveness.ts), held on the listener's session. */
export interface LivenessLock {
  /** pg_advisory_lock(bigint) key, as decimal text. */
  key: string;
  /** Called when the lock is taken (true) and when the session holding it is lost (false). */
  onChange(held: boolean): void;
}

/** Tries to take a liveness lock that is briefly busy (another daemon's probe holds it for a statement). */
const LOCK_TRIES = 20;
const LOCK_RETRY_MS = 50;
/** Backoff cap of reconnecting: kept short, since the liveness lock lives on this session. */
const MAX_RECONNECT_MS = 2000;

/**
 * The daemon's session connection, dedicated (a pooled one would be handed to others): it LISTENs on
 * the schema's events channel, then holds the daemon's liveness lock (so the lock's statement, retried
 * while a terminated predecessor session still holds it, always comes after the LISTEN). On any error or end it
 * reconnects with capped exponential backoff, takes the lock again and reports `onReconnect`, since
 * notifications sent while it was away are lost: the daemon then polls.
 */
export class EventListener {
  private client: pg.Client | null = null;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private lockTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private held = false;

  constructor(
    private readonly connection: pg.ClientConfig,
    private readonly channel: string,
    private readonly onEvent: (event: BatchEventMessage) => void,
    private readonly onReconnect: () => void,
    private readonly log: DaemonLog,
    private readonly liveness: LivenessLock | null = null,
  ) {}

  /** Whether this session holds the daemon's liveness lock now. */
  get holdsLock(): boolean {
    return this.held;
  }

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
      if (this.liveness) await this.takeLock(client, LOCK_TRIES);
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

  /**
   * Takes the liveness lock on `client`, trying `tries` times; if it is still busy (a key held by
   * something else, which random 64-bit keys make unlikely), keeps trying every second meanwhile.
   */
  private async takeLock(client: pg.Client, tries: number, warn = true): Promise<void> {
    const liveness = this.liveness!;
    for (let i = 0; i < tries; i++) {
      const { rows } = await client.query<{ held: boolean }>(takeLivenessLockSql, [liveness.key]);
      if (this.client !== client) return;
      if (rows[0]?.held) {
        this.held = true;
        liveness.onChange(true);
        return;
      }
      await new Promise((r) => setTimeout(r, LOCK_RETRY_MS));
    }
    if (warn) this.log.warn('liveness lock busy; retrying (the heartbeat stands in meanwhile)', {});
    this.lockTimer = setTimeout(() => {
      this.lockTimer = null;
      if (this.client === client && !this.held) {
        this.takeLock(client, 1, false).catch((err) =>
          this.log.warn('liveness lock failed', errorFields(err)),
        );
      }
    }, 1000);
  }

  private drop(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = null;
    if (this.lockTimer) clearTimeout(this.lockTimer);
    this.lockTimer = null;
    if (this.held) {
      // The server released the lock with the session (or is about to).
      this.held = false;
      this.liveness?.onChange(false);
    }
    client.removeAllListeners('notification');
    client.end().catch(() => {});
    if (!this.stopped) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = Math.min(MAX_RECONNECT_MS, 100 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
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
    if (this.lockTimer) clearTimeout(this.lockTimer);
    const client = this.client;
    this.client = null;
    this.held = false;
    if (client) await client.end().catch(() => {});
  }
}
