// Where the agent's log lines go: errors (level >= 50) on stderr, the rest on stdout; under
// systemd each line carries its syslog priority prefix, which journald turns into PRIORITY
// (so `journalctl -p err` shows the errors); a user's mistake is logged without a stack.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DestinationStream } from 'pino';
import { createLogger } from '../../agent/log.js';
import { ConfigError } from '../../agent/errors.js';
import { CommandError, run } from '../../agent/exec.js';
import { AGENT_CLI, ensureBuilt } from '../e2e/helpers/build.js';

function collector(): DestinationStream & { lines: string[] } {
  const lines: string[] = [];
  return { lines, write: (line: string) => void lines.push(line) };
}

describe('agent log', () => {
  it('writes error and fatal lines to stderr only, everything else to stdout only', () => {
    const stdout = collector();
    const stderr = collector();
    const log = createLogger('debug', { stdout, stderr, journal: false });
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
    log.fatal('f');
    const levels = (lines: string[]) => lines.map((l) => (JSON.parse(l) as { level: number }).level);
    expect(levels(stdout.lines)).toEqual([20, 30, 40]);
    expect(levels(stderr.lines)).toEqual([50, 60]);
  });

  it('prefixes each line with its syslog priority when journald reads it (sd-daemon <N>)', () => {
    const stdout = collector();
    const stderr = collector();
    const log = createLogger('info', { stdout, stderr, journal: true });
    log.info('i');
    log.warn('w');
    log.error('e');
    log.fatal('f');
    expect(stdout.lines.map((l) => l.slice(0, 3))).toEqual(['<6>', '<4>']);
    expect(stderr.lines.map((l) => l.slice(0, 3))).toEqual(['<3>', '<2>']);
    // What journald keeps after stripping the prefix is the JSON line itself.
    expect(JSON.parse(stderr.lines[0]!.slice(3))).toMatchObject({ level: 50, msg: 'e' });
  });

  it('logs a user mistake (a MirrorflowError) with its code and issues, without a stack trace', () => {
    const stderr = collector();
    const log = createLogger('info', { stdout: collector(), stderr, journal: false });
    log.error({ err: new ConfigError([{ path: 'sessions[0].vni', message: 'must be 0..16777215, got -1' }], '/etc/mirrorflow/mirrorflow.yaml') }, 'reload refused');
    log.error({ err: new Error('a bug') }, 'unexpected');
    const [mistake, bug] = stderr.lines.map((l) => JSON.parse(l) as { err: Record<string, unknown> });
    expect(mistake!.err).toEqual({
      type: 'ConfigError',
      code: 'MF_CONFIG_INVALID',
      message: expect.stringContaining('config /etc/mirrorflow/mirrorflow.yaml is invalid (1 error)'),
      issues: [{ path: 'sessions[0].vni', message: 'must be 0..16777215, got -1' }],
    });
    expect(bug!.err.stack).toMatch(/^Error: a bug\n\s+at /);
  });
});

describe('agent log (process)', () => {
  let dir: string;
  beforeAll(async () => {
    await ensureBuilt();
    dir = await mkdtemp(join(tmpdir(), 'mf-log-'));
  }, 60_000);
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('run with an invalid config: the fatal line is on stderr, names the problem and has no stack', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'agent: { dataPlane: xdp }\n');
    await chmod(file, 0o600);
    const r = await run('node', [AGENT_CLI, 'run', '--config', file]).then(
      (x) => ({ code: 0, ...x }),
      (err: CommandError) => ({ code: err.exitCode, stdout: err.stdout, stderr: err.stderr }),
    );
    expect(r.code).toBe(1);
    const errorLines = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as { level: number; err?: { issues?: unknown; stack?: unknown } });
    expect(errorLines.length).toBeGreaterThan(0);
    expect(errorLines.every((l) => l.level >= 50)).toBe(true);
    expect(errorLines[0]!.err?.issues).toEqual([{ path: 'agent.dataPlane', message: 'expected one of "auto" | "ebpf" | "pcap", got string "xdp"' }]);
    expect(r.stderr).not.toContain('"stack"');
    for (const line of r.stdout.split('\n').filter(Boolean)) expect((JSON.parse(line) as { level: number }).level).toBeLessThan(50);
  });
});
