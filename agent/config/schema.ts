// The one schema of the configuration (SPEC §1): shapes, defaults and every check, so
// that its output is the `Config` of types.ts. Messages are written for people: each says
// what was expected and what was found; load.ts adds the path of the field.

import os from 'node:os';
import { isIPv4 } from 'node:net';
import { z } from 'zod';
import type { Config, PortRange } from './types.js';
import { deriveVni, VNI_MAX } from './vni.js';
import { hostMirrorBudget } from './host-budget.js';
import { LIMITS } from '../limits.js';
import { formatIp, parseIp, unmapIp, type IpAddress } from '../packet/address.js';

export interface SchemaEnv {
  /** Addresses of this host: a session target among them would mirror into itself. */
  localAddresses: readonly string[];
}

export const DEFAULTS = {
  metricsListen: '127.0.0.1:9477',
  controlSocket: '/run/mirrorflow/control.sock',
  portRange: '-1/-1',
  packetLength: 8500,
  vxlanPort: 4789,
  window: 600,
  fileMaxBytes: 104857600,
  fileKeep: 5,
  /** IANA's enterprise number for documentation (RFC 5612), until an operator sets their own. */
  ipfixEnterpriseNumber: 32473,
  /** Seconds between template resends over UDP (RFC 7011 §8.4). */
  ipfixTemplateRefresh: 10,
} as const;

/** Budget rates: the kernel's fixed-point costs (bpf/mirrorflow.h) stay exact to ~2 % within these. */
export const BUDGET_LIMITS = {
  pps: { min: 1, max: 1_000_000_000 },
  bps: { min: 100_000, max: 1_000_000_000_000 },
} as const;

// Longest unix socket path: sizeof(sockaddr_un.sun_path) - 1 on Linux.
const SOCKET_PATH_MAX = 107;
// Linux IFNAMSIZ (16) minus the terminating NUL.
const IFNAME_MAX = 15;
const IFNAME_CHARS = /^[A-Za-z0-9_.:@-]+$/;
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** A value as a person would recognise it in their file. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  switch (typeof value) {
    case 'string':
      return `string ${JSON.stringify(value)}`;
    case 'number':
    case 'boolean':
    case 'bigint':
      return `${typeof value} ${String(value)}`;
    case 'object':
      return 'a mapping';
    default:
      return typeof value;
  }
}

// ---- addresses ---------------------------------------------------------------------

function ipKey(ip: IpAddress): string {
  return formatIp(unmapIp(ip));
}

export interface Cidr {
  family: 4 | 6;
  network: IpAddress;
  prefix: number;
}

/** Parses "address/prefix"; returns the reason as a string when it is not a valid network. */
export function parseCidr(text: string): Cidr | string {
  const expected = `expected a CIDR block like 10.0.0.0/8 or 2001:db8::/32, got ${JSON.stringify(text)}`;
  const slash = text.indexOf('/');
  if (slash < 0) return expected;
  const ip = parseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (ip === undefined || !/^\d{1,3}$/.test(prefixText)) return expected;
  const prefix = Number(prefixText);
  const bits = ip.bytes.length * 8;
  if (prefix > bits) return `prefix must be 0..${bits} for IPv${ip.family}, got /${prefix}`;
  const net = ip.bytes.map((byte, i) => {
    const keep = Math.min(8, Math.max(0, prefix - 8 * i));
    return byte & ((0xff << (8 - keep)) & 0xff);
  });
  const network = { family: ip.family, bytes: net };
  if (net.some((byte, i) => byte !== ip.bytes[i])) {
    return `${text} has host bits set; did you mean ${formatIp(network)}/${prefix}?`;
  }
  return { family: ip.family, network, prefix };
}

/** Parses "start/end" (0..65535, start <= end) or "-1/-1" (any port); a reason string when invalid. */
export function parsePortRange(text: string): PortRange | string {
  const m = /^(-?\d{1,6})\/(-?\d{1,6})$/.exec(text);
  if (m === null) return `expected "start/end" like "80/443", or "-1/-1" for any port, got ${JSON.stringify(text)}`;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (start === -1 && end === -1) return { start, end };
  if (start === -1 || end === -1) return `-1 (any port) is only allowed as "-1/-1", got ${JSON.stringify(text)}`;
  if (start < 0 || end < 0 || start > 65535 || end > 65535) {
    return `ports must be 0..65535, got ${JSON.stringify(text)}`;
  }
  if (start > end) return `start must not exceed end, got ${JSON.stringify(text)}`;
  return { start, end };
}

/** Parses "host:port" or "[v6]:port" (port minPort..65535); a reason string when invalid. */
export function parseHostPort(text: string, minPort = 1): { host: string; port: number } | string {
  const expected = `expected "host:port" or "[ipv6]:port", got ${JSON.stringify(text)}`;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (m === null) return expected;
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined ? parseIp(host)?.family !== 6 : !isIPv4(host) && !HOSTNAME.test(host)) return expected;
  const port = Number(m[3]);
  if (port < minPort || port > 65535) return `port must be ${minPort}..65535, got ${JSON.stringify(text)}`;
  return { host, port };
}

/** Why a name cannot be a Linux interface name, or undefined when it can. */
export function interfaceNameProblem(name: string): string | undefined {
  const got = JSON.stringify(name);
  if (name.length < 1 || name.length > IFNAME_MAX) {
    return `interface names are 1..${IFNAME_MAX} characters, got ${got} (${name.length})`;
  }
  if (!IFNAME_CHARS.test(name)) return `interface names use only A-Z a-z 0-9 _ . : @ -, got ${got}`;
  if (name === '.' || name === '..') return `${got} is not an interface name`;
  if (name.startsWith('-')) return `interface names must not start with "-", got ${got}`;
  return undefined;
}

// ---- field schemas -----------------------------------------------------------------

/** An integer in min..max, with one message that gives both bounds and the value. */
function intIn(min: number, max: number) {
  return z.number().superRefine((n, ctx) => {
    if (!Number.isInteger(n)) ctx.addIssue({ code: 'custom', message: `must be an integer ${min}..${max}, got ${n}` });
    else if (n < min || n > max) ctx.addIssue({ code: 'custom', message: `must be ${min}..${max}, got ${n}` });
  });
}

/** A budget rate: 0 (no limit) or an integer in range. */
function budgetRate(dimension: keyof typeof BUDGET_LIMITS) {
  const { min, max } = BUDGET_LIMITS[dimension];
  return z.number().superRefine((n, ctx) => {
    if (!Number.isInteger(n) || (n !== 0 && (n < min || n > max))) {
      ctx.addIssue({ code: 'custom', message: `must be 0 (no limit) or an integer ${min}..${max}, got ${n}` });
    }
  });
}

/** A string field checked by a parser that returns a reason string on failure. */
function parsed<T>(parse: (text: string) => T | string) {
  return z.string().transform((text, ctx) => {
    const result = parse(text);
    if (typeof result === 'string') {
      ctx.addIssue({ code: 'custom', message: result });
      return z.NEVER;
    }
    return result;
  });
}

const text = z.string().min(1);
const id = z.string().regex(ID_PATTERN, {
  error: (iss) =>
    `ids are 1..64 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit, got ${describeValue(iss.input)}`,
});

/** A string accepted when `problem` finds none; otherwise refused with its reason. */
function checkedString(problem: (text: string) => string | undefined) {
  return z.string().superRefine((value, ctx) => {
    const reason = problem(value);
    if (reason !== undefined) ctx.addIssue({ code: 'custom', message: reason });
  });
}

/** The reason of a parser that returns either its result or a reason string. */
const reasonOf = (result: unknown) => (typeof result === 'string' ? result : undefined);

const cidr = checkedString((value) => reasonOf(parseCidr(value)));

const portRange = parsed(parsePortRange);

const interfaceName = checkedString(interfaceNameProblem);

function noDuplicates(list: readonly string[], ctx: z.RefinementCtx) {
  list.forEach((name, i) => {
    const first = list.indexOf(name);
    if (first !== i) ctx.addIssue({ code: 'custom', path: [i], message: `${JSON.stringify(name)} is listed twice` });
  });
}

const hostPort = checkedString((value) => reasonOf(parseHostPort(value)));

// "" turns the metrics endpoint off; port 0 lets the kernel pick a free port (tests, labs).
const listenAddress = checkedString((value) => {
  const reason = value === '' ? undefined : reasonOf(parseHostPort(value, 0));
  return reason === undefined ? undefined : `${reason} (or "" to disable)`;
});

const rule = z
  .strictObject({
    priority: intIn(1, 16777216),
    action: z.enum(['accept', 'drop']),
    protocol: z.enum(['ALL', 'ICMP', 'TCP', 'UDP']),
    sourceCidrBlock: cidr,
    destinationCidrBlock: cidr,
    sourcePortRange: portRange.prefault(DEFAULTS.portRange),
    destinationPortRange: portRange.prefault(DEFAULTS.portRange),
  })
  // Runs even when other fields of the rule failed (an unknown action, say), so one pass
  // reports every problem: it judges only the fields that have the right type.
  .superRefine(
    (value, ctx) => {
      const r = asRecord(value);
      const source = r.sourceCidrBlock;
      const destination = r.destinationCidrBlock;
      if (typeof source === 'string' && typeof destination === 'string') {
        const sourceFamily = source.includes(':') ? 6 : 4;
        const destinationFamily = destination.includes(':') ? 6 : 4;
        if (sourceFamily !== destinationFamily) {
          ctx.addIssue({
            code: 'custom',
            path: ['destinationCidrBlock'],
            message:
              `is IPv${destinationFamily} but sourceCidrBlock ${source} is IPv${sourceFamily}; ` +
              'a rule matches one address family',
          });
        }
      }
      if (r.protocol === 'ALL' || r.protocol === 'ICMP') {
        for (const key of ['sourcePortRange', 'destinationPortRange'] as const) {
          const range = asRecord(r[key]) as Partial<PortRange>;
          if (typeof range.start === 'number' && range.start !== -1) {
            ctx.addIssue({
              code: 'custom',
              path: [key],
              message: `must be "-1/-1" for protocol ${r.protocol} (it has no ports), got "${range.start}/${range.end}"`,
            });
          }
        }
      }
    },
    { when: (payload) => typeof payload.value === 'object' && payload.value !== null && !Array.isArray(payload.value) },
  );

const filter = z
  .strictObject({
    id,
    name: text.optional(),
    ingressRules: z.array(rule).default(() => []),
    egressRules: z.array(rule).default(() => []),
  })
  .transform((f) => ({ ...f, name: f.name ?? f.id }));

function targetSchema(env: SchemaEnv) {
  const local = new Set(
    env.localAddresses.flatMap((text) => {
      const ip = parseIp(text);
      return ip === undefined ? [] : [ipKey(ip)];
    }),
  );
  const address = z.string().superRefine((value, ctx) => {
    const parsedIp = parseIp(value);
    if (parsedIp === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected an IPv4 or IPv6 address, got ${JSON.stringify(value)}` });
      return;
    }
    const ip = unmapIp(parsedIp);
    if (ip.bytes.every((b) => b === 0)) {
      ctx.addIssue({ code: 'custom', message: `${value} is the unspecified address; name the destination host` });
    } else if (ip.family === 4 ? ip.bytes[0] === 127 : ipKey(ip) === '::1') {
      ctx.addIssue({ code: 'custom', message: `${value} is a loopback address; the target must be another host` });
    } else if (local.has(ipKey(ip))) {
      ctx.addIssue({
        code: 'custom',
        message: `${value} belongs to this host; mirroring to itself would loop`,
      });
    }
  });
  return z.strictObject({ address, port: intIn(1, 65535).default(DEFAULTS.vxlanPort) });
}

const healthCheck = z
  .strictObject({
    type: z.enum(['icmp', 'tcp', 'none']),
    port: intIn(1, 65535).optional(),
    interval: intIn(1, 3600).default(2),
    unhealthyAfter: intIn(1, 100).default(3),
    healthyAfter: intIn(1, 100).default(2),
  })
  .superRefine((h, ctx) => {
    if (h.type === 'tcp' && h.port === undefined) {
      ctx.addIssue({ code: 'custom', path: ['port'], message: 'a tcp health check needs the port to connect to' });
    }
    if (h.type !== 'tcp' && h.port !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['port'], message: `only a tcp health check has a port, this one is ${h.type}` });
    }
  });

/**
 * A pool of sensors: each flow goes to one healthy member (SPEC §3). The members share one
 * port and one address family: the eBPF plane sends through one external-mode VXLAN device
 * per destination port, and one session's copies have one outer header size.
 */
function poolSchema(env: SchemaEnv) {
  const member = targetSchema(env);
  return z.strictObject({
    pool: z
      .array(member)
      .min(LIMITS.poolMin, { error: `a pool has ${LIMITS.poolMin}..${LIMITS.poolMax} members; use target for one sensor` })
      .max(LIMITS.poolMax, { error: (iss) => `a pool has at most ${LIMITS.poolMax} members, got ${(iss.input as unknown[]).length}` })
      .superRefine((list, ctx) => {
        const seen = new Map<string, number>();
        list.forEach((m, i) => {
          const ip = parseIp(m.address);
          if (ip === undefined) return;
          const key = ipKey(ip);
          const first = seen.get(key);
          if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'address'], message: `${m.address} is already pool member ${first}` });
          else seen.set(key, i);
          if (i > 0 && m.port !== list[0]!.port) {
            ctx.addIssue({ code: 'custom', path: [i, 'port'], message: `pool members share one port: member 0 has ${list[0]!.port}, this one ${m.port}` });
          }
          const first4 = parseIp(list[0]!.address);
          if (i > 0 && first4 !== undefined && unmapIp(first4).family !== unmapIp(ip).family) {
            ctx.addIssue({ code: 'custom', path: [i, 'address'], message: `pool members are one address family: member 0 is IPv${unmapIp(first4).family}, ${m.address} is not` });
          }
        });
      }),
    healthCheck: healthCheck.prefault({ type: 'none' }),
  });
}

function sessionSchema(env: SchemaEnv) {
  return z
    .strictObject({
      id,
      name: text.optional(),
      enabled: z.boolean().default(true),
      priority: intIn(1, 32766),
      vni: intIn(0, VNI_MAX).optional(),
      packetLength: intIn(64, 8500).default(DEFAULTS.packetLength),
      filterId: id,
      sources: z.array(interfaceName).min(1).superRefine(noDuplicates),
      target: targetSchema(env).optional(),
      targets: poolSchema(env).optional(),
      budget: z.strictObject({ pps: budgetRate('pps').default(0), bps: budgetRate('bps').default(0) }).prefault({}),
    })
    .superRefine((s, ctx) => {
      if ((s.target === undefined) === (s.targets === undefined)) {
        ctx.addIssue({
          code: 'custom',
          path: [s.target === undefined ? 'target' : 'targets'],
          message: s.target === undefined ? 'a session needs target (one sensor) or targets (a pool)' : 'give target or targets, not both',
        });
      }
    })
    .transform(({ vni, ...s }) => ({
      ...s,
      name: s.name ?? s.id,
      vni: vni ?? deriveVni(s.id),
      vniDerived: vni === undefined,
    }));
}

const flowLogSources = z
  .array(z.string())
  .min(1)
  .superRefine((list, ctx) => {
    if (list.includes('*')) {
      if (list.length > 1) ctx.addIssue({ code: 'custom', message: `"*" (every interface) must be the only source` });
      return;
    }
    list.forEach((name, i) => {
      const problem = interfaceNameProblem(name);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', path: [i], message: problem });
    });
    noDuplicates(list, ctx);
  });

const sink = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('file'),
    path: text,
    maxBytes: intIn(1024, Number.MAX_SAFE_INTEGER).default(DEFAULTS.fileMaxBytes),
    keep: intIn(1, 1000).default(DEFAULTS.fileKeep),
  }),
  z.strictObject({ type: z.literal('stdout') }),
  z.strictObject({
    type: z.literal('ipfix'),
    collector: hostPort,
    enterpriseNumber: intIn(1, 0xffffffff).default(DEFAULTS.ipfixEnterpriseNumber),
    templateRefresh: intIn(1, 3600).default(DEFAULTS.ipfixTemplateRefresh),
  }),
]);

const flowLog = z
  .strictObject({
    id,
    name: text.optional(),
    enabled: z.boolean().default(true),
    sources: flowLogSources,
    trafficType: z.enum(['All', 'Allow', 'Drop']).default('All'),
    window: intIn(1, 600).default(DEFAULTS.window),
    sink,
  })
  .transform((f) => ({ ...f, name: f.name ?? f.id }));

const agent = z.strictObject({
  vmId: text.default(() => os.hostname()),
  vpcId: text.optional(),
  vswitchId: text.optional(),
  accountId: text.optional(),
  dataPlane: z.enum(['auto', 'ebpf', 'pcap']).default('auto'),
  mirrorBudget: z
    .strictObject({ pps: budgetRate('pps').optional(), bps: budgetRate('bps').optional() })
    .prefault({})
    .transform((b) => {
      if (b.pps !== undefined && b.bps !== undefined) return { pps: b.pps, bps: b.bps };
      const host = hostMirrorBudget();
      return { pps: b.pps ?? host.pps, bps: b.bps ?? host.bps };
    }),
  metrics: z.strictObject({ listen: listenAddress.default(DEFAULTS.metricsListen) }).prefault({}),
  control: z
    .strictObject({
      socket: text
        .max(SOCKET_PATH_MAX, {
          error: (iss) => `unix socket paths are at most ${SOCKET_PATH_MAX} bytes, got ${String(iss.input).length}`,
        })
        .default(DEFAULTS.controlSocket),
    })
    .prefault({}),
  log: z
    .strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info') })
    .prefault({}),
});

// ---- checks across entries ---------------------------------------------------------

type Loose = Record<string, unknown>;
const asList = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
const asRecord = (x: unknown): Loose =>
  typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Loose) : {};

/** JS-style path for messages that point at another field. */
const at = (...segments: (string | number)[]) =>
  segments.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');

/**
 * Checks that look at several entries. It also runs when some entries failed their own
 * checks, so that one pass reports every problem: it reads the (possibly partial) value
 * defensively and only judges fields that have the right type.
 */
function crossCheck(config: unknown, ctx: z.RefinementCtx) {
  const report = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const root = asRecord(config);

  const unique = (list: unknown[], section: string, field: string, what: string) => {
    const seen = new Map<unknown, number>();
    list.forEach((entry, i) => {
      const value = asRecord(entry)[field];
      if (typeof value !== 'string' && typeof value !== 'number') return;
      const first = seen.get(value);
      if (first === undefined) seen.set(value, i);
      else report([section, i, field], `duplicate ${what} ${JSON.stringify(value)} (also at ${at(section, first, field)})`);
    });
  };

  const filters = asList(root.filters);
  unique(filters, 'filters', 'id', 'filter id');
  filters.forEach((f, i) => {
    for (const direction of ['ingressRules', 'egressRules'] as const) {
      const rules = asList(asRecord(f)[direction]);
      if (rules.length > LIMITS.rulesPerDirection) {
        report(['filters', i, direction], `at most ${LIMITS.rulesPerDirection} rules per direction, got ${rules.length}`);
      }
      const seen = new Map<unknown, number>();
      rules.forEach((r, j) => {
        const priority = asRecord(r).priority;
        if (typeof priority !== 'number') return;
        const first = seen.get(priority);
        if (first === undefined) seen.set(priority, j);
        else {
          report(
            ['filters', i, direction, j, 'priority'],
            `duplicate priority ${priority} in ${direction} (also at ${at('filters', i, direction, first, 'priority')}); priorities are unique per direction`,
          );
        }
      });
    }
  });

  const sessions = asList(root.sessions);
  unique(sessions, 'sessions', 'id', 'session id');
  unique(sessions, 'sessions', 'priority', 'session priority');
  const filterIds = filters.map((f) => asRecord(f).id);
  const filterIdsKnown = filterIds.every((x) => typeof x === 'string');
  const perInterface = new Map<string, number>();
  sessions.forEach((entry, i) => {
    const s = asRecord(entry);
    if (filterIdsKnown && typeof s.filterId === 'string' && !filterIds.includes(s.filterId)) {
      const known = filterIds.length === 0 ? 'no filters are defined' : `defined: ${filterIds.join(', ')}`;
      report(['sessions', i, 'filterId'], `no filter with id ${JSON.stringify(s.filterId)} (${known})`);
    }
    const sources = asList(s.sources);
    if (sources.length > LIMITS.sourcesPerSession) {
      report(['sessions', i, 'sources'], `at most ${LIMITS.sourcesPerSession} sources per session, got ${sources.length}`);
    }
    new Set(sources).forEach((name) => {
      if (typeof name !== 'string') return;
      const count = (perInterface.get(name) ?? 0) + 1;
      perInterface.set(name, count);
      if (count > LIMITS.sessionsPerInterface) {
        report(
          ['sessions', i, 'sources', sources.indexOf(name)],
          `${JSON.stringify(name)} is already a source of ${LIMITS.sessionsPerInterface} sessions; at most ${LIMITS.sessionsPerInterface} sessions per interface`,
        );
      }
    });
  });

  unique(asList(root.flowLogs), 'flowLogs', 'id', 'flow log id');
}

// ---- the configuration -------------------------------------------------------------

export function createConfigSchema(env: SchemaEnv) {
  return z
    .strictObject({
      agent: agent.prefault({}),
      filters: z.array(filter).default(() => []),
      sessions: z.array(sessionSchema(env)).default(() => []),
      flowLogs: z.array(flowLog).default(() => []),
    })
    .superRefine(crossCheck, {
      when: (payload) => typeof payload.value === 'object' && payload.value !== null && !Array.isArray(payload.value),
    });
}

export type ConfigSchema = ReturnType<typeof createConfigSchema>;

// Compile-time proof that the schema's output is exactly the Config other modules import:
// a field the schema adds or drops, or a type that differs, fails the build.
type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends (<T>() => T extends Y ? 1 : 2) ? true : false;
type Assert<T extends true> = T;
export type SchemaOutputIsConfig = Assert<Equal<z.output<ConfigSchema>, Config>>;

// ---- messages ----------------------------------------------------------------------

const NOUNS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
};

/** Zod's generic issues (type, enum, length) reworded as "expected X, got Y". */
export const errorMap: z.core.$ZodErrorMap = (iss) => {
  switch (iss.code) {
    case 'invalid_type': {
      const noun = NOUNS[iss.expected] ?? iss.expected;
      if (iss.input === undefined) return `missing (expected ${noun})`;
      const quote = iss.expected === 'string' && typeof iss.input === 'number' ? ' (quote it)' : '';
      return `expected ${noun}, got ${describeValue(iss.input)}${quote}`;
    }
    case 'invalid_value': {
      const list = iss.values.map((v) => JSON.stringify(v)).join(' | ');
      return iss.input === undefined ? `missing (expected one of ${list})` : `expected one of ${list}, got ${describeValue(iss.input)}`;
    }
    case 'too_small':
      if (iss.origin === 'string') return `must not be empty`;
      if (iss.origin === 'array') return `needs at least ${iss.minimum} entry, got none`;
      return undefined;
    case 'invalid_union': {
      // A discriminated union (sink.type) whose tag is missing or unknown.
      const { discriminator, options } = iss as { discriminator?: string; options?: unknown };
      if (discriminator === undefined || !Array.isArray(options)) return undefined;
      const list = options.map((v) => JSON.stringify(v)).join(' | ');
      const got = asRecord(iss.input)[discriminator];
      return got === undefined ? `missing (expected one of ${list})` : `expected one of ${list}, got ${describeValue(got)}`;
    }
    case 'unrecognized_keys':
      return 'unknown key';
    default:
      return undefined;
  }
};
