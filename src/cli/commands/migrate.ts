import { migrateWith, openDatabase } from '../database.js';
import type { CommandContext } from '../main.js';

export async function migrateCommand({ settings }: CommandContext): Promise<number> {
  const db = await openDatabase(settings, { migrate: false, poolSize: 2, log: (m) => console.error(m) });
  try {
    const applied = await migrateWith(settings.directDatabaseUrl, db.pool, db.schema);
    console.log(
      applied.length > 0
        ? `applied migrations ${applied.join(', ')} to schema "${db.schema}" (${db.describe})`
        : `schema "${db.schema}" is up to date (${db.describe})`,
    );
    return 0;
  } finally {
    await db.close();
  }
}
