import { ValidationError, type ValidationIssue } from '../domain/errors.js';
import { checkValue } from './resolve.js';
import { type DaemonSettings, type SettingSpec, settingSpecs } from './schema.js';

/** The daemon settings' defaults (schema.ts), the base of DEFAULT_DAEMON_CONFIG. */
export const DAEMON_DEFAULTS: DaemonSettings = Object.fromEntries(
  settingSpecs()
    .filter(([, spec]) => spec.daemon && spec.default !== undefined)
    .map(([name, spec]) => [name, spec.default]),
) as DaemonSettings;

const DAEMON_SPECS = new Map<string, SettingSpec>(settingSpecs().filter(([, spec]) => spec.daemon));

/**
 * Checks the daemon settings of a library config (`new PostgresRequestManager(pool, config)`):
 * types and ranges as schema.ts states them. Undefined fields are skipped (they keep the default);
 * fields that are not settings (logger, hooks) are not looked at. Throws a ValidationError with one
 * issue per bad field, `param` naming it.
 */
export function checkDaemonSettings(config: Record<string, unknown>): void {
  const issues: ValidationIssue[] = [];
  for (const [name, value] of Object.entries(config)) {
    const spec = DAEMON_SPECS.get(name);
    if (!spec || value === undefined) continue;
    const values = spec.perModel
      ? Object.entries((value ?? {}) as Record<string, unknown>).map(
          ([m, x]) => [`${name}["${m}"]`, x] as const,
        )
      : [[name, value] as const];
    for (const [where, x] of values) {
      try {
        checkValue(spec, x, where);
      } catch (err) {
        issues.push({ code: 'invalid_config', message: (err as Error).message, param: name });
      }
    }
  }
  if (issues.length > 0) throw new ValidationError(issues);
}
