// What an operator installs: the systemd unit and `make install` layout, the default
// configs, the container build context, the Kubernetes manifests (checked against the
// Kubernetes API schemas of the kubernetes-models package, since no cluster runs here) and
// the Grafana dashboard's metric names.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../../agent/config/load.js';
import { createRegistry, type MetricsSource } from '../../agent/metrics/metrics.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const K8S = path.join(ROOT, 'deploy/kubernetes');
const read = (rel: string) => readFileSync(path.join(ROOT, rel), 'utf8');
const LOCAL = ['127.0.0.1', '::1'];

/** A config whose example blocks (the `#  ` lines under `key: []`) are uncommented. */
function withExamples(text: string): string {
  return text
    .split('\n')
    .map((line) => line.replace(/^(\s*)(filters|sessions|flowLogs): \[\]$/, '$1$2:').replace(/^(\s*)#( {2}.*)$/, '$1$2'))
    .join('\n');
}

describe('systemd unit and make install', () => {
  let destdir: string;

  beforeAll(async () => {
    destdir = await mkdtemp(path.join(os.tmpdir(), 'mf-install-'));
    await run(path.join(ROOT, 'scripts/install.sh'), [], { env: { ...process.env, DESTDIR: destdir } });
    // systemd-analyze --root needs the system's own units (sysinit.target, …) and every
    // command the unit runs to exist inside that root.
    await cp('/usr/lib/systemd/system', path.join(destdir, 'usr/lib/systemd/system'), { recursive: true, force: false, errorOnExist: false });
    await mkdir(path.join(destdir, 'bin'), { recursive: true });
    await cp('/bin/kill', path.join(destdir, 'bin/kill'));
  }, 120_000);

  afterAll(async () => {
    await rm(destdir, { recursive: true, force: true });
  });

  it('systemd-analyze verify accepts the installed unit without a warning', async () => {
    const { stdout, stderr } = await run('systemd-analyze', ['verify', `--root=${destdir}`, 'mirrorflow.service']);
    expect(stderr).toBe('');
    expect(stdout).toBe('');
  });

  it('systemd-analyze verify would catch a broken unit (the check is live)', async () => {
    const unit = path.join(destdir, 'usr/lib/systemd/system/mirrorflow-broken.service');
    await writeFile(unit, read('systemd/mirrorflow.service').replace('ProtectHome=yes', 'ProtectHome=yess'));
    const result = await run('systemd-analyze', ['verify', `--root=${destdir}`, 'mirrorflow-broken.service']).catch((e) => e);
    await rm(unit);
    expect(result.stderr).toMatch(/ProtectHome|protect home/);
  });

  it('runs with least privilege: exposure "OK", only the data-plane capabilities', async () => {
    const args = ['security', '--offline=true', `--root=${destdir}`, 'mirrorflow.service'];
    // --threshold fails the command when the overall exposure (0..100) is above it.
    await run('systemd-analyze', [...args, '--threshold=40']);
    const { stdout } = await run('systemd-analyze', [...args, '--json=short']);
    const checks = new Map((JSON.parse(stdout) as { json_field: string; set: boolean | null }[]).map((c) => [c.json_field, c.set]));
    for (const hardened of [
      'NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices', 'ProtectKernelTunables',
      'ProtectKernelModules', 'ProtectControlGroups', 'RestrictAddressFamilies_OTHER', 'RestrictNamespaces_net',
      'RestrictSUIDSGID', 'LockPersonality', 'AmbientCapabilities', 'CapabilityBoundingSet_CAP_SYS_ADMIN',
      'CapabilityBoundingSet_CAP_DAC_FOWNER_IPC_OWNER', 'CapabilityBoundingSet_CAP_SYS_PTRACE', 'CapabilityBoundingSet_CAP_SET_UID_GID_PCAP',
      'CapabilityBoundingSet_CAP_SYS_MODULE', 'CapabilityBoundingSet_CAP_SYS_RAWIO',
    ]) {
      expect([hardened, checks.get(hardened)]).toEqual([hardened, true]);
    }
    // What the data planes need stays: AF_PACKET capture and eBPF.
    expect(checks.get('RestrictAddressFamilies_AF_PACKET')).toBe(false);
    expect(checks.get('CapabilityBoundingSet_CAP_BPF')).toBe(false);
    const unit = read('systemd/mirrorflow.service');
    expect(unit).toMatch(/^CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN CAP_BPF CAP_PERFMON$/m);
    expect(unit).toMatch(/^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    // Runtime edits are written back to the config: /etc/mirrorflow must stay writable.
    expect(unit).toMatch(/^ReadWritePaths=\/etc\/mirrorflow$/m);
  });

  it('installs a runnable agent with production modules only, and a private config', async () => {
    const lib = path.join(destdir, 'usr/lib/mirrorflow');
    const modules = await readdir(path.join(lib, 'node_modules'));
    expect(modules).toEqual(expect.arrayContaining(['koffi', 'zod', 'yaml', 'pino', 'prom-client', 'commander']));
    for (const dev of ['vitest', 'typescript', 'kubernetes-models', '@types']) expect(modules).not.toContain(dev);
    const wrapper = await readFile(path.join(destdir, 'usr/bin/mirrorflow'), 'utf8');
    expect(wrapper).toContain(`exec ${process.execPath} /usr/lib/mirrorflow/dist/agent/cli.js "$@"`);

    const config = path.join(destdir, 'etc/mirrorflow/mirrorflow.yaml');
    expect((await stat(config)).mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(config))).mode & 0o777).toBe(0o700);
    // The installed tree alone (no dev modules) validates the installed config.
    const { stdout } = await run(process.execPath, [path.join(lib, 'dist/agent/cli.js'), 'validate', '--config', config]);
    expect(stdout).toContain('valid');
  });

  it('keeps an edited config on reinstall; uninstall keeps it, --purge removes it', async () => {
    const env = { ...process.env, DESTDIR: destdir };
    const config = path.join(destdir, 'etc/mirrorflow/mirrorflow.yaml');
    await writeFile(config, 'agent: { vmId: edited }\n');
    await run(path.join(ROOT, 'scripts/install.sh'), [], { env });
    expect(await readFile(config, 'utf8')).toBe('agent: { vmId: edited }\n');

    await run(path.join(ROOT, 'scripts/install.sh'), ['uninstall'], { env });
    for (const gone of ['usr/lib/mirrorflow', 'usr/bin/mirrorflow', 'usr/lib/systemd/system/mirrorflow.service']) {
      expect(existsSync(path.join(destdir, gone))).toBe(false);
    }
    expect(await readFile(config, 'utf8')).toBe('agent: { vmId: edited }\n');
    await run(path.join(ROOT, 'scripts/install.sh'), ['uninstall', '--purge'], { env });
    expect(existsSync(path.dirname(config))).toBe(false);
    // Put it back for the other tests of this file, whatever their order.
    await run(path.join(ROOT, 'scripts/install.sh'), [], { env });
  }, 120_000);
});

describe('default configs', () => {
  it('the host default validates as shipped and with its examples uncommented', () => {
    const text = read('systemd/mirrorflow.yaml');
    const shipped = parseConfig(text, { localAddresses: LOCAL });
    expect(shipped.sessions).toEqual([]);
    expect(shipped.agent.control.socket).toBe('/run/mirrorflow/control.sock');
    const examples = parseConfig(withExamples(text), { localAddresses: LOCAL });
    expect(examples.sessions.map((s) => s.id)).toEqual(['ts-1']);
    expect(examples.flowLogs.map((f) => f.id)).toEqual(['fl-1']);
  });
});

describe('container image', () => {
  it('the build context holds everything the Dockerfile and install.sh read', () => {
    const dockerfile = read('Dockerfile');
    expect(dockerfile).toMatch(/^FROM node:20-bookworm AS build$/m);
    expect(dockerfile).toMatch(/^FROM node:20-bookworm-slim$/m);
    // The build stage compiles raw-socket and the eBPF objects; the runtime needs libpcap for the capture filters.
    expect(dockerfile).toMatch(/apt-get install[^\n]*\\\n[^\n]*clang llvm libbpf-dev/);
    expect(dockerfile).toMatch(/libpcap0\.8 libbpf1/);
    // .dockerignore: ignore everything ("*"), then let named top-level entries through.
    const allowed = read('.dockerignore')
      .split('\n')
      .filter((l) => l.startsWith('!'))
      .map((l) => l.slice(1));
    expect(read('.dockerignore').split('\n')).toContain('*');
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'agent', 'scripts', 'systemd', 'docs']) {
      expect(allowed).toContain(needed);
      expect(existsSync(path.join(ROOT, needed))).toBe(true);
    }
    const installReads = [...read('scripts/install.sh').matchAll(/(?<![\w/$])((?:systemd|docs)\/[\w.-]+)/g)].map((m) => m[1]!);
    expect(installReads.length).toBeGreaterThan(0);
    for (const file of installReads) {
      expect(allowed).toContain(file.split('/')[0]);
      expect(existsSync(path.join(ROOT, file))).toBe(true);
    }
  });
});

// ---- Kubernetes --------------------------------------------------------------------------

type Manifest = Record<string, any>;

/** kind → the kubernetes-models module and interface that describe it. */
const MODELS: Record<string, { module: string; type: string }> = {
  'v1/Namespace': { module: 'kubernetes-models/v1/Namespace', type: 'INamespace' },
  'v1/ServiceAccount': { module: 'kubernetes-models/v1/ServiceAccount', type: 'IServiceAccount' },
  'v1/ConfigMap': { module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'apps/v1/DaemonSet': { module: 'kubernetes-models/apps/v1/DaemonSet', type: 'IDaemonSet' },
};

function loadManifests(): { file: string; doc: Manifest }[] {
  const files = readdirSync(K8S).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  return files.flatMap((file) =>
    parseAllDocuments(readFileSync(path.join(K8S, file), 'utf8')).map((d) => {
      expect([file, d.errors]).toEqual([file, []]);
      return { file, doc: d.toJS() as Manifest };
    }),
  );
}

describe('Kubernetes manifests', () => {
  const manifests = loadManifests();
  const byKind = (kind: string) => manifests.filter((m) => m.doc.kind === kind).map((m) => m.doc);
  const daemonset = () => byKind('DaemonSet')[0]!;
  const agent = () => daemonset().spec.template.spec.containers.find((c: Manifest) => c.name === 'agent');

  it('every manifest is listed in the kustomization, and every listed file exists', () => {
    const kustomization = parseAllDocuments(readFileSync(path.join(K8S, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Manifest;
    expect(kustomization.kind).toBe('Kustomization');
    expect([...kustomization.resources].sort()).toEqual([...new Set(manifests.map((m) => m.file))].sort());
    expect(manifests.map((m) => `${m.doc.apiVersion}/${m.doc.kind}`).sort()).toEqual(Object.keys(MODELS).sort());
  });

  it('every manifest passes the Kubernetes schema (types, formats, required fields)', async () => {
    for (const { file, doc } of manifests) {
      const model = MODELS[`${doc.apiVersion}/${doc.kind}`];
      expect(model, `${file}: ${doc.apiVersion} ${doc.kind}`).toBeDefined();
      const mod = (await import(model!.module)) as Record<string, new (data: unknown) => { validate(): void }>;
      const Model = mod[doc.kind as string]!;
      expect(() => new Model(doc).validate(), file).not.toThrow();
    }
    // The validator is live: a wrong type is refused.
    const { DaemonSet } = await import('kubernetes-models/apps/v1/DaemonSet');
    const broken = structuredClone(daemonset());
    broken.spec.template.spec.containers[0].ports[0].containerPort = '9477';
    expect(() => new DaemonSet(broken).validate()).toThrow(/containerPort must be integer/);
  });

  it('no manifest has a key the Kubernetes API does not know (strict check with tsc)', async () => {
    const dir = await mkdtemp(path.join(ROOT, 'node_modules/.mf-k8s-check-'));
    try {
      const check = (docs: { file: string; doc: Manifest }[]) =>
        docs
          .map(({ doc }, i) => {
            const model = MODELS[`${doc.apiVersion}/${doc.kind}`]!;
            return `import type { ${model.type} as T${i} } from '${model.module}';\nexport const m${i}: T${i} = ${JSON.stringify(doc, null, 1)};\n`;
          })
          .join('');
      await writeFile(path.join(dir, 'tsconfig.json'), JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, module: 'NodeNext', moduleResolution: 'NodeNext', types: [], skipLibCheck: true },
        files: ['manifests.ts', 'typo.ts'],
      }));
      await writeFile(path.join(dir, 'manifests.ts'), check(manifests));
      // The same check on a copy with a misspelt key must fail: proves excess keys are caught.
      const typo = structuredClone(manifests.filter((m) => m.doc.kind === 'DaemonSet'));
      typo[0]!.doc.spec.template.spec.containers[0].livenesProbe = {};
      await writeFile(path.join(dir, 'typo.ts'), check(typo));
      const tsc = path.join(ROOT, 'node_modules/.bin/tsc');
      const result = await run(tsc, ['-p', dir]).then(() => ({ stdout: '' }), (e: { stdout: string }) => e);
      const errors = result.stdout.split('\n').filter(Boolean);
      expect(errors.filter((l) => !l.includes('typo.ts('))).toEqual([]);
      expect(errors.join('\n')).toMatch(/typo\.ts.*livenesProbe.*does not exist in type 'IContainer'/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('the init container writes a valid config with the node name as vmId', async () => {
    const init = daemonset().spec.template.spec.initContainers[0];
    expect(init.env).toEqual([{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }]);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mf-k8s-init-'));
    try {
      await mkdir(path.join(dir, 'template'));
      await mkdir(path.join(dir, 'config'));
      const template = byKind('ConfigMap')[0]!.data['mirrorflow.yaml'] as string;
      await writeFile(path.join(dir, 'template/mirrorflow.yaml'), template);
      // The container's script, pointed at the temp directories instead of the mounts.
      const mounts = Object.fromEntries(init.volumeMounts.map((m: Manifest) => [m.name, m.mountPath]));
      const script = (init.command as string[])
        .at(-1)!
        .replaceAll(mounts['config-template'], path.join(dir, 'template'))
        .replaceAll(mounts.config, path.join(dir, 'config'));
      await run('/bin/sh', ['-ec', script], { env: { ...process.env, NODE_NAME: 'node-a.example' } });
      const written = path.join(dir, 'config/mirrorflow.yaml');
      expect((await stat(written)).mode & 0o777).toBe(0o600);
      const config = parseConfig(await readFile(written, 'utf8'), { localAddresses: LOCAL });
      expect(config.agent.vmId).toBe('node-a.example');
      const examples = parseConfig(withExamples(await readFile(written, 'utf8')), { localAddresses: LOCAL });
      expect(examples.sessions).toHaveLength(1);

      // The agent reads the file the init container wrote, from the volume they share.
      const agentConfig = agent().volumeMounts.find((m: Manifest) => m.name === 'config');
      expect(agentConfig.mountPath).toBe(mounts.config);
      expect(agent().args).toEqual(['run', '--config', `${mounts.config}/mirrorflow.yaml`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the DaemonSet runs on the host network with the capabilities and mounts the agent needs', () => {
    const spec = daemonset().spec.template.spec;
    const config = parseConfig(
      (byKind('ConfigMap')[0]!.data['mirrorflow.yaml'] as string).replace('__NODE_NAME__', 'n'),
      { localAddresses: LOCAL },
    );
    expect(spec.hostNetwork).toBe(true);
    const sc = agent().securityContext;
    expect(sc.privileged ?? false).toBe(false);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.capabilities).toEqual({ drop: ['ALL'], add: ['NET_RAW', 'NET_ADMIN', 'BPF', 'PERFMON'] });
    expect(agent().env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(agent().resources.requests).toBeDefined();
    expect(agent().resources.limits).toBeDefined();

    const mountOf = (where: string) => agent().volumeMounts.find((m: Manifest) => m.mountPath === where);
    const hostPathOf = (name: string) => spec.volumes.find((v: Manifest) => v.name === name)?.hostPath?.path;
    // The eBPF plane pins nothing: no bpffs from the host.
    expect(mountOf('/sys/fs/bpf')).toBeUndefined();
    expect(hostPathOf(mountOf('/var/log/mirrorflow').name)).toBe('/var/log/mirrorflow');
    // The control socket's directory is writable in the read-only root filesystem.
    expect(mountOf(path.dirname(config.agent.control.socket))).toBeDefined();

    // Probes and the scrape annotation point at the port the config's metrics endpoint uses.
    const port = Number(config.agent.metrics.listen.split(':').at(-1));
    const metricsPort = agent().ports.find((p: Manifest) => p.name === 'metrics');
    expect(metricsPort.containerPort).toBe(port);
    expect(agent().livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(agent().readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    const annotations = daemonset().spec.template.metadata.annotations;
    expect(annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' });
    // Probes come from the kubelet on the node's address: loopback would fail them.
    expect(config.agent.metrics.listen.startsWith('127.')).toBe(false);
  });
});

// ---- Grafana -----------------------------------------------------------------------------

/** SPEC §5 metrics the flow and TCP stages export (names without the prefix). */
const SPEC_METRICS = [
  'capture_packets_total', 'capture_drops_total', 'mirror_packets_total', 'mirror_bytes_total',
  'mirror_truncated_packets_total', 'mirror_send_errors_total', 'tcp_retransmissions_total',
  'tcp_syn_retransmissions_total', 'tcp_zero_window_total', 'tcp_resets_total', 'tcp_rtt_seconds',
  'flows_active', 'flow_log_records_total', 'flow_table_evictions_total',
].map((n) => `mirrorflow_${n}`);
const HISTOGRAM_SUFFIX = /_(bucket|sum|count)$/;

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(read('deploy/grafana/mirrorflow-dashboard.json')) as { panels: Manifest[]; uid: string };
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t: Manifest) => t.expr as string));

  it('queries only metrics the agent exports or SPEC §5 promises', async () => {
    // Registered names, read without scraping (no source method is called).
    const { registry } = createRegistry({} as MetricsSource);
    const exported = new Set(registry.getMetricsAsArray().map((m) => m.name));
    const known = new Set([...exported, ...SPEC_METRICS]);
    const used = new Set(exprs.flatMap((e) => e.match(/\bmirrorflow_[a-z0-9_]+/g) ?? []));
    expect(used.size).toBeGreaterThan(10);
    const unknown = [...used].filter((n) => !known.has(n) && !known.has(n.replace(HISTOGRAM_SUFFIX, '')));
    expect(unknown).toEqual([]);
    // Every SPEC §5 metric has a panel.
    const missing = SPEC_METRICS.filter((n) => ![...used].some((u) => u.replace(HISTOGRAM_SUFFIX, '') === n));
    expect(missing).toEqual([]);
  });

  it('has unique panel ids and a query in every panel', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels.filter((p) => p.type !== 'row')) expect([p.title, p.targets?.length > 0]).toEqual([p.title, true]);
    expect(dashboard.uid).toBe('mirrorflow');
  });
});
