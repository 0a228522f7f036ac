/**
 * A problem the user can fix (bad flag, unreadable file, unreachable database): the CLI prints its
 * message on one line, without a stack trace, and exits with status 2 (or `exitCode`).
 */
export class UsageError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = 'UsageError';
    this.exitCode = exitCode;
  }
}
