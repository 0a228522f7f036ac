/**
 * Structured logs: one JSON object per event. The daemon never puts API keys in a log entry (it logs
 * request ids, models and upstream hosts, never headers or template keys).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface LogEntry {
  level: LogLevel;
  msg: string;
  time: string;
  [field: string]: unknown;
}

export type Logger = (entry: LogEntry) => void;

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** JSON lines on stderr at `minLevel` and above. */
export function stderrLogger(minLevel: LogLevel = 'info'): Logger {
  return (entry) => {
    if (RANK[entry.level] >= RANK[minLevel]) process.stderr.write(`${JSON.stringify(entry)}\n`);
  };
}

export interface DaemonLog {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function daemonLog(logger: Logger, base: Record<string, unknown>): DaemonLog {
  const emit = (level: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    try {
      logger({ level, msg, time: new Date().toISOString(), ...base, ...fields });
    } catch {
      // A failing log sink must not take the daemon down.
    }
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

/** An error as loggable fields (message and code only: errors may carry request options). */
export function errorFields(err: unknown): Record<string, unknown> {
  const e = err as { message?: string; code?: string; name?: string } | null;
  return { error: e?.message ?? String(err), errorCode: e?.code, errorName: e?.name };
}
