import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import type { Settings } from '../../config/settings.js';
import { UsageError } from '../../config/usage-error.js';
import type { DaemonHandle } from '../../dispatch/interfaces.js';
import { stderrLogger } from '../../dispatch/logger.js';
import { ConflictError, ValidationError } from '../../domain/errors.js';
import { PostgresRequestManager } from '../../manager/request-manager.js';
import { usageFields } from '../../server/usage-object.js';
import { daemonConfigFor } from '../daemon-config.js';
import { type Database, openDatabase } from '../database.js';
import type { CommandContext } from '../main.js';
import { ProgressDisplay } from '../progress.js';
import {
  describeFsError,
  type InputFile,
  inputTemplates,
  inspectInput,
  runInputParser,
} from '../run/input.js';
import { EndedTally, toCounts, Wake, watch } from '../run/watch.js';
import { writeBatchFile } from '../run/write-results.js';
import { exitStatusFor, shutdownSignal } from '../signals.js';
import { checkUpstreamReachable, resolveUpstream } from '../upstream.js';
import { usageLines } from '../usage-lines.js';

/** Owner of the files and batches `run` stores (the server's API keys never see them). */
export const RUN_OWNER = 'cli';

/**
 * `fusillade run INPUT -o OUTPUT`: the whole job in one process. The batch is named by the input's
 * content and upstream, so running the same command again resumes it: completed requests are kept,
 * requests a killed run left in flight are reclaimed by the daemon, failed ones are retried.
 */
export async function runCommand(
  { settings, flags, verbose }: CommandContext,
  inputPath: string,
): Promise<number> {
  const output = String(flags.output);
  const errorsPath = typeof flags.errors === 'string' ? flags.errors : undefined;
  const modelUpstreams = Object.values(settings.routing.models ?? {}).some((m) => m.upstream);
  if (settings.upstream === undefined && !modelUpstreams) {
    throw new UsageError('--upstream is required: a base URL (e.g. https://api.openai.com) or "mock"');
  }
  const timings = new PhaseTimer(verbose);
  const input = await inspectInput(inputPath);
  const shutdown = shutdownSignal();
  const upstream = await resolveUpstream(settings);
  const cleanup: (() => Promise<void>)[] = [() => upstream.close()];
  try {
    // The daemon's modules (undici, prom-client, …) load while the database opens and the input is
    // stored; manager.run() then finds them loaded.
    void import('../../daemon/daemon.js').catch(() => {});
    // The upstream is probed while the database opens and the input is stored; the input's
    // transaction commits only once the probe has answered (see createBatchOf), so an unreachable
    // upstream still stores nothing, and the daemon starts only after it answered.
    const reachable = new Probe(upstream.url ? checkUpstreamReachable(upstream.url) : Promise.resolve());
    const db = await openBesideUpstreamCheck(settings, reachable);
    cleanup.unshift(() => db.close());
    const manager = new PostgresRequestManager(db.pool, {
      schema: db.schema,
      ...daemonConfigFor(settings, upstream.routing, {
        // The progress bar tells the story; the daemon's info lines would only scroll it away.
        logger: stderrLogger(verbose ? 'info' : 'warn'),
      }),
    });
    timings.mark('start up');
    const router = manager.config.upstreamRouter!;
    const key = runKey(input, upstream.identity);
    // The daemon tells when it ends the batch: the watch reads the counts then, not at its next poll.
    const ended = new Wake();
    // What the daemon ends of the batch, shown between counts of it (src/cli/run/watch.ts).
    const tally = new EndedTally();
    let batchId: string | undefined;
    let daemonStart: Promise<DaemonHandle> | undefined;
    const startDaemon = (): Promise<DaemonHandle> => {
      if (daemonStart) return daemonStart;
      const started = manager.run({
        onBatchFinished: (id) => {
          if (id === batchId) ended.wake();
        },
        onRequestEnded: (id, state) => {
          if (id === batchId) tally.add(state);
        },
      });
      cleanup.unshift(() => started.then((d) => d.stop()));
      daemonStart = started;
      return started;
    };
    const existing = await manager.findBatchByIdempotencyKey(key, { owner: RUN_OWNER });
    // A new batch: the daemon starts (session, registration, budgets) while the input is stored,
    // and its first claim follows the batch's creation notice. A resumed one is rerouted first.
    // Measured with this, the database opened beside the upstream probe, the daemon stopped while
    // the results are written, counts read at the display's pace and the exit at flush: 2,000 ×
    // 100 ms at 100 in flight, mock, raw undici and each run processes of their own, 5 rotating
    // rounds at load 12–15 on the 2-core machine: 12.4 s against 14.4 s before (raw undici 5.5 s);
    // last answer to exit 1.00 s against 1.48 s (raw 0.25 s); first request out 4.6 s against
    // 5.3 s (raw 1.6 s). What remains before the first request is mostly module loading (main,
    // run and daemon graphs: ≈ 0.3 + 0.35 + 0.65 s of wall at load 7, 230 CommonJS files, of which
    // undici 110, prom-client 32 and the @opentelemetry/api it requires 51).
    if (!existing) void reachable.answered.then(startDaemon).catch(() => {});
    else await reachable.answered;
    const found = existing
      ? { batchId: existing, resumed: true }
      : await createBatchOf(manager, input, key, (model) => router.route(model)?.endpoint, flags, reachable);
    batchId = found.batchId;
    const resumed = found.resumed;
    if (resumed) {
      // The previous run may have had another key, or per-model upstreams: this run's routing decides
      // where its remaining requests go (its own daemon sends only what it can send exactly).
      const moved = await manager.rerouteBatch(batchId, { requireRoutes: true }).catch((err) => {
        if (err instanceof ValidationError) throw new UsageError(`${input.path}: ${err.message}`);
        throw err;
      });
      if (moved > 0)
        console.error(
          `sending ${moved} request${moved === 1 ? '' : 's'} of the previous run to this run's upstream`,
        );
    }
    timings.mark('store the input');
    let status = await manager.getBatchStatus(batchId);
    if (status.finishedAt !== null && status.failedRequests > 0) {
      const n = await manager.retryFailedRequests(batchId);
      console.error(`retrying ${n} failed request${n === 1 ? '' : 's'} of the previous run`);
      status = await manager.getBatchStatus(batchId);
    } else if (status.completedRequests > 0 && status.finishedAt === null) {
      console.error(`resuming: ${status.completedRequests} of ${status.totalRequests} requests already done`);
    }

    const daemon = status.finishedAt === null ? await startDaemon() : undefined;
    const progress = new ProgressDisplay(process.stdout);
    const outcome = await watch(manager, batchId, progress, shutdown.signal, daemon?.done, ended, tally);
    if (outcome.signal) {
      progress.interrupt();
      const s = outcome.status;
      console.error(
        `fusillade: interrupted (${outcome.signal}) with ${s.completedRequests + s.failedRequests} of ${s.totalRequests} done; ` +
          'run the same command again to resume',
      );
      return exitStatusFor(outcome.signal);
    }
    status = outcome.status;
    progress.finish(toCounts(status));
    timings.mark('send the requests');
    // The daemon stops (hands back what it holds of other batches, says it stopped) while the
    // results are written: they are all in the table already.
    const stopped = daemonStart?.then((d) => d.stop());

    const errorFile = errorsPath ?? `${output.replace(/\.jsonl$/, '')}.errors.jsonl`;
    const unsuccessful = status.failedRequests + status.canceledRequests;
    try {
      await writeBatchFile(manager, batchId, 'batch_output', output);
      if (errorsPath !== undefined || unsuccessful > 0) {
        await writeBatchFile(manager, batchId, 'batch_error', errorFile);
      }
    } catch (err) {
      throw new UsageError(`cannot write results: ${describeFsError(err)}`, 1);
    }
    await stopped;
    timings.mark('write the results');
    console.log(
      `${status.status}: ${status.completedRequests} succeeded, ${status.failedRequests} failed` +
        (status.canceledRequests > 0 ? `, ${status.canceledRequests} canceled` : '') +
        ` → ${output}` +
        (errorsPath !== undefined || unsuccessful > 0 ? `, errors → ${errorFile}` : ''),
    );
    if (status.usage.totalTokens > 0) {
      for (const line of usageLines(usageFields(status.usage, status.usageByModel, settings.modelPrices)))
        console.log(line);
    }
    return unsuccessful === 0 && status.completedRequests === status.totalRequests ? 0 : 1;
  } finally {
    shutdown.dispose();
    for (const step of cleanup) await step().catch(() => {});
  }
}

/** Content hash of the input + the upstream: the same command on the same file names the same run. */
function runKey(input: InputFile, upstreamIdentity: string): string {
  const upstream = createHash('sha256').update(upstreamIdentity).digest('hex').slice(0, 16);
  return `run:${input.sha256}:${upstream}`;
}

/** The upstream probe, started at once and looked at later: whether it failed, and its outcome. */
class Probe {
  failed: unknown = undefined;
  readonly answered: Promise<void>;
  constructor(probe: Promise<void>) {
    this.answered = probe;
    probe.catch((err: unknown) => {
      this.failed = err ?? new Error('the upstream probe failed');
    });
  }
}

/**
 * Opens the database while the upstream is probed (each waits on the network, neither needs the
 * other), without waiting for the probe's answer once the database is open. When both fail, the
 * unreachable upstream is reported first, as when they ran one after the other.
 * The probe is a HEAD (≥ 100 ms against the bench's mock, which delays every answer; a network
 * round trip and a TLS handshake against a real upstream), opening the database a few round trips.
 * Measured (start of run's modules → the batch's lookup, 4 alternating runs at load 14–15, 2-core
 * machine): 191–319 ms, median 239, with the probe awaited here; 133–253, median 212, without.
 */
async function openBesideUpstreamCheck(settings: Settings, reachable: Probe): Promise<Database> {
  try {
    return await openDatabase(settings, { log: (m) => console.error(m) });
  } catch (err) {
    await reachable.answered;
    throw err;
  }
}

/** The items, then the probe's answer: a failed probe ends them with its error, at once if it failed already. */
async function* thenReachable<T>(items: AsyncIterable<T>, reachable: Probe): AsyncGenerator<T> {
  for await (const item of items) {
    if (reachable.failed !== undefined) throw reachable.failed;
    yield item;
  }
  await reachable.answered;
}

/** Stores the input and creates its batch (or finds the one a concurrent run of the same command made). */
async function createBatchOf(
  manager: PostgresRequestManager,
  input: InputFile,
  key: string,
  endpointOf: (model: string) => string | undefined,
  flags: CommandContext['flags'],
  reachable: Probe,
): Promise<{ batchId: string; resumed: boolean }> {
  let fileId: string;
  const parser = runInputParser();
  try {
    fileId = await manager.createFileStream(
      basename(input.path),
      `fusillade run ${input.path}`,
      // The file's transaction commits after the last template: only once the upstream answered.
      thenReachable(inputTemplates(input, endpointOf, parser), reachable),
      {
        owner: RUN_OWNER,
        sizeBytes: input.bytes,
      },
    );
  } catch (err) {
    if (err instanceof ValidationError) throw new UsageError(`${input.path}: ${err.message}`);
    throw err;
  }
  try {
    const batchId = await manager.createBatch(fileId, {
      requireRoutes: true,
      owner: RUN_OWNER,
      idempotencyKey: key,
      endpoint: parser.url ?? '',
      completionWindow: String(flags.completionWindow ?? '24h'),
      metadata: { source: 'fusillade run', input: basename(input.path).slice(0, 500) },
      coalesce: flags.coalesce === true,
    });
    return { batchId, resumed: false };
  } catch (err) {
    // The same run started concurrently elsewhere: use its batch, drop our copy of the file.
    if (err instanceof ConflictError) {
      await manager.deleteFile(fileId).catch(() => {});
      const winner = await manager.findBatchByIdempotencyKey(key, { owner: RUN_OWNER });
      if (winner) return { batchId: winner, resumed: true };
    }
    if (err instanceof ValidationError) throw new UsageError(`${input.path}: ${err.message}`);
    throw err;
  }
}

/** With --verbose, how long each phase took (on stderr); the first from the process's start. */
class PhaseTimer {
  private last = 0;
  constructor(private readonly enabled: boolean) {}
  mark(phase: string): void {
    const now = performance.now();
    if (this.enabled) console.error(`${phase}: ${((now - this.last) / 1000).toFixed(2)} s`);
    this.last = now;
  }
}
