// The command line as an operator meets it, run as a process (dist/agent/cli.js): the
// version, help for every command, and `validate` reporting every problem in one run,
// each line naming the file, with warnings for sources this host does not have.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CommandError, run } from '../../agent/exec.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from '../e2e/helpers/build.js';

export interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `mirrorflow ARGS` and returns its exit code and output; never throws on a non-zero exit. */
export async function mirrorflow(args: string[]): Promise<Outcome> {
  try {
    return { code: 0, ...(await run('node', [AGENT_CLI, ...args])) };
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    return { code: err.exitCode ?? -1, stdout: err.stdout, stderr: err.stderr };
  }
}

const anyRule = { action: 'accept', sourceCidrBlock: '10.0.0.0/8', destinationCidrBlock: '::/0' };

describe('mirrorflow command line', () => {
  let dir: string;
  beforeAll(async () => {
    await ensureBuilt();
    dir = await mkdtemp(join(tmpdir(), 'mf-cli-'));
  }, 60_000);
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('--version prints the package version and the commit it was built from', async () => {
    const { version } = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await mirrorflow(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${version.replaceAll('.', '\\.')}( \\(commit [0-9a-f]{7,}(-dirty)?\\))?\\n$`));
  });

  it('has a help text for every command', async () => {
    const top = await mirrorflow(['--help']);
    const commands = [...top.stdout.matchAll(/^ {2}([a-z-]+)(?: \[options\]| <|\s)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    expect(commands).toEqual(expect.arrayContaining(['run', 'validate', 'replay', 'lab', 'status', 'flowlogs', 'session']));
    const session = await mirrorflow(['session', '--help']);
    const sub = [...session.stdout.matchAll(/^ {2}([a-z-]+)(?: \[options\]| <|\s)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    expect(sub).toEqual(['list', 'start', 'stop', 'add-source', 'remove-source']);
    for (const argv of [...commands.map((c) => [c]), ...sub.map((c) => ['session', c])]) {
      const help = await mirrorflow([...argv, '--help']);
      expect(help.code, argv.join(' ')).toBe(0);
      // Usage line, then a description line of its own.
      expect(help.stdout.split('\n')[2]?.trim().length ?? 0, `${argv.join(' ')} --help:\n${help.stdout}`).toBeGreaterThan(10);
    }
  });

  it('validate reports every error in one run, each line naming the file', async () => {
    const file = join(dir, 'rounds.yaml');
    await writeFile(file, stringify({
      filters: [{
        id: 'f',
        ingressRules: [
          { ...anyRule, priority: 1, protocol: 'ALL', sourcePortRange: '80/80' },
          // An unknown action used to hide this rule's family and port mistakes until it was fixed.
          { ...anyRule, priority: 2, action: 'maybe', protocol: 'ICMP', destinationPortRange: '53/53' },
        ],
      }],
      sessions: [{ id: 's', priority: 1, filterId: 'f', sources: ['lo'], target: { address: '192.0.2.50', port: 0 } }],
    }));
    const r = await mirrorflow(['validate', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n').sort()).toEqual([
      `${file}: filters[0].ingressRules[0].destinationCidrBlock: is IPv6 but sourceCidrBlock 10.0.0.0/8 is IPv4; a rule matches one address family`,
      `${file}: filters[0].ingressRules[0].sourcePortRange: must be "-1/-1" for protocol ALL (it has no ports), got "80/80"`,
      `${file}: filters[0].ingressRules[1].action: expected one of "accept" | "drop", got string "maybe"`,
      `${file}: filters[0].ingressRules[1].destinationCidrBlock: is IPv6 but sourceCidrBlock 10.0.0.0/8 is IPv4; a rule matches one address family`,
      `${file}: filters[0].ingressRules[1].destinationPortRange: must be "-1/-1" for protocol ICMP (it has no ports), got "53/53"`,
      `${file}: sessions[0].target.port: must be 1..65535, got 0`,
    ]);
  });

  it('validate warns about sources this host does not have, and still exits 0', async () => {
    const file = join(dir, 'missing-source.yaml');
    await writeFile(file, stringify({
      filters: [{ id: 'f', egressRules: [] }],
      sessions: [{ id: 's', priority: 1, filterId: 'f', sources: ['lo', 'mf-typo0'], target: { address: '192.0.2.50' } }],
      flowLogs: [{ id: 'fl', sources: ['mf-typo1'], sink: { type: 'stdout' } }],
    }));
    const r = await mirrorflow(['validate', '--config', file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${file}: valid\n`);
    const warnings = r.stderr.trim().split('\n');
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(new RegExp(`^${file}: warning: sessions\\[0\\]\\.sources\\[1\\]: interface "mf-typo0" does not exist on this host \\(it has .*lo.*\\)`));
    expect(warnings[1]).toMatch(new RegExp(`^${file}: warning: flowLogs\\[0\\]\\.sources\\[0\\]: interface "mf-typo1" does not exist`));
  });
});
