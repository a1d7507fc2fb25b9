// What `mirrorflow validate` warns about beyond the schema: names that are valid but do not
// exist on this host. The agent accepts them (it starts capture when an interface appears),
// so they are warnings, not errors; a typo in a source name is the usual cause.
import { readdirSync } from 'node:fs';
import type { Config } from './types.js';
import type { ConfigIssue } from '../errors.js';
import { isPattern } from './sources.js';

/** How many of the host's interface names a warning lists (a node may have hundreds of veths). */
const SHOWN = 10;

/** Interface names of this host (this network namespace). */
export function hostInterfaces(): Set<string> {
  try {
    return new Set(readdirSync('/sys/class/net'));
  } catch {
    return new Set();
  }
}

/** One warning per session or flow log source that names no interface of this host (patterns wait for matches by design). */
export function missingSources(config: Config, present: ReadonlySet<string> = hostInterfaces()): ConfigIssue[] {
  const names = [...present].sort();
  const known = names.length > SHOWN ? `${names.slice(0, SHOWN).join(', ')}, … (${names.length})` : names.join(', ');
  const warn = (path: string, name: string): ConfigIssue => ({
    path,
    message: `interface ${JSON.stringify(name)} does not exist on this host (it has ${known}); the agent waits for it to appear`,
  });
  const out: ConfigIssue[] = [];
  config.sessions.forEach((s, i) =>
    s.sources.forEach((name, j) => {
      if (!isPattern(name) && !present.has(name)) out.push(warn(`sessions[${i}].sources[${j}]`, name));
    }),
  );
  config.flowLogs.forEach((f, i) =>
    f.sources.forEach((name, j) => {
      if (!isPattern(name) && !present.has(name)) out.push(warn(`flowLogs[${i}].sources[${j}]`, name));
    }),
  );
  return out;
}
