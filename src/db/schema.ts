/** Name of the PostgreSQL schema holding fusillade's tables, validated so it can be inlined in SQL. */
export const DEFAULT_SCHEMA = 'fusillade';

export function assertSchemaName(schema: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new TypeError(`invalid schema name ${JSON.stringify(schema)}: use lowercase letters, digits and _`);
  }
  return schema;
}

/** The quoted schema prefix used in every query, e.g. `"fusillade".` */
export function qualify(schema: string): string {
  return `"${assertSchemaName(schema)}"`;
}

/** NOTIFY channel for a schema's events (batch created / cancelled), one notification per batch. */
export function eventsChannel(schema: string): string {
  return `${assertSchemaName(schema)}_events`;
}
