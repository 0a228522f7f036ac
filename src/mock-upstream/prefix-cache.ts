/**
 * The mock upstream's prompt cache, as an inference server's prefix cache behaves (vLLM automatic
 * prefix caching, SGLang's radix cache, OpenAI and Anthropic prompt caching): a request whose prompt
 * begins with a prefix seen in the last `ttlMs` is a hit (answered after `hitLatencyMs` instead of
 * the mock's latency), and the cache holds at most `capacity` prefixes, evicting the least recently
 * used; a real server's cache is bounded by its KV memory, which is why the order of requests
 * matters at all.
 *
 * The prefix is everything the request sends before its last message: `tools`, `system`,
 * `instructions` and all of `messages` (or `input`) but the last, in canonical JSON. This is the
 * server's view, worked out here on its own, not fusillade's hash (src/domain/prompt-prefix.ts).
 * A prefix is recorded when its request arrives, so requests sent side by side after the first
 * share it (as a server that batches their prefill does). A request with nothing before its last
 * message is `uncached` (neither hit nor miss).
 */

export interface PrefixCacheOptions {
  /** Prefixes held at once (least recently used evicted first); default 4. */
  capacity?: number;
  /** How long an unused prefix stays; default 5000 ms. */
  ttlMs?: number;
  /** The answer's delay on a hit (a miss waits the mock's latency); default 0. */
  hitLatencyMs?: number;
}

export interface PrefixCacheStats {
  hits: number;
  misses: number;
  uncached: number;
}

export type PrefixLookup = 'hit' | 'miss' | 'uncached';

function canonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
}

/** Everything before a parsed body's last message, canonical; null when that is nothing. */
export function cacheablePrefix(parsed: unknown): string | null {
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return null;
  const body = parsed as Record<string, unknown>;
  const list = Array.isArray(body.messages) ? body.messages : Array.isArray(body.input) ? body.input : [];
  const before = list.slice(0, -1);
  const head = { tools: body.tools, system: body.system, instructions: body.instructions };
  if (before.length === 0 && Object.values(head).every((v) => v === undefined)) return null;
  return canonical({ ...head, before });
}

export class PrefixCache {
  readonly capacity: number;
  readonly ttlMs: number;
  readonly hitLatencyMs: number;
  /** Prefix → when last used; Map order is use order (oldest first). */
  private readonly entries = new Map<string, number>();
  private counts: PrefixCacheStats = { hits: 0, misses: 0, uncached: 0 };

  constructor(options: PrefixCacheOptions = {}) {
    this.capacity = Math.max(1, options.capacity ?? 4);
    this.ttlMs = options.ttlMs ?? 5000;
    this.hitLatencyMs = options.hitLatencyMs ?? 0;
  }

  /** Looks a request's prefix up and records its use at `now`. */
  lookup(parsed: unknown, now = Date.now()): PrefixLookup {
    const prefix = cacheablePrefix(parsed);
    if (prefix === null) {
      this.counts.uncached++;
      return 'uncached';
    }
    const seen = this.entries.get(prefix);
    const hit = seen !== undefined && now - seen <= this.ttlMs;
    this.entries.delete(prefix);
    this.entries.set(prefix, now);
    while (this.entries.size > this.capacity) {
      this.entries.delete(this.entries.keys().next().value as string);
    }
    if (hit) this.counts.hits++;
    else this.counts.misses++;
    return hit ? 'hit' : 'miss';
  }

  stats(): PrefixCacheStats {
    return { ...this.counts };
  }

  /** Forgets the counts and the cached prefixes. */
  reset(): void {
    this.entries.clear();
    this.counts = { hits: 0, misses: 0, uncached: 0 };
  }
}
