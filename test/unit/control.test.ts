import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { execFile } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseConfig } from '../../agent/config/load.js';
import type { Config } from '../../agent/config/types.js';
import { readRawConfig, writeConfigAtomic } from '../../agent/config/write.js';
import { controlRequest, formatSessionList } from '../../agent/control/client.js';
import { applyEdit, parseEdit } from '../../agent/control/edit.js';
import { ControlError } from '../../agent/control/protocol.js';
import { ControlServer, type ControlHandler } from '../../agent/control/server.js';
import { ConfigError } from '../../agent/errors.js';

const run = promisify(execFile);
const LOCAL = ['192.0.2.1', '127.0.0.1', '::1'];
const NOBODY = 65534;

const CONFIG = `# operator's file
agent: { vmId: host-1, metrics: { listen: "" } }
filters:
  - id: tf-web
    ingressRules:
      - { priority: 1, action: accept, protocol: TCP, sourceCidrBlock: 0.0.0.0/0, destinationCidrBlock: 10.0.0.0/8, destinationPortRange: 80/443 }
    egressRules: []
sessions:
  - { id: ts-1, priority: 1, filterId: tf-web, sources: [eth0], target: { address: 192.0.2.50 } }
  - { id: ts-2, priority: 2, enabled: false, vni: 7, filterId: tf-web, sources: [eth0, eth1], target: { address: 192.0.2.51 } }
  - { id: ts-3, priority: 3, filterId: tf-web, sources: [eth0], target: { address: 192.0.2.52 } }
  - { id: ts-4, priority: 4, filterId: tf-web, sources: [eth2], target: { address: 192.0.2.53 } }
flowLogs:
  - { id: fl-1, sources: ["*"], sink: { type: stdout } }
`;

/** The agent's side as the lead wires it: validate like a file, write back, swap. */
class FileBackedHandler implements ControlHandler {
  running: Config;
  raw: unknown;
  applied = 0;

  constructor(readonly file: string, text: string) {
    this.running = parseConfig(text, { localAddresses: LOCAL });
  }

  async init(): Promise<this> {
    this.raw = await readRawConfig(this.file);
    return this;
  }

  status() {
    return { dataPlane: 'pcap', sessionsEnabled: this.running.sessions.filter((s) => s.enabled).map((s) => s.id) };
  }
  config() {
    return this.running;
  }
  rawConfig() {
    return this.raw;
  }
  flowLogState(id: string) {
    return { id, recordsWritten: 0 };
  }
  async apply(next: unknown) {
    const config = parseConfig(JSON.stringify(next), { localAddresses: LOCAL });
    await writeConfigAtomic(this.file, next);
    this.running = config;
    this.raw = next;
    this.applied++;
  }
}

/** The refusal a request gets (fails the test when it is accepted). */
async function refusal(socket: string, op: string, args?: unknown): Promise<ControlError> {
  try {
    await controlRequest(socket, op, args);
  } catch (err) {
    expect(err).toBeInstanceOf(ControlError);
    return err as ControlError;
  }
  throw new Error(`${op} was accepted`);
}

/** What `mirrorflow validate` would say about a document. */
function validateIssues(doc: unknown) {
  try {
    parseConfig(JSON.stringify(doc), { localAddresses: LOCAL });
  } catch (err) {
    return (err as ConfigError).issues;
  }
  throw new Error('document is valid');
}

let dir: string;
let file: string;
let socket: string;
let handler: FileBackedHandler;
let server: ControlServer;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'mf-control-'));
  file = path.join(dir, 'mirrorflow.yaml');
  await writeFile(file, CONFIG, { mode: 0o640 });
  handler = await new FileBackedHandler(file, CONFIG).init();
  socket = path.join(dir, 'run', 'control.sock');
  server = await ControlServer.listen({ socketPath: socket, handler });
});

afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('control socket: files and access', () => {
  it('creates a missing parent directory 0700 and the socket 0600', async () => {
    expect((await stat(path.dirname(socket))).mode & 0o777).toBe(0o700);
    const st = await lstat(socket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
  });

  it('removes the socket file on close', async () => {
    await server.close();
    await expect(lstat(socket)).rejects.toMatchObject({ code: 'ENOENT' });
    server = await ControlServer.listen({ socketPath: socket, handler });
  });

  it('replaces a stale socket file that nothing listens on', async () => {
    await server.close();
    // A process that bound the path and died without unlinking it.
    await run('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(socket)})`]);
    expect((await lstat(socket)).isSocket()).toBe(true);
    server = await ControlServer.listen({ socketPath: socket, handler });
    expect(await controlRequest(socket, 'status')).toMatchObject({ dataPlane: 'pcap' });
  });

  it('refuses to start while another agent listens, and leaves that one working', async () => {
    await expect(ControlServer.listen({ socketPath: socket, handler })).rejects.toThrow(/another process is listening/);
    expect(await controlRequest(socket, 'status')).toMatchObject({ dataPlane: 'pcap' });
  });

  it('refuses a path that is not a socket', async () => {
    const plain = path.join(dir, 'plain');
    await writeFile(plain, 'x');
    await expect(ControlServer.listen({ socketPath: plain, handler })).rejects.toThrow(/not a socket/);
    expect(await readFile(plain, 'utf8')).toBe('x');
  });

  it('is not reachable by a non-root user (EACCES), which a looser mode would allow', async () => {
    // The directory is opened up so that only the socket's own mode stands in the way.
    await chmod(path.dirname(socket), 0o755);
    await chmod(dir, 0o755);
    const tryConnect = async () => {
      const script = `require('net').connect(${JSON.stringify(socket)})
        .on('connect', () => { console.log('CONNECTED'); process.exit(0); })
        .on('error', (e) => { console.log(e.code); process.exit(0); });`;
      const { stdout } = await run('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', script]);
      return stdout.trim();
    };
    expect(await tryConnect()).toBe('EACCES');
    await chmod(socket, 0o666);
    expect(await tryConnect()).toBe('CONNECTED');
  });
});

describe('control socket: operations', () => {
  it('lists sessions, filters and flow logs of the running config, and the status', async () => {
    const sessions = (await controlRequest(socket, 'sessions.list')) as { sessions: Config['sessions'] };
    expect(sessions.sessions.map((s) => [s.id, s.enabled])).toEqual([
      ['ts-1', true],
      ['ts-2', false],
      ['ts-3', true],
      ['ts-4', true],
    ]);
    const table = formatSessionList(sessions);
    expect(table.split('\n')[0]).toMatch(/^ID\s+NAME\s+ENABLED/);
    expect(table).toMatch(/ts-2\s+ts-2\s+no\s+2\s+7\s+tf-web\s+eth0,eth1\s+192\.0\.2\.51:4789/);

    const filters = (await controlRequest(socket, 'filters.list')) as { filters: any[] };
    expect(filters.filters[0].ingressRules[0]).toMatchObject({ priority: 1, destinationPortRange: '80/443', sourcePortRange: '-1/-1' });

    const flowLogs = (await controlRequest(socket, 'flowlogs.list')) as { flowLogs: any[] };
    expect(flowLogs.flowLogs).toEqual([expect.objectContaining({ id: 'fl-1', sources: ['*'], state: { id: 'fl-1', recordsWritten: 0 } })]);

    expect(await controlRequest(socket, 'status')).toEqual({ dataPlane: 'pcap', sessionsEnabled: ['ts-1', 'ts-3', 'ts-4'] });
  });

  it('stops and starts a session, writes it back, and a restart would keep it', async () => {
    const stopped = (await controlRequest(socket, 'session.stop', { id: 'ts-1' })) as any;
    expect(stopped).toMatchObject({ changed: true, session: { id: 'ts-1', enabled: false } });
    expect(handler.running.sessions.find((s) => s.id === 'ts-1')?.enabled).toBe(false);
    const onDisk = parseConfig(await readFile(file, 'utf8'), { localAddresses: LOCAL });
    expect(onDisk.sessions.find((s) => s.id === 'ts-1')?.enabled).toBe(false);
    // What the operator left out stays left out: the derived vni is not pinned into the file.
    expect(await readFile(file, 'utf8')).not.toMatch(/vniDerived/);
    expect(onDisk.sessions.find((s) => s.id === 'ts-1')?.vniDerived).toBe(true);

    const again = (await controlRequest(socket, 'session.stop', { id: 'ts-1' })) as any;
    expect(again.changed).toBe(false);
    expect(handler.applied).toBe(1);

    await controlRequest(socket, 'session.start', { id: 'ts-1' });
    await controlRequest(socket, 'session.start', { id: 'ts-2' });
    const reread = parseConfig(await readFile(file, 'utf8'), { localAddresses: LOCAL });
    expect(reread.sessions.map((s) => s.enabled)).toEqual([true, true, true, true]);
  });

  it('adds and removes sources and filter rules', async () => {
    await controlRequest(socket, 'session.addSource', { id: 'ts-4', interface: 'eth3' });
    expect(handler.running.sessions[3]?.sources).toEqual(['eth2', 'eth3']);
    await controlRequest(socket, 'session.removeSource', { id: 'ts-4', interface: 'eth2' });
    expect(handler.running.sessions[3]?.sources).toEqual(['eth3']);

    const rule = { priority: 5, action: 'drop', protocol: 'UDP', sourceCidrBlock: '10.0.0.0/8', destinationCidrBlock: '0.0.0.0/0', destinationPortRange: '53/53' };
    const added = (await controlRequest(socket, 'filter.addRule', { filterId: 'tf-web', direction: 'egress', rule })) as any;
    expect(added.filter.egressRules).toEqual([{ ...rule, sourcePortRange: '-1/-1' }]);
    expect(handler.running.filters[0]?.egressRules[0]?.destinationPortRange).toEqual({ start: 53, end: 53 });

    await controlRequest(socket, 'filter.removeRule', { filterId: 'tf-web', direction: 'ingress', priority: 1 });
    expect(handler.running.filters[0]?.ingressRules).toEqual([]);
    const onDisk = parseConfig(await readFile(file, 'utf8'), { localAddresses: LOCAL });
    expect(onDisk.filters[0]?.ingressRules).toEqual([]);
    expect(onDisk.filters[0]?.egressRules).toHaveLength(1);
  });

  it('refuses invalid changes with the errors of validate, leaving file and running config alone', async () => {
    const before = await readFile(file, 'utf8');
    const running = handler.running;

    // eth0 already has three sessions: a fourth breaks the per-interface limit.
    const tooMany = await refusal(socket, 'session.addSource', { id: 'ts-4', interface: 'eth0' });
    const expected = validateIssues(applyEdit(handler.raw, parseEdit('session.addSource', { id: 'ts-4', interface: 'eth0' })).next);
    expect(tooMany.code).toBe('MF_CONFIG_INVALID');
    expect(tooMany.issues).toEqual(expected);
    expect(tooMany.issues).toEqual([expect.objectContaining({ path: 'sessions[3].sources[1]' })]);

    const badRule = await refusal(socket, 'filter.addRule', {
      filterId: 'tf-web',
      direction: 'ingress',
      rule: { priority: 1, action: 'accept', protocol: 'ICMP', sourceCidrBlock: '10.0.0.1/8', destinationCidrBlock: '0.0.0.0/0' },
    });
    expect(badRule.code).toBe('MF_CONFIG_INVALID');
    expect(badRule.issues?.map((i) => i.path).sort()).toEqual([
      'filters[0].ingressRules[1].priority',
      'filters[0].ingressRules[1].sourceCidrBlock',
    ]);

    const duplicate = await refusal(socket, 'session.addSource', { id: 'ts-1', interface: 'eth0' });
    expect(duplicate.issues).toEqual([{ path: 'sessions[0].sources[1]', message: '"eth0" is listed twice' }]);

    expect(await readFile(file, 'utf8')).toBe(before);
    expect(handler.running).toBe(running);
    expect(handler.applied).toBe(0);
  });

  it('refuses unknown names, unknown ops and malformed requests with coded errors', async () => {
    const missing = await refusal(socket, 'session.stop', { id: 'ts-9' });
    expect(missing.code).toBe('MF_CONTROL_NOT_FOUND');
    expect(missing.message).toContain('defined: ts-1, ts-2, ts-3, ts-4');
    expect((await refusal(socket, 'session.removeSource', { id: 'ts-1', interface: 'eth7' })).code).toBe('MF_CONTROL_NOT_FOUND');
    expect((await refusal(socket, 'filter.removeRule', { filterId: 'tf-web', direction: 'egress', priority: 1 })).code).toBe('MF_CONTROL_NOT_FOUND');
    expect((await refusal(socket, 'sessions.delete')).code).toBe('MF_CONTROL_UNKNOWN_OP');

    const badArgs = await refusal(socket, 'filter.removeRule', { filterId: 'tf-web', direction: 'up', extra: 1 });
    expect(badArgs.code).toBe('MF_CONTROL_BAD_REQUEST');
    expect(badArgs.issues?.map((i) => i.path).sort()).toEqual(['args.direction', 'args.extra', 'args.priority']);

    // Raw lines: not JSON, then a valid request on the same connection still gets its answer.
    const answers = await new Promise<any[]>((resolve, reject) => {
      const client = net.connect(socket);
      let text = '';
      client.setEncoding('utf8');
      client.on('data', (chunk: string) => {
        text += chunk;
        const lines = text.split('\n').filter(Boolean);
        if (lines.length === 2) {
          client.destroy();
          resolve(lines.map((l) => JSON.parse(l)));
        }
      });
      client.on('error', reject);
      client.write('{not json\n{"id":"b","op":"status"}\n');
    });
    expect(answers[0]).toMatchObject({ id: null, ok: false, error: { code: 'MF_CONTROL_BAD_REQUEST' } });
    expect(answers[1]).toMatchObject({ id: 'b', ok: true, result: { dataPlane: 'pcap' } });
  });

  it('applies concurrent edits one after another, losing none', async () => {
    await Promise.all(
      ['eth3', 'eth4', 'eth5', 'eth6'].map((name) => controlRequest(socket, 'session.addSource', { id: 'ts-4', interface: name })),
    );
    expect([...(handler.running.sessions[3]?.sources ?? [])].sort()).toEqual(['eth2', 'eth3', 'eth4', 'eth5', 'eth6']);
    const onDisk = parseConfig(await readFile(file, 'utf8'), { localAddresses: LOCAL });
    expect(onDisk.sessions[3]?.sources).toHaveLength(5);
  });

  it('reports an agent that is not running as unavailable', async () => {
    await server.close();
    const err = await refusal(socket, 'status');
    expect(err.code).toBe('MF_CONTROL_UNAVAILABLE');
    expect(err.message).toMatch(/is mirrorflow running/);
    server = await ControlServer.listen({ socketPath: socket, handler });
  });
});

describe('edits and write-back', () => {
  it('applyEdit leaves its input untouched', () => {
    const raw = { sessions: [{ id: 'ts-1', sources: ['eth0'] }] };
    const copy = structuredClone(raw);
    const { next } = applyEdit(raw, parseEdit('session.addSource', { id: 'ts-1', interface: 'eth1' }));
    expect(raw).toEqual(copy);
    expect(next).toEqual({ sessions: [{ id: 'ts-1', sources: ['eth0', 'eth1'] }] });
    expect(() => applyEdit(raw, parseEdit('filter.addRule', { filterId: 'x', direction: 'ingress', rule: {} }))).toThrow(
      /no filter "x" \(no filters are defined\)/,
    );
  });

  it('writeConfigAtomic keeps the mode, follows a symlink and leaves no temp file', async () => {
    const target = path.join(dir, 'real.yaml');
    await writeFile(target, 'agent: {}\n', { mode: 0o640 });
    await chmod(target, 0o640);
    const link = path.join(dir, 'link.yaml');
    await symlink(target, link);
    await writeConfigAtomic(link, { sessions: [], agent: { vmId: 'h' } });
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect((await stat(target)).mode & 0o777).toBe(0o640);
    expect(await readRawConfig(target)).toEqual({ sessions: [], agent: { vmId: 'h' } });
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);

    const fresh = path.join(dir, 'new', 'fresh.yaml');
    await mkdir(path.dirname(fresh));
    await writeConfigAtomic(fresh, { flowLogs: [] });
    expect((await stat(fresh)).mode & 0o777).toBe(0o600);
  });
});
