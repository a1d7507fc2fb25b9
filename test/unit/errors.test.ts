// The catalogue of coded errors: every code is documented in docs/errors.md (and nothing
// else is), and the errors a user meets carry their code, in the object and in what the
// CLI prints.

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer, type ControlHandler } from '../../agent/control/server.js';
import { ControlErrorCode } from '../../agent/control/protocol.js';
import { encodeChain, encodeSlot, MF_MAX_RULES, MF_MAX_SESSIONS } from '../../agent/ebpf/layout.js';
import { describeError, ErrorCode, MirrorflowError } from '../../agent/errors.js';
import { run } from '../../agent/exec.js';
import { parseListen } from '../../agent/metrics/http.js';
import { compileRules } from '../../agent/rules/compile.js';
import { parseConfig } from '../../agent/config/load.js';
import { replay } from '../../agent/replay.js';
import { createLogger } from '../../agent/log.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const ALL_CODES = [...Object.values(ErrorCode), ...Object.values(ControlErrorCode)];

async function codeOf(thrower: () => unknown): Promise<unknown> {
  try {
    await thrower();
  } catch (err) {
    return (err as { code?: unknown }).code;
  }
  throw new Error('expected a throw');
}

describe('docs/errors.md', () => {
  let doc: string;
  beforeAll(async () => {
    doc = await readFile(join(root, 'docs/errors.md'), 'utf8');
  });

  it('every code is unique, MF_-prefixed and has its own section', () => {
    expect(new Set(ALL_CODES).size).toBe(ALL_CODES.length);
    for (const code of ALL_CODES) {
      expect(code).toMatch(/^MF_[A-Z_]+$/);
      expect(doc, code).toContain(`\n### ${code}\n`);
    }
  });

  it('documents no code the agent does not have', () => {
    const documented = [...doc.matchAll(/^### (MF_[A-Z_]+)$/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual([...ALL_CODES].sort());
  });
});

describe('coded errors where a user meets them', () => {
  const rule = { priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' };
  const rules = compileRules(parseConfig(JSON.stringify({
    filters: [{ id: 'tf', ingressRules: Array.from({ length: 10 }, (_, i) => ({ ...rule, priority: i + 1 })), egressRules: [] }],
    sessions: [{ id: 'ts', priority: 1, vni: 5, filterId: 'tf', sources: ['eth0'], target: { address: '192.0.2.9' } }],
  }), { localAddresses: [] }));
  const eleven = [...rules.chains[0]![0]!.rules, rules.chains[0]![0]!.rules[0]!];

  it('eBPF limits: MF_EBPF_LIMIT, naming the limit', async () => {
    expect(await codeOf(() => encodeChain([{ session: 0, rules: eleven }]))).toBe(ErrorCode.EBPF_LIMIT);
    expect(() => encodeChain([{ session: 0, rules: eleven }])).toThrow(`more than ${MF_MAX_RULES} rules in one direction`);
    const session = { vni: 1, truncLen: 1500, vxlanIfindex: 0, family: 4 as const, remote: [0, 0, 0, 0] };
    const tooMany = Array.from({ length: MF_MAX_SESSIONS + 1 }, () => session);
    expect(await codeOf(() => encodeSlot(1, [], tooMany, 0))).toBe(ErrorCode.EBPF_LIMIT);
    expect(() => encodeSlot(1, [], tooMany.slice(1), 0)).not.toThrow();
  });

  it('a bad metrics address: MF_METRICS_LISTEN', async () => {
    expect(await codeOf(() => parseListen('localhost'))).toBe(ErrorCode.METRICS_LISTEN);
  });

  it('a command that fails: MF_COMMAND_FAILED with argv and exit code', async () => {
    const err = await run('sh', ['-c', 'echo oops >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MirrorflowError);
    expect((err as MirrorflowError).code).toBe(ErrorCode.COMMAND_FAILED);
    expect(describeError(err)).toBe("`sh -c echo oops >&2; exit 3` exited 3: oops [MF_COMMAND_FAILED]");
  });

  describe('with files', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'mf-errors-'));
    });
    afterAll(() => rm(dir, { recursive: true, force: true }));

    it('a control socket path that is a regular file: MF_CONTROL_SOCKET', async () => {
      const socketPath = join(dir, 'not-a-socket');
      await writeFile(socketPath, 'x');
      const handler: ControlHandler = { status: () => ({}), config: () => ({}), rawConfig: () => ({}), apply: () => Promise.resolve() } as unknown as ControlHandler;
      const err = await ControlServer.listen({ socketPath, handler }).catch((e: unknown) => e);
      expect((err as MirrorflowError).code).toBe(ErrorCode.CONTROL_SOCKET);
      expect((err as Error).message).toBe(`control socket path ${socketPath} exists and is not a socket`);
    });

    it('replay with a bad --local-mac: MF_REPLAY_INPUT, and the CLI prints the code', async () => {
      const config = join(dir, 'c.json');
      await writeFile(config, JSON.stringify({
        filters: [{ id: 'tf', ingressRules: [rule], egressRules: [] }],
        sessions: [{ id: 'ts', priority: 1, vni: 5, filterId: 'tf', sources: ['eth0'], target: { address: '192.0.2.9' } }],
      }));
      const pcap = join(dir, 'in.pcap');
      await writeFile(pcap, Buffer.alloc(0));
      const logger = createLogger('silent');
      expect(await codeOf(() => replay({ config, pcap, localMac: 'zz', logger }))).toBe(ErrorCode.REPLAY_INPUT);
      const cli = await promisify(execFile)('node', [join(root, 'dist/agent/cli.js'), 'replay', '-c', config, '--local-mac', 'zz', '--pcap', pcap])
        .then(() => undefined, (e: unknown) => e as { code: number; stderr: string });
      expect(cli?.code).toBe(1);
      expect(cli?.stderr.trim()).toBe('replay: --local-mac: not a MAC address: zz [MF_REPLAY_INPUT]');
    });
  });
});
