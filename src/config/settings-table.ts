import { type CommandName, filePaths, type SettingSpec, settingSpecs } from './schema.js';

/**
 * The README's settings tables, generated from schema.ts: `npm run docs:settings` rewrites them
 * between their markers, and test/config/settings-table.test.ts fails when the README is stale.
 * Cells are padded as biome formats markdown tables, so the generated text is already formatted.
 */

const ALL_COMMANDS: readonly CommandName[] = [
  'serve',
  'daemon',
  'run',
  'migrate',
  'keys',
  'submit',
  'status',
  'results',
  'cancel',
  'mock-upstream',
];

export const TABLES = {
  /** Where things are and how the CLI reaches them. */
  general: { marker: 'settings', daemon: false },
  /** The daemon's tuning (config file `daemon` object, or the library's config). */
  daemon: { marker: 'daemon-settings', daemon: true },
} as const;

export function renderTable(which: keyof typeof TABLES): string {
  const daemon = TABLES[which].daemon;
  const rows = settingSpecs()
    .filter(([, spec]) => (spec.daemon ?? false) === daemon)
    .map(([name, spec]) => {
      const row = [
        `\`${name}\``,
        valuesCell(spec),
        flagCell(spec),
        envCell(spec),
        fileCell(spec),
        defaultCell(spec),
      ];
      if (!daemon) row.push(commandsCell(spec));
      row.push(escapeCell(spec.description));
      return row;
    });
  const header = ['setting', 'values', 'flag', 'environment', 'config file', 'default'];
  if (!daemon) header.push('commands');
  header.push('meaning');
  return formatTable(header, rows);
}

/** The README with every generated table replaced between its markers. */
export function updateReadme(readme: string): string {
  let out = readme;
  for (const which of Object.keys(TABLES) as (keyof typeof TABLES)[]) {
    const { marker } = TABLES[which];
    const start = `<!-- ${marker}:start (generated from src/config/schema.ts by npm run docs:settings) -->`;
    const end = `<!-- ${marker}:end -->`;
    const from = out.indexOf(start);
    const to = out.indexOf(end);
    if (from < 0 || to < from) throw new Error(`README.md: markers ${start} … ${end} not found`);
    out = `${out.slice(0, from + start.length)}\n\n${renderTable(which)}\n\n${out.slice(to)}`;
  }
  return out;
}

function valuesCell(spec: SettingSpec): string {
  return escapeCell(spec.perModel ? `per model: ${spec.kind.expected}` : spec.kind.expected);
}

function flagCell(spec: SettingSpec): string {
  if (!spec.flag) return '';
  const flag = spec.flag.replace(/<([^>]+)>/, (_, p: string) => p.toUpperCase());
  return `\`${escapeCell(flag)}\`${spec.perModel ? ' (repeatable)' : ''}`;
}

function envCell(spec: SettingSpec): string {
  return spec.env ? `\`${spec.env}\`` : '';
}

function fileCell(spec: SettingSpec): string {
  const paths = filePaths(spec).map((p) => `\`${p.replace('*', 'MODEL')}\``);
  if (paths.length === 0) return '';
  const shown = paths.length > 1 ? `${paths[0]} (or ${paths.slice(1).join(', ')})` : paths[0]!;
  return spec.secret ? `${shown}: the name of a variable holding it` : shown;
}

function defaultCell(spec: SettingSpec): string {
  if (spec.defaultText !== undefined) return escapeCell(spec.defaultText);
  if (spec.perModel || spec.default === undefined) return '';
  return `\`${escapeCell(String(spec.default))}\``;
}

function commandsCell(spec: SettingSpec): string {
  if (spec.global || ALL_COMMANDS.every((c) => spec.commands.includes(c))) return 'all';
  return spec.commands.join(', ');
}

function escapeCell(cell: string): string {
  return cell.replace(/\|/g, '\\|');
}

function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(3, h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
