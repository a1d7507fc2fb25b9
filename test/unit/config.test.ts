import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatIssues, loadConfig, parseConfig } from '../../agent/config/load.js';
import { parseCidr } from '../../agent/config/schema.js';
import { formatIp, parseIp } from '../../agent/packet/address.js';
import { deriveVni } from '../../agent/config/vni.js';
import { hostMirrorBudget } from '../../agent/config/host-budget.js';
import { ConfigError, ConfigReadError, ErrorCode, MirrorflowError } from '../../agent/errors.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/configs');
const fixture = (name: string) => readFileSync(path.join(FIXTURES, name), 'utf8');

// Deterministic "this host": targets among these are refused.
const LOCAL = ['192.0.2.1', '2001:db8::1', '127.0.0.1', '::1'];
const parse = (text: string) => parseConfig(text, { localAddresses: LOCAL });

/** The issues a text is refused with (fails the test if it is accepted). */
function issuesOf(text: string) {
  try {
    parse(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error(`accepted:\n${text}`);
}

type Loose = Record<string, any>;

/** A valid config as plain data; each bad case breaks one thing in a fresh copy. */
function base(): Loose {
  const rule = (priority: number) => ({
    priority,
    action: 'accept',
    protocol: 'TCP',
    sourceCidrBlock: '0.0.0.0/0',
    destinationCidrBlock: '10.0.0.0/8',
    sourcePortRange: '-1/-1',
    destinationPortRange: '80/443',
  });
  return {
    agent: { vmId: 'host-1', metrics: { listen: '127.0.0.1:9477' } },
    filters: [{ id: 'tf-web', ingressRules: [rule(1), rule(2)], egressRules: [rule(1)] }],
    sessions: [
      { id: 'ts-1', priority: 1, vni: 10, filterId: 'tf-web', sources: ['eth0'], target: { address: '192.0.2.50' } },
    ],
    flowLogs: [{ id: 'fl-1', sources: ['eth0'], sink: { type: 'stdout' } }],
  };
}

const session = (id: string, priority: number, sources: string[]) => ({
  id,
  priority,
  filterId: 'tf-web',
  sources,
  target: { address: '192.0.2.50' },
});

const ingress0 = (c: Loose) => c.filters[0].ingressRules[0];

interface BadCase {
  name: string;
  /** Breaks a copy of base(), or gives the whole text. */
  mutate?: (c: Loose) => void;
  text?: string;
  path: string;
  message: string;
}

const badCases: BadCase[] = [
  // unknown keys, at several depths
  { name: 'unknown top-level key', mutate: (c) => (c.flowLog = []), path: 'flowLog', message: 'unknown key' },
  { name: 'unknown agent key', mutate: (c) => (c.agent.metrics.port = 1), path: 'agent.metrics.port', message: 'unknown key' },
  {
    name: 'unknown rule key',
    mutate: (c) => (c.filters[0].ingressRules[1].prot = 'TCP'),
    path: 'filters[0].ingressRules[1].prot',
    message: 'unknown key',
  },
  { name: 'unknown target key', mutate: (c) => (c.sessions[0].target.vni = 1), path: 'sessions[0].target.vni', message: 'unknown key' },
  {
    name: 'unknown sink key',
    mutate: (c) => (c.flowLogs[0].sink = { type: 'file', path: '/tmp/x', size: 1 }),
    path: 'flowLogs[0].sink.size',
    message: 'unknown key',
  },
  {
    name: 'unknown key that is not an identifier',
    mutate: (c) => (c.agent['log level'] = 'info'),
    path: 'agent["log level"]',
    message: 'unknown key',
  },
  // CIDRs
  {
    name: 'prefix too long',
    mutate: (c) => (ingress0(c).destinationCidrBlock = '10.0.0.0/33'),
    path: 'filters[0].ingressRules[0].destinationCidrBlock',
    message: 'prefix must be 0..32 for IPv4, got /33',
  },
  {
    name: 'IPv6 prefix too long',
    mutate: (c) => Object.assign(ingress0(c), { sourceCidrBlock: '::/0', destinationCidrBlock: '2001:db8::/129' }),
    path: 'filters[0].ingressRules[0].destinationCidrBlock',
    message: 'prefix must be 0..128 for IPv6, got /129',
  },
  {
    name: 'truncated address',
    mutate: (c) => (ingress0(c).sourceCidrBlock = '10.0.0/8'),
    path: 'filters[0].ingressRules[0].sourceCidrBlock',
    message: 'expected a CIDR block like 10.0.0.0/8 or 2001:db8::/32, got "10.0.0/8"',
  },
  {
    name: 'address without prefix',
    mutate: (c) => (ingress0(c).sourceCidrBlock = '10.1.2.3'),
    path: 'filters[0].ingressRules[0].sourceCidrBlock',
    message: 'expected a CIDR block',
  },
  {
    name: 'host bits set',
    mutate: (c) => (ingress0(c).destinationCidrBlock = '10.0.0.1/8'),
    path: 'filters[0].ingressRules[0].destinationCidrBlock',
    message: '10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?',
  },
  {
    name: 'IPv6 host bits set',
    mutate: (c) => Object.assign(ingress0(c), { sourceCidrBlock: '2001:db8::1/32', destinationCidrBlock: '::/0' }),
    path: 'filters[0].ingressRules[0].sourceCidrBlock',
    message: 'did you mean 2001:db8::/32?',
  },
  {
    name: 'mixed address families',
    mutate: (c) => (ingress0(c).destinationCidrBlock = '2001:db8::/32'),
    path: 'filters[0].ingressRules[0].destinationCidrBlock',
    message: 'is IPv6 but sourceCidrBlock 0.0.0.0/0 is IPv4',
  },
  // ports
  {
    name: 'ports on an ALL rule',
    mutate: (c) => (ingress0(c).protocol = 'ALL'),
    path: 'filters[0].ingressRules[0].destinationPortRange',
    message: 'must be "-1/-1" for protocol ALL',
  },
  {
    name: 'ports on an ICMP rule',
    mutate: (c) => Object.assign(ingress0(c), { protocol: 'ICMP', sourcePortRange: '0/0', destinationPortRange: '-1/-1' }),
    path: 'filters[0].ingressRules[0].sourcePortRange',
    message: 'must be "-1/-1" for protocol ICMP (it has no ports), got "0/0"',
  },
  {
    name: 'start > end',
    mutate: (c) => (ingress0(c).destinationPortRange = '443/80'),
    path: 'filters[0].ingressRules[0].destinationPortRange',
    message: 'start must not exceed end, got "443/80"',
  },
  {
    name: '-1 mixed with a port',
    mutate: (c) => (ingress0(c).destinationPortRange = '-1/80'),
    path: 'filters[0].ingressRules[0].destinationPortRange',
    message: '-1 (any port) is only allowed as "-1/-1"',
  },
  {
    name: 'port 65536',
    mutate: (c) => (ingress0(c).sourcePortRange = '0/65536'),
    path: 'filters[0].ingressRules[0].sourcePortRange',
    message: 'ports must be 0..65535, got "0/65536"',
  },
  {
    name: 'port range with a dash',
    mutate: (c) => (ingress0(c).sourcePortRange = '80-443'),
    path: 'filters[0].ingressRules[0].sourcePortRange',
    message: 'expected "start/end"',
  },
  {
    name: 'port range as a number',
    mutate: (c) => (ingress0(c).sourcePortRange = 80),
    path: 'filters[0].ingressRules[0].sourcePortRange',
    message: 'expected a string, got number 80',
  },
  // rules
  {
    name: 'duplicate ingress priority',
    mutate: (c) => (c.filters[0].ingressRules[1].priority = 1),
    path: 'filters[0].ingressRules[1].priority',
    message: 'duplicate priority 1 in ingressRules (also at filters[0].ingressRules[0].priority)',
  },
  {
    name: 'duplicate egress priority',
    mutate: (c) => c.filters[0].egressRules.push({ ...c.filters[0].egressRules[0] }),
    path: 'filters[0].egressRules[1].priority',
    message: 'duplicate priority 1 in egressRules',
  },
  {
    name: 'rule priority 0',
    mutate: (c) => (ingress0(c).priority = 0),
    path: 'filters[0].ingressRules[0].priority',
    message: 'must be 1..16777216, got 0',
  },
  {
    name: 'rule priority 16777217',
    mutate: (c) => (ingress0(c).priority = 16777217),
    path: 'filters[0].ingressRules[0].priority',
    message: 'must be 1..16777216, got 16777217',
  },
  {
    name: '11 rules in one direction',
    mutate: (c) => (c.filters[0].ingressRules = Array.from({ length: 11 }, (_, i) => ({ ...ingress0(c), priority: i + 1 }))),
    path: 'filters[0].ingressRules',
    message: 'at most 10 rules per direction, got 11',
  },
  {
    name: 'lowercase protocol',
    mutate: (c) => (ingress0(c).protocol = 'tcp'),
    path: 'filters[0].ingressRules[0].protocol',
    message: 'expected one of "ALL" | "ICMP" | "TCP" | "UDP", got string "tcp"',
  },
  {
    name: 'unknown action',
    mutate: (c) => (ingress0(c).action = 'allow'),
    path: 'filters[0].ingressRules[0].action',
    message: 'expected one of "accept" | "drop", got string "allow"',
  },
  {
    name: 'missing protocol',
    mutate: (c) => delete ingress0(c).protocol,
    path: 'filters[0].ingressRules[0].protocol',
    message: 'missing (expected one of',
  },
  // filters and sessions
  {
    name: 'duplicate filter id',
    mutate: (c) => c.filters.push({ id: 'tf-web' }),
    path: 'filters[1].id',
    message: 'duplicate filter id "tf-web" (also at filters[0].id)',
  },
  {
    name: 'duplicate session id',
    mutate: (c) => c.sessions.push(session('ts-1', 2, ['eth1'])),
    path: 'sessions[1].id',
    message: 'duplicate session id "ts-1"',
  },
  {
    name: 'duplicate session priority',
    mutate: (c) => c.sessions.push(session('ts-2', 1, ['eth1'])),
    path: 'sessions[1].priority',
    message: 'duplicate session priority 1 (also at sessions[0].priority)',
  },
  { name: 'session priority 0', mutate: (c) => (c.sessions[0].priority = 0), path: 'sessions[0].priority', message: 'must be 1..32766, got 0' },
  {
    name: 'session priority 32767',
    mutate: (c) => (c.sessions[0].priority = 32767),
    path: 'sessions[0].priority',
    message: 'must be 1..32766, got 32767',
  },
  {
    name: 'session naming a missing filter',
    mutate: (c) => (c.sessions[0].filterId = 'tf-nope'),
    path: 'sessions[0].filterId',
    message: 'no filter with id "tf-nope" (defined: tf-web)',
  },
  {
    name: 'target that is a local IPv4 address',
    mutate: (c) => (c.sessions[0].target.address = '192.0.2.1'),
    path: 'sessions[0].target.address',
    message: '192.0.2.1 belongs to this host',
  },
  {
    name: 'target that is a local IPv6 address, spelled differently',
    mutate: (c) => (c.sessions[0].target.address = '2001:0db8:0:0::0001'),
    path: 'sessions[0].target.address',
    message: 'belongs to this host',
  },
  {
    name: 'IPv4-mapped local target',
    mutate: (c) => (c.sessions[0].target.address = '::ffff:192.0.2.1'),
    path: 'sessions[0].target.address',
    message: 'belongs to this host',
  },
  {
    name: 'unspecified IPv4 target',
    mutate: (c) => (c.sessions[0].target.address = '0.0.0.0'),
    path: 'sessions[0].target.address',
    message: 'unspecified address',
  },
  { name: 'unspecified IPv6 target', mutate: (c) => (c.sessions[0].target.address = '::'), path: 'sessions[0].target.address', message: 'unspecified address' },
  { name: 'loopback target', mutate: (c) => (c.sessions[0].target.address = '127.0.0.53'), path: 'sessions[0].target.address', message: 'loopback' },
  {
    name: 'target given as a host name',
    mutate: (c) => (c.sessions[0].target.address = 'ids.example.com'),
    path: 'sessions[0].target.address',
    message: 'expected an IPv4 or IPv6 address, got "ids.example.com"',
  },
  { name: 'target port 0', mutate: (c) => (c.sessions[0].target.port = 0), path: 'sessions[0].target.port', message: 'must be 1..65535, got 0' },
  {
    name: '11 sources in one session',
    mutate: (c) => (c.sessions[0].sources = Array.from({ length: 11 }, (_, i) => `eth${i}`)),
    path: 'sessions[0].sources',
    message: 'at most 10 sources per session, got 11',
  },
  {
    name: '4 sessions on one interface',
    mutate: (c) =>
      c.sessions.push(session('ts-2', 2, ['eth0']), session('ts-3', 3, ['eth0']), session('ts-4', 4, ['eth9', 'eth0'])),
    path: 'sessions[3].sources[1]',
    message: '"eth0" is already a source of 3 sessions',
  },
  { name: 'no sources', mutate: (c) => (c.sessions[0].sources = []), path: 'sessions[0].sources', message: 'needs at least 1 entry' },
  {
    name: 'a source listed twice',
    mutate: (c) => (c.sessions[0].sources = ['eth0', 'eth1', 'eth0']),
    path: 'sessions[0].sources[2]',
    message: '"eth0" is listed twice',
  },
  { name: 'packetLength 63', mutate: (c) => (c.sessions[0].packetLength = 63), path: 'sessions[0].packetLength', message: 'must be 64..8500, got 63' },
  {
    name: 'packetLength 8501',
    mutate: (c) => (c.sessions[0].packetLength = 8501),
    path: 'sessions[0].packetLength',
    message: 'must be 64..8500, got 8501',
  },
  { name: 'vni 16777216', mutate: (c) => (c.sessions[0].vni = 16777216), path: 'sessions[0].vni', message: 'must be 0..16777215, got 16777216' },
  { name: 'vni -1', mutate: (c) => (c.sessions[0].vni = -1), path: 'sessions[0].vni', message: 'must be 0..16777215, got -1' },
  { name: 'vni 1.5', mutate: (c) => (c.sessions[0].vni = 1.5), path: 'sessions[0].vni', message: 'must be an integer 0..16777215, got 1.5' },
  // interface names
  ...['eth0;rm', '../x', 'a_very_long_interface_name', '.', '..', '', 'eth 0', '-i', 'eth0\n'].map((name) => ({
    name: `interface name ${JSON.stringify(name)}`,
    mutate: (c: Loose) => (c.sessions[0].sources = [name]),
    path: 'sessions[0].sources[0]',
    message: 'interface name',
  })),
  {
    name: 'bad flow log source',
    mutate: (c) => (c.flowLogs[0].sources = ['eth0', '$(reboot)']),
    path: 'flowLogs[0].sources[1]',
    message: 'interface names use only',
  },
  {
    name: '"*" with other flow log sources',
    mutate: (c) => (c.flowLogs[0].sources = ['*', 'eth0']),
    path: 'flowLogs[0].sources',
    message: '"*" (every interface) must be the only source',
  },
  // flow logs
  { name: 'window 0', mutate: (c) => (c.flowLogs[0].window = 0), path: 'flowLogs[0].window', message: 'must be 1..600, got 0' },
  { name: 'window 601', mutate: (c) => (c.flowLogs[0].window = 601), path: 'flowLogs[0].window', message: 'must be 1..600, got 601' },
  {
    name: 'duplicate flow log id',
    mutate: (c) => c.flowLogs.push({ id: 'fl-1', sources: ['*'], sink: { type: 'stdout' } }),
    path: 'flowLogs[1].id',
    message: 'duplicate flow log id "fl-1"',
  },
  {
    name: 'unknown sink type',
    mutate: (c) => (c.flowLogs[0].sink = { type: 'kafka' }),
    path: 'flowLogs[0].sink.type',
    message: 'expected one of "file" | "stdout" | "ipfix", got string "kafka"',
  },
  {
    name: 'sink without type',
    mutate: (c) => (c.flowLogs[0].sink = { path: '/tmp/x' }),
    path: 'flowLogs[0].sink.type',
    message: 'missing (expected one of "file" | "stdout" | "ipfix")',
  },
  {
    name: 'file sink without path',
    mutate: (c) => (c.flowLogs[0].sink = { type: 'file' }),
    path: 'flowLogs[0].sink.path',
    message: 'missing (expected a string)',
  },
  {
    name: 'ipfix collector without port',
    mutate: (c) => (c.flowLogs[0].sink = { type: 'ipfix', collector: '203.0.113.7' }),
    path: 'flowLogs[0].sink.collector',
    message: 'expected "host:port" or "[ipv6]:port"',
  },
  {
    name: 'ipfix enterprise number 0',
    mutate: (c) => (c.flowLogs[0].sink = { type: 'ipfix', collector: '203.0.113.7:4739', enterpriseNumber: 0 }),
    path: 'flowLogs[0].sink.enterpriseNumber',
    message: 'must be 1..4294967295, got 0',
  },
  {
    name: 'ipfix template refresh 0',
    mutate: (c) => (c.flowLogs[0].sink = { type: 'ipfix', collector: '203.0.113.7:4739', templateRefresh: 0 }),
    path: 'flowLogs[0].sink.templateRefresh',
    message: 'must be 1..3600, got 0',
  },
  {
    name: 'trafficType in the wrong case',
    mutate: (c) => (c.flowLogs[0].trafficType = 'all'),
    path: 'flowLogs[0].trafficType',
    message: 'expected one of "All" | "Allow" | "Drop"',
  },
  // agent
  {
    name: 'metrics listen without port',
    mutate: (c) => (c.agent.metrics.listen = 'localhost'),
    path: 'agent.metrics.listen',
    message: '(or "" to disable)',
  },
  {
    name: 'metrics port 70000',
    mutate: (c) => (c.agent.metrics.listen = '0.0.0.0:70000'),
    path: 'agent.metrics.listen',
    message: 'port must be 0..65535',
  },
  {
    name: 'ipfix collector port 0',
    mutate: (c) => (c.flowLogs[0].sink = { type: 'ipfix', collector: 'collector.example:0' }),
    path: 'flowLogs[0].sink.collector',
    message: 'port must be 1..65535, got "collector.example:0"',
  },
  { name: 'mirror budget pps negative', mutate: (c) => (c.agent.mirrorBudget = { pps: -5 }), path: 'agent.mirrorBudget.pps', message: 'must be 0 (no limit) or an integer 1..1000000000, got -5' },
  { name: 'mirror budget bps too small', mutate: (c) => (c.agent.mirrorBudget = { bps: 1000 }), path: 'agent.mirrorBudget.bps', message: 'must be 0 (no limit) or an integer 100000..1000000000000, got 1000' },
  { name: 'mirror budget unknown key', mutate: (c) => (c.agent.mirrorBudget = { kpps: 5 }), path: 'agent.mirrorBudget.kpps', message: 'unknown key' },
  { name: 'session budget pps fractional', mutate: (c) => (c.sessions[0].budget = { pps: 1.5 }), path: 'sessions[0].budget.pps', message: 'got 1.5' },
  { name: 'session budget bps as a string', mutate: (c) => (c.sessions[0].budget = { bps: '1G' }), path: 'sessions[0].budget.bps', message: 'expected a number, got string "1G"' },
  { name: 'unknown data plane', mutate: (c) => (c.agent.dataPlane = 'xdp'), path: 'agent.dataPlane', message: 'got string "xdp"' },
  // wrong types
  { name: 'accountId as a number', mutate: (c) => (c.agent.accountId = 1234567890), path: 'agent.accountId', message: 'expected a string, got number 1234567890 (quote it)' },
  { name: 'enabled as a string', mutate: (c) => (c.sessions[0].enabled = 'yes'), path: 'sessions[0].enabled', message: 'expected true or false, got string "yes"' },
  { name: 'priority as a string', mutate: (c) => (c.sessions[0].priority = '1'), path: 'sessions[0].priority', message: 'expected a number, got string "1"' },
  { name: 'sources as a string', mutate: (c) => (c.sessions[0].sources = 'eth0'), path: 'sessions[0].sources', message: 'expected a list, got string "eth0"' },
  { name: 'filters as a mapping', mutate: (c) => (c.filters = { id: 'tf-web' }), path: 'filters', message: 'expected a list, got a mapping' },
  { name: 'target as null', mutate: (c) => (c.sessions[0].target = null), path: 'sessions[0].target', message: 'expected a mapping, got null' },
  { name: 'session without priority', mutate: (c) => delete c.sessions[0].priority, path: 'sessions[0].priority', message: 'missing (expected a number)' },
  // documents
  { name: 'YAML syntax error', text: fixture('bad/syntax-error.yaml'), path: 'line 6, column 1', message: 'Flow' },
  { name: 'duplicate YAML key', text: fixture('bad/duplicate-key.yaml'), path: 'line 4, column 3', message: 'duplicate key "vmId"' },
  { name: 'duplicate JSON key', text: fixture('bad/duplicate-key.json'), path: 'line 1, column 34', message: 'duplicate key "sessions"' },
  { name: 'a string document', text: 'hello', path: '(root)', message: 'expected a mapping, got string "hello"' },
  { name: 'a list document', text: '- agent: {}', path: '(root)', message: 'expected a mapping, got a list' },
  { name: 'an empty document', text: '# nothing here\n', path: '(root)', message: 'the document is empty' },
];

describe('parseConfig refuses bad configs with the field path and a reason', () => {
  it.each(badCases)('$name', ({ mutate, text, path: expectedPath, message }) => {
    let input = text;
    if (input === undefined) {
      const config = base();
      mutate!(config);
      input = JSON.stringify(config, null, 2);
    }
    const issues = issuesOf(input);
    const hit = issues.find((i) => i.path === expectedPath);
    expect(hit, formatIssues(issues)).toBeDefined();
    expect(hit!.message).toContain(message);
  });

  it('the base of the bad cases is itself valid', () => {
    expect(parse(JSON.stringify(base())).sessions[0]!.id).toBe('ts-1');
  });
});

describe('parseConfig accepts good configs and fills defaults', () => {
  it('parses the SPEC §1 example', () => {
    const config = parse(fixture('spec-example.yaml'));
    expect(config.agent).toEqual({
      vmId: 'host-1',
      vpcId: 'vpc-lab',
      vswitchId: 'vsw-lab',
      accountId: '1234567890',
      dataPlane: 'auto',
      mirrorBudget: hostMirrorBudget(),
      metrics: { listen: '127.0.0.1:9477' },
      control: { socket: '/run/mirrorflow/control.sock' },
      log: { level: 'info' },
    });
    expect(config.filters).toEqual([
      {
        id: 'tf-web',
        name: 'web',
        ingressRules: [
          {
            priority: 1,
            action: 'accept',
            protocol: 'TCP',
            sourceCidrBlock: '0.0.0.0/0',
            destinationCidrBlock: '10.0.0.0/8',
            sourcePortRange: { start: -1, end: -1 },
            destinationPortRange: { start: 80, end: 443 },
          },
        ],
        egressRules: [],
      },
    ]);
    expect(config.sessions).toEqual([
      {
        id: 'ts-1',
        name: 'to-ids',
        enabled: true,
        priority: 1,
        vni: 10,
        vniDerived: false,
        packetLength: 1500,
        filterId: 'tf-web',
        sources: ['eth0'],
        target: { address: '192.0.2.50', port: 4789 },
        budget: { pps: 0, bps: 0 },
      },
    ]);
    expect(config.flowLogs).toEqual([
      {
        id: 'fl-1',
        name: 'all-eth0',
        enabled: true,
        sources: ['eth0'],
        trafficType: 'All',
        window: 600,
        sink: { type: 'file', path: '/var/log/mirrorflow/flowlog.jsonl', maxBytes: 104857600, keep: 5 },
      },
    ]);
  });

  it('takes a mirror budget from the file, the missing agent-wide dimension from the host', () => {
    const doc = JSON.parse(JSON.stringify(base()));
    doc.agent.mirrorBudget = { pps: 1000 };
    doc.sessions[0].budget = { bps: 2_000_000 };
    const config = parse(JSON.stringify(doc));
    expect(config.agent.mirrorBudget).toEqual({ pps: 1000, bps: hostMirrorBudget().bps });
    expect(config.sessions[0]!.budget).toEqual({ pps: 0, bps: 2_000_000 });
    doc.agent.mirrorBudget = { pps: 0, bps: 0 };
    expect(parse(JSON.stringify(doc)).agent.mirrorBudget).toEqual({ pps: 0, bps: 0 });
  });

  it('fills every default of a minimal config', () => {
    const config = parse(fixture('good/minimal.yaml'));
    expect(config.agent).toEqual({
      vmId: os.hostname(),
      dataPlane: 'auto',
      mirrorBudget: hostMirrorBudget(),
      metrics: { listen: '127.0.0.1:9477' },
      control: { socket: '/run/mirrorflow/control.sock' },
      log: { level: 'info' },
    });
    expect(config.filters[0]).toMatchObject({ id: 'tf-any', name: 'tf-any', egressRules: [] });
    expect(config.filters[0]!.ingressRules[0]).toMatchObject({
      sourcePortRange: { start: -1, end: -1 },
      destinationPortRange: { start: -1, end: -1 },
    });
    expect(config.sessions[0]).toMatchObject({
      name: 'ts-derived',
      enabled: true,
      packetLength: 8500,
      target: { address: '198.51.100.9', port: 4789 },
      vni: deriveVni('ts-derived'),
      vniDerived: true,
    });
    expect(config.flowLogs[0]).toMatchObject({
      name: 'fl-all',
      enabled: true,
      sources: ['*'],
      trafficType: 'All',
      window: 600,
      sink: { type: 'file', path: '/tmp/flow.jsonl', maxBytes: 104857600, keep: 5 },
    });
  });

  it('accepts metrics on port 0 (any free port) and a host name', () => {
    expect(parse('agent: { metrics: { listen: "localhost:0" } }').agent.metrics.listen).toBe('localhost:0');
  });

  it('accepts an empty mapping as a config with nothing to do', () => {
    const config = parse('{}');
    expect(config.filters).toEqual([]);
    expect(config.sessions).toEqual([]);
    expect(config.flowLogs).toEqual([]);
  });

  it('accepts JSON, IPv6 rules and targets, ICMP without ports, "" metrics, the same priority in both directions', () => {
    const config = parse(fixture('good/ipv6.json'));
    expect(config.agent.metrics.listen).toBe('');
    expect(config.filters[0]!.ingressRules.map((r) => r.priority)).toEqual([5, 6]);
    expect(config.filters[0]!.egressRules[0]!.priority).toBe(5);
    expect(config.sessions[0]).toMatchObject({ vni: 0, vniDerived: false, packetLength: 64, target: { port: 8472 } });
    expect(config.flowLogs[0]!.sink).toEqual({ type: 'ipfix', collector: '[2001:db8::7]:4739', enterpriseNumber: 32473, templateRefresh: 10 });
  });

  it('accepts 3 sessions on one interface and 10 rules and 10 sources', () => {
    const c = base();
    c.sessions.push(session('ts-2', 2, ['eth0']), session('ts-3', 3, ['eth0']));
    c.sessions[0].sources = Array.from({ length: 10 }, (_, i) => `eth${i}`);
    c.filters[0].ingressRules = Array.from({ length: 10 }, (_, i) => ({ ...c.filters[0].ingressRules[0], priority: i + 1 }));
    const config = parse(JSON.stringify(c));
    expect(config.sessions).toHaveLength(3);
    expect(config.filters[0]!.ingressRules).toHaveLength(10);
  });

  it('refuses a real address of this host by default (os.networkInterfaces)', () => {
    const own = Object.values(os.networkInterfaces())
      .flatMap((list) => list ?? [])
      .find((a) => !a.internal && a.family === 'IPv4');
    if (own === undefined) return;
    const c = base();
    c.sessions[0].target.address = own.address;
    expect(() => parseConfig(JSON.stringify(c))).toThrow(/belongs to this host/);
  });
});

describe('reporting', () => {
  it('reports every error of a config in one pass, one per line', () => {
    let error: unknown;
    try {
      parse(fixture('bad/many-errors.yaml'));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const e = error as ConfigError;
    expect(e.code).toBe(ErrorCode.CONFIG_INVALID);
    expect(e).toBeInstanceOf(MirrorflowError);
    expect(e.issues.map((i) => i.path).sort()).toEqual(
      [
        'agent.dataPlane',
        'filters[0].ingressRules[0].sourceCidrBlock',
        'flowLogs[0].window',
        'sessions[0].vni',
        'sessions[1].filterId',
        'sessions[1].id',
      ].sort(),
    );
    expect(e.message).toContain('sessions[0].vni: must be 0..16777215, got 20000000');
    expect(e.message.split('\n').slice(1)).toEqual(formatIssues(e.issues).split('\n'));
  });

  it('reports unknown keys at several depths together with the fields they displaced', () => {
    const issues = issuesOf(fixture('bad/unknown-keys.yaml'));
    expect(formatIssues(issues).split('\n').sort()).toEqual(
      [
        'agent.vmid: unknown key',
        'filters[0].ingressRules[1].prot: unknown key',
        'filters[0].ingressRules[1].protocol: missing (expected one of "ALL" | "ICMP" | "TCP" | "UDP")',
        'flowLog: unknown key',
      ].sort(),
    );
  });

  it('never uses zod jargon', () => {
    const c = base();
    Object.assign(c.sessions[0], { priority: 'x', enabled: 3, vni: null, sources: [1], target: 'x', extra: true });
    Object.assign(c.flowLogs[0], { sink: [], trafficType: 5, window: '600' });
    const issues = issuesOf(JSON.stringify(c));
    expect(issues.length).toBeGreaterThanOrEqual(9);
    for (const issue of issues) expect(issue.message).not.toMatch(/Invalid input|Invalid option|Expected/);
  });

  it('formatIssues writes `<path>: <reason>` lines', () => {
    expect(formatIssues([{ path: 'a[0].b', message: 'x' }, { path: 'c', message: 'y' }])).toBe('a[0].b: x\nc: y');
  });
});

describe('derived vni', () => {
  it('is stable for the same session id and lies in 0..16777215', () => {
    const text = fixture('good/minimal.yaml');
    const first = parse(text).sessions[0]!.vni;
    expect(parse(text).sessions[0]!.vni).toBe(first);
    expect(deriveVni('ts-derived')).toBe(first);
    expect(first).toBeGreaterThanOrEqual(0);
    expect(first).toBeLessThanOrEqual(16777215);
  });

  it('usually differs between ids', () => {
    const vnis = new Set(Array.from({ length: 200 }, (_, i) => deriveVni(`ts-${i}`)));
    expect(vnis.size).toBeGreaterThanOrEqual(199);
  });
});

describe('output', () => {
  it('is deeply frozen', () => {
    const config = parse(fixture('spec-example.yaml'));
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.agent.metrics)).toBe(true);
    expect(Object.isFrozen(config.sessions[0]!.sources)).toBe(true);
    expect(Object.isFrozen(config.filters[0]!.ingressRules[0]!.destinationPortRange)).toBe(true);
    expect(() => {
      (config.sessions[0] as { vni: number }).vni = 99;
    }).toThrow(TypeError);
    expect(() => config.sessions.push(config.sessions[0]!)).toThrow(TypeError);
  });

  it('does not share defaults between parses', () => {
    const a = parse('{}');
    const b = parse('{}');
    expect(a.filters).not.toBe(b.filters);
  });
});

describe('loadConfig', () => {
  it('loads a file', async () => {
    const config = await loadConfig(path.join(FIXTURES, 'spec-example.yaml'), { localAddresses: LOCAL });
    expect(config.sessions[0]!.id).toBe('ts-1');
  });

  it('names the file in validation errors', async () => {
    const file = path.join(FIXTURES, 'bad/many-errors.yaml');
    await expect(loadConfig(file, { localAddresses: LOCAL })).rejects.toThrow(`config ${file} is invalid (6 errors)`);
  });

  it('refuses a missing file with MF_CONFIG_READ', async () => {
    const file = path.join(FIXTURES, 'does-not-exist.yaml');
    const error = await loadConfig(file).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigReadError);
    expect((error as ConfigReadError).code).toBe('MF_CONFIG_READ');
    expect((error as Error).message).toBe(`cannot read config ${file}: no such file`);
  });

  it('refuses a directory with MF_CONFIG_READ', async () => {
    const error = await loadConfig(FIXTURES).catch((e: unknown) => e);
    expect((error as ConfigReadError).code).toBe(ErrorCode.CONFIG_READ);
    expect((error as Error).message).toContain(FIXTURES);
  });

  it('refuses an unreadable file with MF_CONFIG_READ', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mf-config-'));
    const file = path.join(dir, 'secret.yaml');
    await writeFile(file, '{}');
    await chmod(file, 0o000);
    // root reads anything: then there is nothing to refuse.
    if (process.getuid?.() === 0) return;
    await expect(loadConfig(file)).rejects.toThrow(`cannot read config ${file}: permission denied`);
  });
});

describe('address helpers', () => {
  it('parses and prints IPv4, IPv6 and embedded IPv4', () => {
    expect(formatIp(parseIp('2001:0db8:0000:0000:0000:0000:0000:0001')!)).toBe('2001:db8::1');
    expect(formatIp(parseIp('::ffff:10.1.2.3')!)).toBe('::ffff:10.1.2.3');
    expect(Array.from(parseIp('::ffff:10.1.2.3')!.bytes.slice(10))).toEqual([0xff, 0xff, 10, 1, 2, 3]);
    expect(parseIp('fe80::1%eth0')).toBeUndefined();
    expect(parseIp('1.2.3')).toBeUndefined();
  });

  it('normalises CIDRs with host bits at odd prefixes', () => {
    expect(parseCidr('192.168.1.255/23')).toBe('192.168.1.255/23 has host bits set; did you mean 192.168.0.0/23?');
    expect(parseCidr('2001:db8:abcd:12ff::/55')).toBe('2001:db8:abcd:12ff::/55 has host bits set; did you mean 2001:db8:abcd:1200::/55?');
    expect(parseCidr('0.0.0.0/0')).toMatchObject({ family: 4, prefix: 0 });
    expect(parseCidr('10.0.0.7/32')).toMatchObject({ family: 4, prefix: 32 });
  });
});
