/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, or the inspector's Profiler.stop) of a whole
 * process: self and inclusive time per function and per module (a package under node_modules, a
 * file of ours, a node: module), and the time spent under any frame named on the command line.
 *
 *   node --import tsx bench/cpu-profile.ts PROFILE.cpuprofile [ROWS] [--under NAME]
 *
 * V8's sampler records where the main thread was at each tick of wall time: a thread descheduled
 * inside a system call (a loopback write that wakes its reader, on a loaded machine) keeps being
 * counted there, so self times of syscalls read high against the process's CPU. For CPU itself,
 * all threads: `perf record -e cpu-clock -g` with `node --perf-basic-prof`
 * (docs/decisions/pipe-profile-20k.md, "The process's CPU").
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** A frame's file without the checkout's path: `dist/src/daemon/pipe.js`, `node_modules/pg/…`, `node:net`. */
const shortUrl = (url: string): string =>
  url
    .replace(/^file:\/\//, '')
    .replace(/^\/.*?\/node_modules\//, 'node_modules/')
    .replace(`${process.cwd()}/`, '');
const frameKey = (n: ProfileNode): string =>
  `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
const moduleKey = (n: ProfileNode): string => {
  const url = shortUrl(n.callFrame.url);
  const pkg = url.match(/node_modules\/(@[^/]+\/[^/]+|[^/]+)/);
  return pkg ? pkg[1]! : url || `(${n.callFrame.functionName})`;
};

export interface ProfileSummary {
  totalMs: number;
  selfByFunction: Map<string, number>;
  selfByModule: Map<string, number>;
  inclusiveByFunction: Map<string, number>;
  inclusiveByModule: Map<string, number>;
}

/** Self and inclusive ms per function and per module; a recursive frame counts once per sample. */
export function summarise(profile: Profile): ProfileSummary {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? 0));
  });
  const s: ProfileSummary = {
    totalMs: 0,
    selfByFunction: new Map(),
    selfByModule: new Map(),
    inclusiveByFunction: new Map(),
    inclusiveByModule: new Map(),
  };
  const add = (m: Map<string, number>, k: string, ms: number) => m.set(k, (m.get(k) ?? 0) + ms);
  for (const [id, us] of selfUs) {
    const ms = us / 1000;
    const leaf = nodes.get(id)!;
    s.totalMs += ms;
    add(s.selfByFunction, frameKey(leaf), ms);
    add(s.selfByModule, moduleKey(leaf), ms);
    const functions = new Set<string>();
    const modules = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = nodes.get(at)!;
      functions.add(frameKey(n));
      modules.add(moduleKey(n));
    }
    for (const f of functions) add(s.inclusiveByFunction, f, ms);
    for (const m of modules) add(s.inclusiveByModule, m, ms);
  }
  return s;
}

/** Inclusive ms per function under every frame whose function is `name` (the first such frame up the stack). */
export function under(profile: Profile, name: string): Map<string, number> {
  const out = new Map<string, number>();
  const visit = (id: number, inside: boolean): void => {
    const n = profile.nodes.find((x) => x.id === id)!;
    const now = inside || n.callFrame.functionName === name;
    if (now) {
      const own = profile.samples.reduce(
        (sum, s, i) => (s === id ? sum + (profile.timeDeltas[i + 1] ?? 0) : sum),
        0,
      );
      out.set(frameKey(n), (out.get(frameKey(n)) ?? 0) + own / 1000);
    }
    for (const c of n.children ?? []) visit(c, now);
  };
  visit(profile.nodes[0]!.id, false);
  return out;
}

function table(title: string, m: Map<string, number>, total: number, rows: number): string {
  const lines = [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, rows)
    .map(
      ([k, ms]) => `${ms.toFixed(1).padStart(9)} ms ${((100 * ms) / total).toFixed(1).padStart(5)} %  ${k}`,
    );
  return [`\n== ${title}`, ...lines].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, rowsText, flag, name] = process.argv.slice(2);
  if (!file) {
    console.error('usage: bench/cpu-profile.ts PROFILE.cpuprofile [ROWS] [--under NAME]');
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const rows = Number(rowsText ?? 40);
  const s = summarise(profile);
  console.log(`total ${s.totalMs.toFixed(0)} ms (idle included)`);
  console.log(table('self by function', s.selfByFunction, s.totalMs, rows));
  console.log(table('self by module', s.selfByModule, s.totalMs, rows));
  console.log(table('inclusive by module', s.inclusiveByModule, s.totalMs, rows));
  console.log(table('inclusive by function', s.inclusiveByFunction, s.totalMs, rows));
  if (flag === '--under' && name) {
    console.log(table(`self time under ${name}, by function`, under(profile, name), s.totalMs, rows));
  }
}
