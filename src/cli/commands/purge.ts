import { UsageError } from '../../config/usage-error.js';
import { describePurge } from '../../db/purge.js';
import { parseDuration } from '../../domain/duration.js';
import { withManager } from '../database.js';
import type { CommandContext } from '../main.js';

/**
 * `fusillade purge [--older-than DURATION] [--dry-run]`: runs the retention purge now
 * (src/db/purge.ts) and says what it removed. Without --older-than, the configured retention
 * (retention.finishedBatches) applies, else only expired and deleted data goes.
 */
export async function purgeCommand({ settings, flags }: CommandContext): Promise<number> {
  const olderThan = (flags.olderThan as string | undefined) ?? settings.finishedBatchRetention;
  const olderThanMs = olderThan === undefined ? undefined : parseDuration(olderThan);
  if (olderThan !== undefined && olderThanMs === undefined) {
    throw new UsageError(
      `--older-than must be a duration such as "30d", "12h" or "0s", got ${JSON.stringify(olderThan)}`,
    );
  }
  return withManager(settings, async (manager) => {
    const options = olderThanMs === undefined ? {} : { olderThanMs };
    const report = flags.dryRun === true ? await manager.previewPurge(options) : await manager.purge(options);
    console.log(describePurge(report, flags.dryRun === true));
    return 0;
  });
}
