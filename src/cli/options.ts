import { type Command, InvalidArgumentError, Option } from 'commander';
import { parseFlagText, parseModelEntry } from '../config/resolve.js';
import { type CommandName, type SettingName, type SettingSpec, settingSpecs } from '../config/schema.js';
import { UsageError } from '../config/usage-error.js';

/** Wraps a parser so that its UsageError becomes commander's one-line "invalid argument" error. */
function commanderParser<T>(parse: (value: string, previous: T) => T) {
  return (value: string, previous: T) => {
    try {
      return parse(value, previous);
    } catch (err) {
      if (err instanceof UsageError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

/** The flags of the settings `command` takes (src/config/schema.ts), in the schema's order. */
export function settingOptions(cmd: Command, command: CommandName): Command {
  for (const [name, spec] of settingSpecs()) {
    if (spec.flag && !spec.global && spec.commands.includes(command))
      cmd.addOption(settingOption(name, spec));
  }
  return cmd;
}

/** The program's own setting flags (`--config`). */
export function globalOptions(program: Command): Command {
  for (const [name, spec] of settingSpecs()) {
    if (spec.flag && spec.global) program.addOption(settingOption(name, spec));
  }
  return program;
}

function settingOption(name: SettingName, spec: SettingSpec): Option {
  const option = new Option(spec.flag!, helpText(spec));
  if (spec.flag!.startsWith('--no-') || !spec.flag!.includes('<')) return option;
  if (spec.perModel) {
    return option.argParser(
      commanderParser((v: string, previous: Record<string, unknown> | undefined) =>
        parseModelEntry(name, v, previous),
      ),
    );
  }
  return option.argParser(commanderParser((v: string) => parseFlagText(name, v)));
}

function helpText(spec: SettingSpec): string {
  const notes: string[] = [];
  if (spec.perModel) notes.push('repeatable');
  if (spec.env) notes.push(`env ${spec.env}`);
  const shown = spec.defaultText ?? (spec.default !== undefined ? String(spec.default) : undefined);
  if (shown !== undefined && !spec.perModel && !spec.flag!.startsWith('--no-'))
    notes.push(`default ${shown}`);
  return notes.length > 0 ? `${spec.description} (${notes.join('; ')})` : spec.description;
}
