// Sensor pools: the rendezvous choice (agent/mirror/pool.ts) and the `targets:` checks of
// the config schema (SPEC §1, §3).
import { describe, expect, it } from 'vitest';
import { formatIssues, parseConfig } from '../../agent/config/load.js';
import { ConfigError } from '../../agent/errors.js';
import { allHealthy, NO_MEMBER, pickMember } from '../../agent/mirror/pool.js';
import { fmix32 } from '../../agent/packet/hash.js';

/** Flow hashes as flowHash() gives them: well-mixed, never 0. */
const hashes = Array.from({ length: 30_000 }, (_, i) => fmix32(i + 1) || 1);

describe('pickMember (rendezvous hashing)', () => {
  it('spreads flows within ±25% of even for every pool size 2..16', () => {
    for (let size = 2; size <= 16; size++) {
      const counts = new Array<number>(size).fill(0);
      for (const h of hashes) counts[pickMember(h, size, allHealthy(size))]!++;
      const even = hashes.length / size;
      for (const n of counts) {
        expect(n, `pool of ${size}: ${counts.join(' ')}`).toBeGreaterThan(even * 0.75);
        expect(n, `pool of ${size}: ${counts.join(' ')}`).toBeLessThan(even * 1.25);
      }
    }
  });

  // pickMember is a pure function of (hash, mask): back to the full mask, every flow is where it was.
  it('taking a member out moves only its flows, spread over the rest', () => {
    const size = 5;
    const all = allHealthy(size);
    for (let out = 0; out < size; out++) {
      const without = all & ~(1 << out);
      const moved = new Array<number>(size).fill(0);
      let wrong = 0;
      for (const h of hashes) {
        const before = pickMember(h, size, all);
        const after = pickMember(h, size, without);
        if (after === out || (before !== out && after !== before)) wrong++;
        if (before === out) moved[after]!++;
      }
      // No flow goes to the member that is out, and no flow of another member moves.
      expect(wrong).toBe(0);
      const share = moved.reduce((a, b) => a + b, 0) / (size - 1);
      moved.forEach((n, m) => m !== out && expect(n).toBeGreaterThan(share * 0.75));
    }
  });

  it('names no member when none is healthy, and never an unhealthy one', () => {
    expect(pickMember(hashes[0]!, 3, 0)).toBe(NO_MEMBER);
    for (const h of hashes.slice(0, 1000)) expect(pickMember(h, 3, 0b010)).toBe(1);
  });
});

const LOCAL = ['192.0.2.1', '2001:db8::1'];
const config = (session: Record<string, unknown>) => JSON.stringify({
  filters: [{ id: 'tf', ingressRules: [], egressRules: [] }],
  sessions: [{ id: 'ts-1', priority: 1, vni: 10, filterId: 'tf', sources: ['eth0'], ...session }],
});
const pool = (...addresses: string[]) => addresses.map((address) => ({ address }));

function issuesOf(text: string): ReadonlyArray<{ path: string; message: string }> {
  try {
    parseConfig(text, { localAddresses: LOCAL });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error(`accepted:\n${text}`);
}

describe('targets: config checks', () => {
  it('accepts a pool and fills the health check defaults', () => {
    const c = parseConfig(config({ targets: { pool: pool('192.0.2.50', '192.0.2.51', '192.0.2.52'), healthCheck: { type: 'tcp', port: 22 } } }), { localAddresses: LOCAL });
    expect(c.sessions[0]!.target).toBeUndefined();
    expect(c.sessions[0]!.targets).toEqual({
      pool: [{ address: '192.0.2.50', port: 4789 }, { address: '192.0.2.51', port: 4789 }, { address: '192.0.2.52', port: 4789 }],
      healthCheck: { type: 'tcp', port: 22, interval: 2, unhealthyAfter: 3, healthyAfter: 2 },
    });
    const none = parseConfig(config({ targets: { pool: pool('2001:db8::50', '2001:db8::51') } }), { localAddresses: LOCAL });
    expect(none.sessions[0]!.targets!.healthCheck.type).toBe('none');
  });

  const bad: Array<{ name: string; session: Record<string, unknown>; path: string; message: string }> = [
    { name: 'neither', session: {}, path: 'sessions[0].target', message: 'needs target (one sensor) or targets (a pool)' },
    { name: 'both', session: { target: { address: '192.0.2.50' }, targets: { pool: pool('192.0.2.51', '192.0.2.52') } }, path: 'sessions[0].targets', message: 'not both' },
    { name: 'one member', session: { targets: { pool: pool('192.0.2.51') } }, path: 'sessions[0].targets.pool', message: 'a pool has 2..16 members' },
    { name: '17 members', session: { targets: { pool: pool(...Array.from({ length: 17 }, (_, i) => `192.0.2.${100 + i}`)) } }, path: 'sessions[0].targets.pool', message: 'at most 16 members, got 17' },
    { name: 'duplicate member', session: { targets: { pool: pool('192.0.2.51', '192.0.2.52', '192.0.2.51') } }, path: 'sessions[0].targets.pool[2].address', message: '192.0.2.51 is already pool member 0' },
    { name: 'member is this host', session: { targets: { pool: pool('192.0.2.51', '192.0.2.1') } }, path: 'sessions[0].targets.pool[1].address', message: 'belongs to this host' },
    { name: 'mixed families', session: { targets: { pool: pool('192.0.2.51', '2001:db8::51') } }, path: 'sessions[0].targets.pool[1].address', message: 'one address family' },
    { name: 'mixed ports', session: { targets: { pool: [{ address: '192.0.2.51' }, { address: '192.0.2.52', port: 8472 }] } }, path: 'sessions[0].targets.pool[1].port', message: 'share one port' },
    { name: 'tcp without port', session: { targets: { pool: pool('192.0.2.51', '192.0.2.52'), healthCheck: { type: 'tcp' } } }, path: 'sessions[0].targets.healthCheck.port', message: 'needs the port' },
    { name: 'icmp with port', session: { targets: { pool: pool('192.0.2.51', '192.0.2.52'), healthCheck: { type: 'icmp', port: 1 } } }, path: 'sessions[0].targets.healthCheck.port', message: 'only a tcp health check has a port' },
    { name: 'interval 0', session: { targets: { pool: pool('192.0.2.51', '192.0.2.52'), healthCheck: { type: 'icmp', interval: 0 } } }, path: 'sessions[0].targets.healthCheck.interval', message: 'must be 1..3600, got 0' },
    { name: 'unknown health key', session: { targets: { pool: pool('192.0.2.51', '192.0.2.52'), healthCheck: { type: 'icmp', timeout: 1 } } }, path: 'sessions[0].targets.healthCheck.timeout', message: 'unknown key' },
  ];
  it.each(bad)('refuses $name', ({ session, path, message }) => {
    const issues = issuesOf(config(session));
    const hit = issues.find((i) => i.path === path);
    expect(hit, formatIssues(issues)).toBeDefined();
    expect(hit!.message).toContain(message);
  });
});
