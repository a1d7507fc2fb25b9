// The agent's daemon behaviour without a lab: reloads coalesce (at most one running and one
// waiting), and a control edit over a file edited on disk names what differs.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { Agent } from '../../agent/agent.js';
import { readConfigFile } from '../../agent/config/load.js';
import { differingPaths, refuseIfChangedOnDisk } from '../../agent/control/drift.js';
import { ControlError, ControlErrorCode } from '../../agent/control/protocol.js';

let dir: string;
let file: string;
const DOC = {
  agent: { vmId: 'unit', dataPlane: 'pcap', metrics: { listen: '' } },
  filters: [{ id: 'tf', ingressRules: [], egressRules: [] }],
  sessions: [] as unknown[],
  flowLogs: [],
};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-daemon-unit-'));
  file = join(dir, 'mirrorflow.yaml');
  const agent = { ...DOC.agent, control: { socket: join(dir, 'run', 'control.sock') } };
  await writeFile(file, stringify({ ...DOC, agent }), { mode: 0o600 });
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('reloads', () => {
  it('coalesce: a burst while none runs is one reload; a burst while one runs adds exactly one more', async () => {
    const messages: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) messages.push((JSON.parse(line) as { msg: string }).msg);
        done();
      },
    });
    const agent = new Agent(file, pino({ level: 'info' }, sink));
    await agent.start();
    try {
      const first = Array.from({ length: 50 }, () => agent.reload());
      // The first reload has started (it runs after the current task): the next burst waits behind it.
      await new Promise((r) => setImmediate(r));
      const second = Array.from({ length: 50 }, () => agent.reload());
      const results = await Promise.all([...first, ...second]);
      expect(results.every((ok) => ok)).toBe(true);
      expect(messages.filter((m) => m === 'config reloaded')).toHaveLength(2);
      // Once both are done, a new request is a new reload.
      expect(await agent.reload()).toBe(true);
      expect(messages.filter((m) => m === 'config reloaded')).toHaveLength(3);
    } finally {
      await agent.stop();
    }
    // Stopping: no more reloads.
    expect(await agent.reload()).toBe(false);
  });
});

describe('control edits over on-disk changes', () => {
  it('names the paths where two documents differ', () => {
    expect(differingPaths({ a: 1, b: { c: [1, 2] } }, { a: 1, b: { c: [1, 3] } })).toEqual(['b.c[1]']);
    expect(differingPaths({ s: [{ id: 'x' }] }, { s: [{ id: 'x' }, { id: 'y' }] })).toEqual(['s (1 entries loaded, 2 on disk)']);
    expect(differingPaths({ a: 1 }, { b: 1 })).toEqual(['a', 'b']);
    expect(differingPaths({ a: { b: 1 } }, { a: { b: 1 } })).toEqual([]);
  });

  it('passes an unchanged file, refuses a changed one with MF_CONTROL_CONFLICT naming the field, and nothing is written', async () => {
    await writeFile(file, stringify(DOC));
    const loaded = await readConfigFile(file);
    await expect(refuseIfChangedOnDisk(file, loaded.file, DOC)).resolves.toBeUndefined();
    const edited = stringify({ ...DOC, agent: { ...DOC.agent, vmId: 'edited-on-disk' } });
    await writeFile(file, edited);
    const err = await refuseIfChangedOnDisk(file, loaded.file, DOC).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlError);
    expect((err as ControlError).code).toBe(ControlErrorCode.CONFLICT);
    expect((err as Error).message).toContain('agent.vmId');
    expect((err as Error).message).toContain(file);
    // A comment alone is a change too: writing back would lose it.
    await writeFile(file, `# kept\n${stringify(DOC)}`);
    await expect(refuseIfChangedOnDisk(file, loaded.file, DOC)).rejects.toThrow(/only comments or formatting differ/);
    await rm(file);
    await expect(refuseIfChangedOnDisk(file, loaded.file, DOC)).rejects.toThrow(/no such file/);
  });
});
