// Session and flow log sources: exact interface names, `*` and name patterns (globs such as
// `cali*`, `lxc*`, `veth?[0-9]`), and their resolution against the interfaces present now.
// A pattern covers every matching interface present when the config is applied and every
// one that appears later (the agent's link watcher re-resolves on each link event).
//
// Glob syntax, deliberately small (the shell's, without braces or escapes): `*` is any run
// of characters (also none), `?` one character, `[...]` one character of a set (`[0-9a-f]`,
// `[!0-9]` negated). Every other character stands for itself and must be one an interface
// name may hold. A source with none of `* ? [` is an exact name.

/** Characters of a Linux interface name (docs/config.md). */
const NAME_CHAR = /[A-Za-z0-9_.:@-]/;
/** Linux IFNAMSIZ (16) minus the terminating NUL. */
export const IFNAME_MAX = 15;
/** A pattern is longer than a name can be (classes take room), but bounded. */
export const PATTERN_MAX = 64;

/** Every interface (SPEC §1), except loopback and the agent's own devices. */
export const ALL_INTERFACES = '*';

/** True when `source` is a pattern (`*`, `?` or `[`), not an exact interface name. */
export function isPattern(source: string): boolean {
  return /[*?[]/.test(source);
}

/** Why `pattern` is not a valid glob, or undefined when it is. */
export function patternProblem(pattern: string): string | undefined {
  const re = compile(pattern);
  return typeof re === 'string' ? re : undefined;
}

/** A compiled pattern: the RegExp it stands for, or the reason it is invalid. */
function compile(pattern: string): RegExp | string {
  const got = JSON.stringify(pattern);
  if (pattern.length > PATTERN_MAX) return `patterns are at most ${PATTERN_MAX} characters, got ${got} (${pattern.length})`;
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) return `"[" opens a character set that is never closed with "]", in ${got}`;
      let body = pattern.slice(i + 1, end);
      const negated = body.startsWith('!');
      if (negated) body = body.slice(1);
      if (body === '') return `empty character set "[${negated ? '!' : ''}]" in ${got}`;
      for (let k = 0; k < body.length; k++) {
        const ch = body[k]!;
        if (ch === '-' && k > 0 && k < body.length - 1) {
          if (body[k - 1]! > body[k + 1]!) return `range "${body[k - 1]}-${body[k + 1]}" runs backwards in ${got}`;
          continue;
        }
        if (!NAME_CHAR.test(ch)) return `${JSON.stringify(ch)} in a character set can never be in an interface name, in ${got}`;
      }
      // Escaped for the RegExp: `-` between two characters stays a range.
      re += `[${negated ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = end;
    } else if (c === ']') return `"]" without "[" in ${got}`;
    else if (!NAME_CHAR.test(c)) return `patterns use * ? [...] and the characters of interface names (A-Z a-z 0-9 _ . : @ -), got ${got}`;
    else re += c.replace(/[.]/g, '\\.');
  }
  return new RegExp(`^${re}$`);
}

/** A predicate for a valid pattern (throws on an invalid one: the schema refused those). */
export function patternMatcher(pattern: string): (name: string) => boolean {
  const re = compile(pattern);
  if (typeof re === 'string') throw new Error(`source pattern: ${re}`);
  return (name) => name.length <= IFNAME_MAX && re.test(name);
}

/** The loopback device: the kernel creates it under this name in every network namespace. */
export const LOOPBACK = 'lo';

/**
 * Whether `sources` cover the interface `name`: it is named, or a pattern matches it and it
 * is neither loopback nor one of `own` (the agent's own devices, agent/ebpf/device-names.ts,
 * whose traffic is our copies). Explicit names are taken as written.
 */
export function sourcesCover(sources: readonly string[], name: string, own: (name: string) => boolean): boolean {
  if (sources.includes(name)) return true;
  if (name === LOOPBACK || own(name)) return false;
  return sources.some((s) => isPattern(s) && patternMatcher(s)(name));
}

/**
 * The interfaces `sources` cover: the explicit names first, present or not (the agent waits
 * for a missing one, docs/config.md), then the interfaces of `present` a pattern covers, in
 * the order of `present`.
 */
export function resolveSources(sources: readonly string[], present: Iterable<string>, own: (name: string) => boolean): string[] {
  const out = sources.filter((s) => !isPattern(s));
  const patterns = sources.filter(isPattern).map(patternMatcher);
  if (patterns.length === 0) return out;
  const named = new Set(out);
  for (const name of present) {
    if (named.has(name) || name === LOOPBACK || own(name)) continue;
    if (patterns.some((m) => m(name))) {
      named.add(name);
      out.push(name);
    }
  }
  return out;
}
