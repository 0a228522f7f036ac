import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** The unprivileged account PostgreSQL runs under; undefined when we are not root. */
export interface RunAsUser {
  name: string;
  uid: number;
  gid: number;
}

/**
 * PostgreSQL refuses to run as root. As root (CI, containers) it runs under `preferred` (the
 * FUSILLADE_EMBEDDED_USER setting), else the `postgres` system account, else `nobody`, never
 * creating accounts on the host.
 */
export async function postgresRunAsUser(preferred?: string): Promise<RunAsUser | undefined> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const candidates = [preferred, 'postgres', 'nobody'].filter((n): n is string => !!n);
  for (const name of candidates) {
    try {
      const [uid, gid] = await Promise.all([exec('id', ['-u', name]), exec('id', ['-g', name])]);
      return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
    } catch {
      // try the next account
    }
  }
  throw new Error(
    'running as root, and no unprivileged account (postgres, nobody) exists for the embedded PostgreSQL; ' +
      'set FUSILLADE_EMBEDDED_USER or pass --database-url',
  );
}
