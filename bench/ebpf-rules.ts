// The eBPF plane's per-packet cost in the kernel: BPF_PROG_TEST_RUN of mf_egress with 10
// rules × 3 sessions on one interface, for the worst case (the last rule of the last
// session decides) and for a packet no rule matches (every rule walked), plus the number
// of instructions the verifier processed per program (bpf_prog_info). `make bench` prints it;
// the numbers also go into bench/results/ebpf-rules.json.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../agent/config/load.js';
import { MirrorMaps } from '../agent/ebpf/mirror-maps.js';
import { buildPacket } from '../test/helpers/build-packet.js';
import { DIR_IN, DIR_OUT, type Direction } from '../agent/packet/view.js';
import { compileRules } from '../agent/rules/compile.js';

const REPEAT = 200_000;
/** Rounds over all cases, interleaved so drift on a shared VM hits every case alike; medians count. */
const ROUNDS = 9;
const RULES = 10;
const SESSIONS = 3;
const RESULTS = fileURLToPath(new URL('../../bench/results/ebpf-rules.json', import.meta.url));

/** Session s accepts UDP to port 1000·(s+1) + r from 10.s.r.0/24 for rule r. */
function config(iface: string) {
  const filters = Array.from({ length: SESSIONS }, (_, s) => ({
    id: `f${s}`,
    ingressRules: [],
    egressRules: Array.from({ length: RULES }, (_, r) => ({
      priority: r + 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: `10.${s}.${r}.0/24`, destinationCidrBlock: '0.0.0.0/0',
      destinationPortRange: `${1000 * (s + 1) + r}/${1000 * (s + 1) + r}`,
    })),
  }));
  const sessions = filters.map((f, s) => ({ id: `s${s}`, priority: s + 1, vni: s + 1, filterId: f.id, sources: [iface], target: { address: '192.0.2.50' } }));
  return compileRules(parseConfig(JSON.stringify({ agent: { vmId: 'bench' }, filters, sessions }), { localAddresses: [] }));
}

const lo = Number(readFileSync('/sys/class/net/lo/ifindex', 'utf8'));
const rules = config('lo');
const maps = MirrorMaps.open();
try {
  maps.install({
    rules,
    ifindexes: new Map([['lo', lo]]),
    sessions: rules.sessions.map((s) => ({ vni: s.vni, truncLen: s.packetLength, vxlanIfindex: 0, family: 4, remote: [0, 0, 0, 0] })),
    segIfindex: 0,
  });
  const last = SESSIONS - 1;
  const cases = {
    lastRuleOfLastSession: buildPacket({ src: `10.${last}.${RULES - 1}.7`, dst: '10.9.9.9', proto: 'udp', srcPort: 5555, dstPort: 1000 * SESSIONS + RULES - 1 }),
    noRuleMatches: buildPacket({ src: '172.16.0.1', dst: '10.9.9.9', proto: 'udp', srcPort: 5555, dstPort: 9 }),
    firstRule: buildPacket({ src: '10.0.0.7', dst: '10.9.9.9', proto: 'udp', srcPort: 5555, dstPort: 1000 }),
  };
  // The same frame inbound, where the sessions have no rules: parsing, map lookups and the
  // test-run harness without the rule walk. The difference is the rule evaluation.
  const runs: { name: string; frame: Buffer; dir: Direction }[] = [
    ...Object.entries(cases).map(([name, frame]) => ({ name, frame, dir: DIR_OUT as Direction })),
    { name: 'parseAndLookupsOnly', frame: cases.noRuleMatches, dir: DIR_IN as Direction },
  ];
  const samples = new Map<string, number[]>(runs.map((r) => [r.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const r of runs) samples.get(r.name)!.push(maps.decide(r.frame, lo, r.dir, REPEAT).durationNs);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const perPacketNs: Record<string, number> = Object.fromEntries([...samples].map(([name, xs]) => [name, median(xs)]));
  const ruleEvaluationNs = perPacketNs.noRuleMatches! - perPacketNs.parseAndLookupsOnly!;
  // The decision really was the last session / no match, or the numbers mean nothing.
  if (maps.decide(cases.lastRuleOfLastSession, lo, DIR_OUT).decision !== last) throw new Error('worst-case frame not decided by the last session');
  if (maps.decide(cases.noRuleMatches, lo, DIR_OUT).decision !== -1) throw new Error('no-match frame matched');

  const verifiedInsns = maps.verifiedInstructions();
  const result = { date: new Date().toISOString(), kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(), rules: `${RULES} rules x ${SESSIONS} sessions`, repeat: REPEAT, rounds: ROUNDS, perPacketNs, samples: Object.fromEntries(samples), ruleEvaluationNs, verifiedInsns };
  mkdirSync(fileURLToPath(new URL('../../bench/results/', import.meta.url)), { recursive: true });
  writeFileSync(RESULTS, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`eBPF rule evaluation (BPF_PROG_TEST_RUN, ${result.rules}, median of ${ROUNDS} interleaved rounds of ${REPEAT} runs)\n`);
  for (const [name, ns] of Object.entries(perPacketNs)) process.stdout.write(`  ${name.padEnd(24)} ${ns} ns/packet\n`);
  process.stdout.write(`  rule evaluation (all ${RULES * SESSIONS} rules walked) ≈ ${ruleEvaluationNs} ns/packet\n`);
  process.stdout.write('verifier: instructions processed per program\n');
  for (const [name, n] of Object.entries(verifiedInsns)) process.stdout.write(`  ${name.padEnd(24)} ${n}\n`);
} finally {
  maps.close();
}
