// Configuration an attacker or a slip could hand the agent, beyond the field-by-field cases
// of config.test.ts: a world-writable file (refused when running as root: whoever can edit
// it chooses what root captures and where copies go), a file the reading user may not
// read (checked as an unprivileged uid, since root reads anything), interface names that
// would be dangerous on a command line or in a path, YAML built to exhaust memory or the
// stack, and the CLI's exit codes for all of them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfigDocument, MAX_CONFIG_BYTES, parseConfig } from '../../agent/config/load.js';
import { ConfigError, ConfigReadError } from '../../agent/errors.js';
import { run } from '../../agent/exec.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from '../e2e/helpers/build.js';

const MINIMAL = fileURLToPath(new URL('../fixtures/configs/good/minimal.yaml', import.meta.url));
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

const withSource = (name: string) => `
filters: [{ id: tf, ingressRules: [], egressRules: [] }]
sessions: [{ id: ts, priority: 1, filterId: tf, sources: [${JSON.stringify(name)}], target: { address: 198.51.100.9 } }]
`;
const withFlowLogSource = (name: string) => `
flowLogs: [{ id: fl, sources: [${JSON.stringify(name)}], sink: { type: stdout } }]
`;

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** `mirrorflow validate --config file`, optionally as another uid (setpriv, no groups). */
function validate(file: string, uid?: number): Promise<{ code: number; out: string; err: string }> {
  const argv = uid === undefined
    ? [process.execPath, AGENT_CLI, 'validate', '--config', file]
    : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, AGENT_CLI, 'validate', '--config', file];
  return run(argv[0]!, argv.slice(1), { cwd: REPO_ROOT }).then(
    (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
    (e: { exitCode?: number | null; stdout?: string; stderr?: string }) => ({ code: e.exitCode ?? -1, out: e.stdout ?? '', err: e.stderr ?? '' }),
  );
}

describe('hostile configuration', () => {
  let dir: string;
  beforeAll(async () => {
    await ensureBuilt();
    dir = await mkdtemp(join(tmpdir(), 'mf-hostile-'));
    // Other users may enter the directory: only the file's own mode decides what they read.
    await chmod(dir, 0o755);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it.runIf(isRoot)('refuses a world-writable config file when running as root, accepts it once fixed', async () => {
    const file = join(dir, 'ww.yaml');
    await copyFile(MINIMAL, file);
    await chmod(file, 0o666);
    const err = await loadConfigDocument(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigReadError);
    expect((err as Error).message).toMatch(/world-writable \(mode 666\).*chmod o-w/);
    const cli = await validate(file);
    expect(cli.code).toBe(1);
    expect(cli.err).toContain(`cannot read config ${file}: it is world-writable`);
    await chmod(file, 0o640);
    await expect(loadConfigDocument(file)).resolves.toHaveProperty('config.sessions.0.id', 'ts-derived');
    expect((await validate(file)).code).toBe(0);
  });

  it.runIf(isRoot)('refuses a file the user may not read (as uid 65534): exit 1, "permission denied"; readable: exit 0', async () => {
    const file = join(dir, 'secret.yaml');
    await copyFile(MINIMAL, file);
    await chmod(file, 0o600);
    const refused = await validate(file, NOBODY);
    expect(refused.code).toBe(1);
    expect(refused.err.trim()).toBe(`cannot read config ${file}: permission denied [MF_CONFIG_READ]`);
    // Same file, same user, readable: the refusal came from the mode, not from the setup.
    await chmod(file, 0o644);
    const ok = await validate(file, NOBODY);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toContain('valid');
  });

  it.each([
    'eth0;rm -rf /', '../../etc', 'a b', '$(reboot)', 'eth0`id`', 'x'.repeat(16), '', 'eth0\n',
    'eth0\u0000', '.', '..', 'eth0/x', '-eth0', 'ethé', 'eth0|sh', "eth0'",
  ])('refuses the interface name %j with the field path, in sessions and in flow logs', (name) => {
    const err = thrown(() => parseConfig(withSource(name), { localAddresses: [] }));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.path)).toContain('sessions[0].sources[0]');
    const flowErr = thrown(() => parseConfig(withFlowLogSource(name), { localAddresses: [] }));
    expect(flowErr).toBeInstanceOf(ConfigError);
    expect((flowErr as ConfigError).issues.map((i) => i.path)).toContain('flowLogs[0].sources[0]');
  });

  it('refuses a YAML alias bomb at once instead of expanding it', () => {
    // 10^8 leaves if expanded.
    const levels = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 8; i++) {
      const prev = String.fromCharCode(96 + i);
      levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${prev}`).join(', ')}]`);
    }
    const started = performance.now();
    const err = thrown(() => parseConfig(levels.join('\n'), { localAddresses: [] }));
    expect(performance.now() - started).toBeLessThan(2000);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/alias/i);
  });

  it.each([
    ['YAML', 'agent: ' + '['.repeat(100_000) + ']'.repeat(100_000)],
    ['JSON', '{"agent": ' + '['.repeat(100_000) + ']'.repeat(100_000) + '}'],
  ])('refuses %s nested 100,000 deep as an invalid config, not a crash', (_, text) => {
    const err = thrown(() => parseConfig(text, { localAddresses: [] }));
    expect(err).toBeInstanceOf(ConfigError);
  });

  it('validate exits 0 for a good file, 1 with every problem for a bad one, 1 for a missing one or a directory', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, withSource('eth0;reboot') + 'extra: 1\n');
    expect((await validate(MINIMAL)).code).toBe(0);
    const b = await validate(bad);
    expect(b.code).toBe(1);
    // Every error line names the file, as a compiler's do.
    expect(b.err.startsWith(`${bad}: sessions[0].sources[0]: `)).toBe(true);
    expect(b.err).toContain(`\n${bad}: extra: unknown key\n`);
    const missing = await validate(join(dir, 'nope.yaml'));
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/no such file/);
    const directory = await validate(dir);
    expect(directory.code).toBe(1);
    expect(directory.err).toMatch(/it is a directory/);
  });

  it.runIf(isRoot)('refuses a FIFO at once (open never waits for a writer), naming the file; validate exits 1', async () => {
    const fifo = join(dir, 'fifo.yaml');
    await run('mkfifo', ['-m', '0600', fifo]);
    const started = performance.now();
    const err = await loadConfigDocument(fifo).catch((e: unknown) => e);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(err).toBeInstanceOf(ConfigReadError);
    expect((err as Error).message).toBe(`cannot read config ${fifo}: it is a FIFO (named pipe), not a regular file`);
    const cli = await validate(fifo);
    expect(cli.code).toBe(1);
    expect(cli.err.trim()).toBe(`cannot read config ${fifo}: it is a FIFO (named pipe), not a regular file [MF_CONFIG_READ]`);
  });

  it.each(['/dev/zero', '/dev/urandom', '/dev/null'])('refuses the device %s without reading it', async (device) => {
    const err = await loadConfigDocument(device).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigReadError);
    expect((err as Error).message).toBe(`cannot read config ${device}: it is a device, not a regular file`);
  });

  it('refuses a file over the size limit before reading it; a file at the limit is read', async () => {
    const huge = join(dir, 'huge.yaml');
    // Comments only: valid YAML of any size, so only the limit can refuse it.
    const line = '#'.repeat(1023) + '\n';
    await writeFile(huge, line.repeat(2 * 1024), { mode: 0o600 });
    const err = await loadConfigDocument(huge).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigReadError);
    expect((err as Error).message).toBe(`cannot read config ${huge}: it is ${2 * 1024 * 1024} bytes; the limit is ${MAX_CONFIG_BYTES}`);
    const atLimit = join(dir, 'at-limit.yaml');
    const body = 'agent: { vmId: big }\n';
    await writeFile(atLimit, body + '#'.repeat(MAX_CONFIG_BYTES - body.length - 1) + '\n', { mode: 0o600 });
    await expect(loadConfigDocument(atLimit)).resolves.toHaveProperty('config.agent.vmId', 'big');
  });
});
