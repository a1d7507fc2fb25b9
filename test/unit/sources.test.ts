import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { isPattern, patternMatcher, patternProblem, resolveSources, sourcesCover } from '../../agent/config/sources.js';
import { isOwnDevice } from '../../agent/ebpf/device-names.js';
import { compileRules } from '../../agent/rules/compile.js';
import { missingSources } from '../../agent/config/host-check.js';
import { ConfigError } from '../../agent/errors.js';

const HOST = ['lo', 'eth0', 'eth1', 'cali1a2b', 'cali9f', 'lxc00aa', 'veth0', 'veth12', 'mf-seg', 'mf-seg-rx', 'mf-vxlan-4789', 'docker0'];

describe('source patterns', () => {
  it.each([
    ['*', 'eth0', true],
    ['cali*', 'cali1a2b', true],
    ['cali*', 'cali', true],
    ['cali*', 'xcali1', false],
    ['veth?', 'veth0', true],
    ['veth?', 'veth12', false],
    ['veth[0-9]*', 'veth12', true],
    ['veth[0-9]*', 'vethx', false],
    ['eth[!0]', 'eth1', true],
    ['eth[!0]', 'eth0', false],
    ['a.b*', 'a.b1', true],
    ['a.b*', 'axb1', false],
    ['e?h0', 'eth0', true],
  ])('%s on %s: %s', (pattern, name, expected) => {
    expect(isPattern(pattern)).toBe(true);
    expect(patternProblem(pattern)).toBeUndefined();
    expect(patternMatcher(pattern)(name)).toBe(expected);
  });

  it.each([
    ['veth[0-9', 'never closed'],
    ['veth]', '"]" without "["'],
    ['eth[]', 'empty character set'],
    ['eth[!]', 'empty character set'],
    ['eth[9-0]', 'runs backwards'],
    ['eth[/]*', 'can never be in an interface name'],
    ['eth;*', 'patterns use * ? [...]'],
    [`${'a'.repeat(64)}*`, 'at most 64 characters'],
  ])('refuses %s', (pattern, reason) => {
    expect(patternProblem(pattern)).toContain(reason);
  });

  it('an exact name is no pattern', () => {
    expect(isPattern('eth0')).toBe(false);
    expect(isPattern('a:b@c-d.e_f')).toBe(false);
  });

  it('a pattern never matches a name longer than Linux allows', () => {
    expect(patternMatcher('*')('a'.repeat(16))).toBe(false);
    expect(patternMatcher('*')('a'.repeat(15))).toBe(true);
  });
});

describe('resolveSources', () => {
  it('* is every interface except loopback and the agent\'s own devices', () => {
    expect(resolveSources(['*'], HOST, isOwnDevice)).toEqual(['eth0', 'eth1', 'cali1a2b', 'cali9f', 'lxc00aa', 'veth0', 'veth12', 'docker0']);
  });

  it('explicit names come first, present or not, and patterns add present matches once', () => {
    expect(resolveSources(['eth9', 'cali*', 'cali9f', 'lxc*'], HOST, isOwnDevice)).toEqual(['eth9', 'cali9f', 'cali1a2b', 'lxc00aa']);
  });

  it('an explicit name is taken as written, even loopback or an own device', () => {
    expect(resolveSources(['lo', 'mf-seg'], HOST, isOwnDevice)).toEqual(['lo', 'mf-seg']);
    expect(sourcesCover(['lo'], 'lo', isOwnDevice)).toBe(true);
    expect(sourcesCover(['l*'], 'lo', isOwnDevice)).toBe(false);
    expect(sourcesCover(['mf-*'], 'mf-vxlan-4789', isOwnDevice)).toBe(false);
    expect(sourcesCover(['mf-*'], 'mf-other', isOwnDevice)).toBe(true);
  });
});

const LOCAL = ['192.0.2.1'];
function config(sessions: Array<{ id: string; sources: string[] }>, flowLogSources?: string[]) {
  return {
    filters: [{ id: 'tf', ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }] }],
    sessions: sessions.map((s, i) => ({ ...s, priority: i + 1, vni: i, filterId: 'tf', target: { address: '192.0.2.50' } })),
    flowLogs: flowLogSources === undefined ? [] : [{ id: 'fl', sources: flowLogSources, sink: { type: 'stdout' } }],
  };
}
const parse = (doc: unknown) => parseConfig(JSON.stringify(doc), { localAddresses: LOCAL });
function issues(doc: unknown): string[] {
  try {
    parse(doc);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error('accepted');
}

describe('config: patterns in sources', () => {
  it('takes patterns and * in sessions and flow logs', () => {
    const c = parse(config([{ id: 's1', sources: ['cali*', 'eth0'] }, { id: 's2', sources: ['*'] }], ['lxc*', 'veth[0-9]*']));
    expect(c.sessions[0]!.sources).toEqual(['cali*', 'eth0']);
    expect(c.flowLogs[0]!.sources).toEqual(['lxc*', 'veth[0-9]*']);
  });

  it('refuses a bad pattern at its path, and * with company', () => {
    expect(issues(config([{ id: 's1', sources: ['eth0', 'cali[*'] }]))).toEqual([
      'sessions[0].sources[1]: "[" opens a character set that is never closed with "]", in "cali[*"',
    ]);
    expect(issues(config([{ id: 's1', sources: ['*', 'eth0'] }]))).toEqual(['sessions[0].sources: "*" (every interface) must be the only source']);
  });

  it('a 4th session with patterns is refused: a new interface could match all four', () => {
    const four = ['a*', 'b*', 'c*', 'd*'].map((p, i) => ({ id: `s${i}`, sources: [p] }));
    expect(issues(config(four))).toEqual([
      'sessions[3].sources[0]: a 4th session with pattern sources: a new interface could match all of them; at most 3 sessions per interface',
    ]);
    expect(() => parse(config(four.slice(0, 3)))).not.toThrow();
  });

  it('a pattern counts on the explicit names it matches', () => {
    const c = config([{ id: 's0', sources: ['eth0'] }, { id: 's1', sources: ['eth0'] }, { id: 's2', sources: ['eth0'] }, { id: 's3', sources: ['eth*'] }]);
    expect(issues(c)).toEqual(['sessions[3].sources[0]: matches "eth0", which 3 other session(s) name: 4 sessions on one interface; at most 3']);
    const other = config([{ id: 's0', sources: ['eth0'] }, { id: 's1', sources: ['eth0'] }, { id: 's2', sources: ['eth0'] }, { id: 's3', sources: ['cali*'] }]);
    expect(() => parse(other)).not.toThrow();
  });

  it('patterns count as one source each towards the 10 per session', () => {
    const eleven = Array.from({ length: 11 }, (_, i) => `p${i}*`);
    expect(issues(config([{ id: 's0', sources: eleven }]))).toEqual(['sessions[0].sources: at most 10 sources per session, got 11']);
  });

  it('validate warns about missing explicit names only', () => {
    const c = parse(config([{ id: 's0', sources: ['cali*', 'eth7'] }], ['*']));
    expect(missingSources(c, new Set(['lo', 'eth0'])).map((i) => i.path)).toEqual(['sessions[0].sources[1]']);
  });
});

describe('compileRules with present interfaces', () => {
  it('a flow log on * with no session covers every present interface (issue 15: was "interfaces":[])', () => {
    const rules = compileRules(parse(config([], ['*'])), HOST);
    expect(rules.interfaces).toEqual(['eth0', 'eth1', 'cali1a2b', 'cali9f', 'lxc00aa', 'veth0', 'veth12', 'docker0']);
  });

  it('a session pattern gets a chain on every matching interface and none elsewhere', () => {
    const rules = compileRules(parse(config([{ id: 's0', sources: ['cali*'] }, { id: 's1', sources: ['eth0', 'cali9f'] }])), HOST);
    expect(rules.interfaces).toEqual(['cali1a2b', 'cali9f', 'eth0']);
    const sessionsOn = (name: string) => rules.chains[rules.interfaceIndex(name) * 2]!.map((c) => rules.sessions[c.session]!.id);
    expect(sessionsOn('cali1a2b')).toEqual(['s0']);
    expect(sessionsOn('cali9f')).toEqual(['s0', 's1']);
    expect(sessionsOn('eth0')).toEqual(['s1']);
  });

  it('without present interfaces a pattern resolves to nothing yet', () => {
    expect(compileRules(parse(config([{ id: 's0', sources: ['cali*'] }], ['*']))).interfaces).toEqual([]);
  });
});
