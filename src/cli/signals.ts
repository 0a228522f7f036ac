/**
 * Resolves on the first SIGINT or SIGTERM, so a command can stop gracefully (hand its work back,
 * stop the embedded PostgreSQL). A second signal exits at once: the user really wants out.
 */
export function shutdownSignal(): { signal: Promise<NodeJS.Signals>; dispose(): void } {
  let received: NodeJS.Signals | undefined;
  let resolve!: (s: NodeJS.Signals) => void;
  const signal = new Promise<NodeJS.Signals>((r) => {
    resolve = r;
  });
  const onSignal = (s: NodeJS.Signals) => {
    if (received) {
      process.stderr.write(`\nfusillade: ${s} again, exiting now\n`);
      process.exit(exitStatusFor(s));
    }
    received = s;
    resolve(s);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** The shell convention: 128 + signal number. */
export function exitStatusFor(signal: NodeJS.Signals): number {
  return signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 1;
}
