// Configuration an attacker or a slip could hand the agent: a world-writable file (refused
// when running as root: whoever can edit it chooses what root captures and where copies go),
// interface names that would be dangerous on a command line or in a path, and the CLI's
// exit codes for them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfigDocument, parseConfig } from '../../agent/config/load.js';
import { ConfigError, ConfigReadError } from '../../agent/errors.js';
import { run } from '../../agent/lab/exec.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from '../e2e/helpers/build.js';

const MINIMAL = fileURLToPath(new URL('../fixtures/configs/good/minimal.yaml', import.meta.url));

const withSource = (name: string) => `
filters: [{ id: tf, ingressRules: [], egressRules: [] }]
sessions: [{ id: ts, priority: 1, filterId: tf, sources: [${JSON.stringify(name)}], target: { address: 198.51.100.9 } }]
`;

describe('hostile configuration', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mf-hostile-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it.runIf(process.getuid?.() === 0)('refuses a world-writable config file when running as root, accepts it once fixed', async () => {
    const file = join(dir, 'ww.yaml');
    await copyFile(MINIMAL, file);
    await chmod(file, 0o666);
    const err = await loadConfigDocument(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigReadError);
    expect((err as Error).message).toMatch(/world-writable \(mode 666\).*chmod o-w/);
    await chmod(file, 0o640);
    await expect(loadConfigDocument(file)).resolves.toHaveProperty('config.sessions.0.id', 'ts-derived');
  });

  it.each(['eth0;rm -rf /', '../../etc', 'a b', '$(reboot)', 'eth0`id`', 'x'.repeat(16), '', 'eth0\n'])(
    'refuses the interface name %j with the field path',
    (name) => {
      const err = (() => {
        try {
          parseConfig(withSource(name), { localAddresses: [] });
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues.map((i) => i.path)).toContain('sessions[0].sources[0]');
    },
  );

  it('validate exits 0 for a good file, 1 with every problem for a bad one, 1 for a missing one', async () => {
    await ensureBuilt();
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, withSource('eth0;reboot') + 'extra: 1\n');
    const cli = (file: string) =>
      run(process.execPath, [AGENT_CLI, 'validate', '--config', file], { cwd: REPO_ROOT }).then(
        (r) => ({ code: 0, err: r.stderr }),
        (e: { exitCode?: number; stderr?: string }) => ({ code: e.exitCode ?? -1, err: e.stderr ?? '' }),
      );
    expect((await cli(MINIMAL)).code).toBe(0);
    const b = await cli(bad);
    expect(b.code).toBe(1);
    expect(b.err).toMatch(/sessions\[0\]\.sources\[0\]/);
    expect(b.err).toMatch(/extra: unknown key/);
    const missing = await cli(join(dir, 'nope.yaml'));
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/no such file/);
  });
});
