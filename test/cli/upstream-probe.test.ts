import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { checkUpstreamReachable } from '../../src/cli/upstream.js';
import { TEST_DATABASE_URL } from '../support/db.js';
import { closedPort } from './support/cli.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

async function listening(server: Server | ReturnType<typeof createTcpServer>): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/**
 * `run`'s probe of the upstream (src/cli/upstream.ts) and what `run` loads before its first request:
 * neither the probe nor pg loads Node's bundled undici (issue 10, start-up CPU).
 */
describe("run's upstream probe", () => {
  it('takes any HTTP answer, 404 and 401 included, as reachable', async () => {
    const methods: string[] = [];
    const server = createServer((req, res) => {
      methods.push(req.method!);
      res.statusCode = methods.length === 1 ? 404 : 401;
      res.end();
    });
    const url = await listening(server);
    await checkUpstreamReachable(url);
    await checkUpstreamReachable(url.replace('http://', 'http://user:secret@'));
    expect(methods).toEqual(['HEAD', 'HEAD']);
  });

  it('names the connection error, and a silent upstream by its timeout', async () => {
    const port = await closedPort();
    await expect(checkUpstreamReachable(`http://127.0.0.1:${port}`)).rejects.toThrow(
      `cannot reach the upstream http://127.0.0.1:${port}: ECONNREFUSED`,
    );
    const sockets: Socket[] = [];
    const silent = createTcpServer((s) => sockets.push(s));
    closers.push(async () => {
      for (const s of sockets) s.destroy();
    });
    const url = await listening(silent);
    await expect(checkUpstreamReachable(url, 200)).rejects.toThrow(
      `cannot reach the upstream ${url}: no answer within 0.2 s`,
    );
    await expect(checkUpstreamReachable('ftp://127.0.0.1/')).rejects.toThrow(/cannot reach the upstream/);
  });

  it('loads no Node undici with pg connected and the upstream probed, and would see it loaded', async () => {
    const server = createServer((_req, res) => res.end());
    const url = await listening(server);
    // A process of its own, as the CLI starts: main's first import, then run's (pg, the probe).
    const script = (extra: string) => `
      await import('./src/cli/main.ts');
      const pg = (await import('pg')).default;
      const { checkUpstreamReachable } = await import('./src/cli/upstream.ts');
      const client = new pg.Client(${JSON.stringify(TEST_DATABASE_URL)});
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      await checkUpstreamReachable(${JSON.stringify(url)});
      ${extra}
      console.log(JSON.stringify({
        undici: process.moduleLoadList.some((m) => m.includes('internal/deps/undici')),
        navigator: typeof navigator,
      }));
    `;
    const run = async (extra: string) => {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script(extra)],
        { cwd: root },
      );
      return JSON.parse(stdout.trim().split('\n').pop()!);
    };
    const [bare, withFetch] = await Promise.all([run(''), run('new Response(null);')]);
    expect(bare.undici).toBe(false);
    expect(withFetch.undici).toBe(true);
    // Node 20 has no navigator; pg-runtime's is gone once pg's stream module has loaded.
    expect(bare.navigator).toBe(Number(process.versions.node.split('.')[0]) >= 21 ? 'object' : 'undefined');
  });
});
