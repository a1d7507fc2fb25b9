// What an operator installs: the systemd unit and `make install` layout, the default
// configs (the container image: container.test.ts), the Kubernetes manifests (checked against the
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
    // verify runs `man` for the unit's Documentation=man:mirrorflow(1): the installed page must be found.
    const env = { ...process.env, MANPATH: path.join(destdir, 'usr/share/man') };
    const { stdout, stderr } = await run('systemd-analyze', ['verify', `--root=${destdir}`, 'mirrorflow.service'], { env });
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

  it('installs the man page, bash completion and every document, and the config points at docs that exist', async () => {
    const man = path.join(destdir, 'usr/share/man/man1/mirrorflow.1');
    // groff -ww warns about anything malformed; -z renders without output.
    const groff = await run('groff', ['-man', '-ww', '-z', man]);
    expect(groff.stderr).toBe('');
    expect(existsSync(path.join(destdir, 'usr/share/bash-completion/completions/mirrorflow'))).toBe(true);
    for (const doc of readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md'))) {
      expect(existsSync(path.join(destdir, 'usr/share/doc/mirrorflow/docs', doc)), doc).toBe(true);
    }
    // Every /usr/share/doc path the installed config, unit and man page name is there.
    const texts = ['etc/mirrorflow/mirrorflow.yaml', 'usr/lib/systemd/system/mirrorflow.service', 'usr/share/man/man1/mirrorflow.1']
      .map((f) => readFileSync(path.join(destdir, f), 'utf8'));
    const pointers = texts.flatMap((t) => t.match(/\/usr\/share\/doc\/mirrorflow\/[\w./-]+\.md/g) ?? []);
    expect(pointers).toContain('/usr/share/doc/mirrorflow/docs/config.md');
    for (const p of pointers) expect(existsSync(path.join(destdir, p)), p).toBe(true);
  });

  it('the man page and the bash completion name every command and option --help lists', async () => {
    const cli = (args: string[]) => run(process.execPath, [path.join(destdir, 'usr/lib/mirrorflow/dist/agent/cli.js'), ...args]).then((r) => r.stdout);
    const commandsOf = (help: string) =>
      [...help.matchAll(/^ {2}([a-z][a-z-]*)(?: \[options\]| <|\s)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    const optionsOf = (help: string) => [...help.matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)].map((m) => m[1]!).filter((o) => o !== '--help');
    const man = readFileSync(path.join(ROOT, 'docs/mirrorflow.1'), 'utf8').replaceAll('\\-', '-');
    const completion = readFileSync(path.join(ROOT, 'scripts/mirrorflow.bash-completion'), 'utf8');
    // Every command, and for a command group (session, flows) each of its subcommands.
    const leaves: string[][] = [];
    for (const command of commandsOf(await cli(['--help']))) {
      const help = await cli([command, '--help']);
      const sub = help.includes('\nCommands:') ? commandsOf(help.slice(help.indexOf('\nCommands:'))) : [];
      if (sub.length === 0) leaves.push([command]);
      else leaves.push(...sub.map((c) => [command, c]));
    }
    const session = leaves.filter((l) => l[0] === 'session').map((l) => l[1]!);
    expect(session).toContain('remove-source');
    expect(leaves.map((l) => l.join(' '))).toEqual(expect.arrayContaining(['run', 'replay', 'session list', 'flows query']));
    for (const argv of leaves) {
      const name = argv.at(-1)!;
      expect(man, `man page: ${argv.join(' ')}`).toMatch(new RegExp(`^\\.SS .*\\b${name}\\b`, 'm'));
      expect(completion, `completion: ${argv.join(' ')}`).toContain(name);
      for (const option of optionsOf(await cli([...argv, '--help']))) {
        expect(man, `man page: ${argv.join(' ')} ${option}`).toContain(option);
        expect(completion, `completion: ${argv.join(' ')} ${option}`).toContain(option);
      }
    }
    // The completion really completes: bash offers the session subcommands.
    const { stdout } = await run('bash', ['-c', `source ${path.join(ROOT, 'scripts/mirrorflow.bash-completion')}; COMP_WORDS=(mirrorflow session ''); COMP_CWORD=2; _mirrorflow; echo "\${COMPREPLY[*]}"`]);
    expect(stdout.trim().split(' ')).toEqual(expect.arrayContaining(session));
  }, 60_000);

  it('keeps an edited config on reinstall; uninstall keeps it, --purge removes it', async () => {
    const env = { ...process.env, DESTDIR: destdir };
    const config = path.join(destdir, 'etc/mirrorflow/mirrorflow.yaml');
    await writeFile(config, 'agent: { vmId: edited }\n');
    await run(path.join(ROOT, 'scripts/install.sh'), [], { env });
    expect(await readFile(config, 'utf8')).toBe('agent: { vmId: edited }\n');

    await run(path.join(ROOT, 'scripts/install.sh'), ['uninstall'], { env });
    for (const gone of ['usr/lib/mirrorflow', 'usr/bin/mirrorflow', 'usr/lib/systemd/system/mirrorflow.service', 'usr/share/man/man1/mirrorflow.1', 'usr/share/bash-completion/completions/mirrorflow', 'usr/share/doc/mirrorflow']) {
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

// ---- Kubernetes --------------------------------------------------------------------------

type Manifest = Record<string, any>;

/** kind → the kubernetes-models module and interface that describe it. */
const MODELS: Record<string, { module: string; type: string }> = {
  'v1/Namespace': { module: 'kubernetes-models/v1/Namespace', type: 'INamespace' },
  'v1/ServiceAccount': { module: 'kubernetes-models/v1/ServiceAccount', type: 'IServiceAccount' },
  'v1/Service': { module: 'kubernetes-models/v1/Service', type: 'IService' },
  'apps/v1/DaemonSet': { module: 'kubernetes-models/apps/v1/DaemonSet', type: 'IDaemonSet' },
  'rbac.authorization.k8s.io/v1/ClusterRole': { module: 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole', type: 'IClusterRole' },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { module: 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding', type: 'IClusterRoleBinding' },
  'monitoring.coreos.com/v1/ServiceMonitor': { module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', type: 'IServiceMonitor' },
};

/** The kustomizations: the base and the Prometheus-operator overlay, each with the resources it lists. */
const KUSTOMIZATIONS = ['.', 'prometheus-operator'];

function loadManifests(): { file: string; doc: Manifest }[] {
  const files = KUSTOMIZATIONS.flatMap((dir) =>
    readdirSync(path.join(K8S, dir)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').map((f) => path.join(dir, f)),
  ).sort();
  return files.flatMap((file) =>
    parseAllDocuments(readFileSync(path.join(K8S, file), 'utf8')).map((d) => {
      expect([file, d.errors]).toEqual([file, []]);
      return { file, doc: d.toJS() as Manifest };
    }),
  );
}

const kustomization = (dir: string) => parseAllDocuments(readFileSync(path.join(K8S, dir, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Manifest;
/** The agent's config as the configMapGenerator ships it. */
const agentConfigText = () => readFileSync(path.join(K8S, 'config/mirrorflow.yaml'), 'utf8');

describe('Kubernetes manifests', () => {
  const manifests = loadManifests();
  const byKind = (kind: string) => manifests.filter((m) => m.doc.kind === kind).map((m) => m.doc);
  const daemonset = () => byKind('DaemonSet')[0]!;
  const podSpec = () => daemonset().spec.template.spec;
  const container = (name: string) => podSpec().containers.find((c: Manifest) => c.name === name);
  const agent = () => container('agent');
  const proxy = () => container('metrics-proxy');
  const nodeConfig = () => parseConfig(agentConfigText().replace('__NODE_NAME__', 'n'), { localAddresses: LOCAL });

  it('every manifest is listed in a kustomization, and every listed file exists', () => {
    for (const dir of KUSTOMIZATIONS) {
      const k = kustomization(dir);
      expect(k.kind).toBe('Kustomization');
      const files = k.resources.filter((r: string) => r.endsWith('.yaml')).map((r: string) => path.join(dir, r));
      expect(files.sort()).toEqual([...new Set(manifests.map((m) => m.file).filter((f) => path.dirname(f) === dir))].sort());
    }
    expect(kustomization('prometheus-operator').resources).toContain('..');
    expect([...new Set(manifests.map((m) => `${m.doc.apiVersion}/${m.doc.kind}`))].sort()).toEqual(Object.keys(MODELS).sort());
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
    broken.spec.template.spec.containers[1].ports[0].containerPort = '9478';
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
      // The same check on copies with a misspelt key must fail: proves excess keys are caught,
      // deep in a pod spec and in a CRD's spec.
      const typo = structuredClone(manifests.filter((m) => ['DaemonSet', 'ServiceMonitor'].includes(m.doc.kind)));
      typo.find((m) => m.doc.kind === 'DaemonSet')!.doc.spec.template.spec.containers[0].livenesProbe = {};
      typo.find((m) => m.doc.kind === 'ServiceMonitor')!.doc.spec.endpoints[0].tlsConfg = {};
      await writeFile(path.join(dir, 'typo.ts'), check(typo));
      const tsc = path.join(ROOT, 'node_modules/.bin/tsc');
      const result = await run(tsc, ['-p', dir]).then(() => ({ stdout: '' }), (e: { stdout: string }) => e);
      const errors = result.stdout.split('\n').filter(Boolean);
      expect(errors.filter((l) => !l.includes('typo.ts('))).toEqual([]);
      expect(errors.join('\n')).toMatch(/typo\.ts.*livenesProbe.*does not exist in type 'IContainer'/);
      expect(errors.join('\n')).toMatch(/typo\.ts.*tlsConfg.*does not exist/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('a config edit rolls the pods: the ConfigMap is generated with a content hash in its name', () => {
    const k = kustomization('.');
    const generated = k.configMapGenerator as Manifest[];
    const volume = podSpec().volumes.find((v: Manifest) => v.configMap !== undefined);
    const gen = generated.find((g) => g.name === volume.configMap.name);
    expect(gen, 'the DaemonSet mounts the generated ConfigMap').toBeDefined();
    // kustomize appends the hash unless told not to; the file it reads exists.
    expect(gen!.options?.disableNameSuffixHash ?? false).toBe(false);
    expect(k.generatorOptions?.disableNameSuffixHash ?? false).toBe(false);
    expect(gen!.files).toEqual(['mirrorflow.yaml=config/mirrorflow.yaml']);
    // No hand-written ConfigMap of that name would shadow the generated one.
    expect(byKind('ConfigMap')).toEqual([]);
  });

  it('the init container writes a valid config with the node name as vmId', async () => {
    const init = podSpec().initContainers[0];
    expect(init.env).toEqual([{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }]);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mf-k8s-init-'));
    try {
      await mkdir(path.join(dir, 'template'));
      await mkdir(path.join(dir, 'config'));
      await writeFile(path.join(dir, 'template/mirrorflow.yaml'), agentConfigText());
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
      // The example flow log ships off the node (IPFIX), not only to the node's disk.
      expect(examples.flowLogs[0]!.sink.type).toBe('ipfix');

      // The agent reads the file the init container wrote, from the volume they share.
      const agentConfig = agent().volumeMounts.find((m: Manifest) => m.name === 'config');
      expect(agentConfig.mountPath).toBe(mounts.config);
      expect(agent().args).toEqual(['run', '--config', `${mounts.config}/mirrorflow.yaml`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs on every Linux node as node-critical, through every taint, from a registry image pinned by tag', () => {
    const spec = podSpec();
    expect(spec.priorityClassName).toBe('system-node-critical');
    expect(spec.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    for (const effect of ['NoSchedule', 'NoExecute', 'PreferNoSchedule']) {
      const tolerated = spec.tolerations.some((t: Manifest) => t.operator === 'Exists' && t.key === undefined && (t.effect === undefined || t.effect === effect));
      expect([effect, tolerated]).toEqual([effect, true]);
    }
    for (const c of [...spec.initContainers, ...spec.containers]) {
      // registry host (has a dot), repository path, exact tag (never latest).
      expect(c.image, c.name).toMatch(/^[a-z0-9.-]+\.[a-z]{2,}(:\d+)?\/[a-z0-9/._-]+:v?\d+\.\d+\.\d+$/);
    }
    const images = kustomization('.').images as Manifest[];
    expect(images.map((i) => i.name)).toContain(agent().image.split(':')[0]);
  });

  it('the DaemonSet runs on the host network with the capabilities and mounts the agent needs', () => {
    const spec = podSpec();
    const config = nodeConfig();
    expect(spec.hostNetwork).toBe(true);
    const sc = agent().securityContext;
    expect(sc.privileged ?? false).toBe(false);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.capabilities).toEqual({ drop: ['ALL'], add: ['NET_RAW', 'NET_ADMIN', 'BPF', 'PERFMON'] });
    expect(agent().env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    for (const c of spec.containers) {
      expect(c.resources.requests, c.name).toBeDefined();
      expect(c.resources.limits, c.name).toBeDefined();
    }

    const mountOf = (where: string) => agent().volumeMounts.find((m: Manifest) => m.mountPath === where);
    const hostPathOf = (name: string) => spec.volumes.find((v: Manifest) => v.name === name)?.hostPath?.path;
    // The eBPF plane pins nothing: no bpffs from the host.
    expect(mountOf('/sys/fs/bpf')).toBeUndefined();
    expect(hostPathOf(mountOf('/var/log/mirrorflow').name)).toBe('/var/log/mirrorflow');
    // The control socket's directory is writable in the read-only root filesystem.
    expect(mountOf(path.dirname(config.agent.control.socket))).toBeDefined();
  });

  it('metrics leave the node only through the authenticating proxy: loopback agent, TLS port, RBAC, Service, ServiceMonitor', () => {
    const spec = podSpec();
    const config = nodeConfig();
    // The agent's endpoint is on the node's loopback (hostNetwork: 0.0.0.0 would be every node address).
    expect(config.agent.metrics.listen).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(agent().ports ?? []).toEqual([]);
    const arg = (name: string) => (proxy().args as string[]).find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
    expect(arg('upstream')).toBe(`http://${config.agent.metrics.listen}/`);
    const securePort = Number(arg('secure-listen-address')!.split(':').at(-1));
    const proxyPort = proxy().ports.find((p: Manifest) => p.name === 'https-metrics');
    expect(proxyPort.containerPort).toBe(securePort);
    // Probes go through the proxy, to the paths it passes without a token.
    const ignored = arg('ignore-paths')!.split(',');
    for (const [probe, where] of [[agent().livenessProbe, '/healthz'], [agent().readinessProbe, '/readyz']] as const) {
      expect(probe.httpGet).toEqual({ path: where, port: securePort, scheme: 'HTTPS' });
      expect(ignored).toContain(where);
    }
    expect(ignored).not.toContain('/metrics');

    // Only the proxy holds a service account token, and it may ask the API server about callers.
    expect(spec.automountServiceAccountToken).toBe(false);
    const tokenMount = proxy().volumeMounts.find((m: Manifest) => m.mountPath === '/var/run/secrets/kubernetes.io/serviceaccount');
    const tokenVolume = spec.volumes.find((v: Manifest) => v.name === tokenMount.name);
    expect(tokenVolume.projected.sources.some((s: Manifest) => s.serviceAccountToken !== undefined)).toBe(true);
    expect(agent().volumeMounts.some((m: Manifest) => m.name === tokenMount.name)).toBe(false);
    const role = byKind('ClusterRole').find((r) => r.rules.some((rule: Manifest) => rule.resources?.includes('tokenreviews')))!;
    expect(role.rules).toEqual(expect.arrayContaining([
      { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      { apiGroups: ['authorization.k8s.io'], resources: ['subjectaccessreviews'], verbs: ['create'] },
    ]));
    const binding = byKind('ClusterRoleBinding').find((b) => b.roleRef.name === role.metadata.name)!;
    expect(binding.subjects).toContainEqual({ kind: 'ServiceAccount', name: spec.serviceAccountName, namespace: daemonset().metadata.namespace });
    // What a scraper is granted: GET /metrics, nothing else.
    expect(byKind('ClusterRole').find((r) => r.metadata.name === 'mirrorflow-metrics-reader')!.rules).toEqual([{ nonResourceURLs: ['/metrics'], verbs: ['get'] }]);

    // The Service selects the pods and names the proxy's port; the ServiceMonitor scrapes it over TLS with a token.
    const service = byKind('Service')[0]!;
    expect(service.spec.selector).toEqual(daemonset().spec.template.metadata.labels);
    expect(service.spec.ports).toEqual([{ name: 'https-metrics', port: securePort, targetPort: 'https-metrics', protocol: 'TCP' }]);
    const monitor = byKind('ServiceMonitor')[0]!;
    expect(service.metadata.labels).toMatchObject(monitor.spec.selector.matchLabels);
    expect(monitor.spec.endpoints[0]).toMatchObject({ port: 'https-metrics', scheme: 'https', path: '/metrics' });
    expect(monitor.spec.endpoints[0].bearerTokenFile).toBeDefined();
  });
});

// ---- Grafana -----------------------------------------------------------------------------

/** SPEC §5 metrics the flow and TCP stages export (names without the prefix). */
const SPEC_METRICS = [
  'capture_packets_total', 'capture_drops_total', 'mirror_packets_total', 'mirror_bytes_total',
  'mirror_truncated_packets_total', 'mirror_send_errors_total', 'tcp_retransmissions_total',
  'tcp_syn_retransmissions_total', 'tcp_zero_window_total', 'tcp_resets_total', 'tcp_rtt_seconds',
  'flows_active', 'flow_log_records_total', 'flow_table_evictions_total', 'build_info',
].map((n) => `mirrorflow_${n}`);
const HISTOGRAM_SUFFIX = /_(bucket|sum|count)$/;
/** prom-client's process defaults: the dashboard shows a few, not every one. */
const PROCESS_DEFAULTS = /^mirrorflow_(process|nodejs)_/;

/** Starts the compiled agent (pcap plane, no sessions: it only serves metrics) and returns one /metrics scrape. */
async function scrapeLiveAgent(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mf-dash-'));
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const config = path.join(dir, 'agent.yaml');
  await writeFile(config, `agent: { dataPlane: pcap, metrics: { listen: "127.0.0.1:${port}" }, control: { socket: ${path.join(dir, 'control.sock')} } }\n`, { mode: 0o600 });
  const { spawnProcess } = await import('../../agent/exec.js');
  const agent = spawnProcess(process.execPath, [path.join(ROOT, 'dist/agent/cli.js'), 'run', '--config', config]);
  try {
    await agent.waitForLine(/"msg":"agent ready"/, 20_000, { stream: 'stdout' });
    return await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  } finally {
    await agent.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

describe('Grafana dashboard', () => {
  const text = read('deploy/grafana/mirrorflow-dashboard.json');
  const dashboard = JSON.parse(text) as { panels: Manifest[]; uid: string; templating: { list: Manifest[] } };
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t: Manifest) => t.expr as string));
  const used = new Set(exprs.flatMap((e) => e.match(/\bmirrorflow_[a-z0-9_]+/g) ?? []).map((n) => n.replace(HISTOGRAM_SUFFIX, '')));

  it('queries only metrics a live agent exports, and has a panel for each of its own metrics', async () => {
    const { ensureBuilt } = await import('../e2e/helpers/build.js');
    await ensureBuilt();
    const exported = new Set([...(await scrapeLiveAgent()).matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    expect(exported.size).toBeGreaterThan(20);
    expect([...used].filter((n) => !exported.has(n))).toEqual([]);
    // Every metric of the agent's own (not the process defaults) is on the dashboard, SPEC §5's too.
    const own = [...exported].filter((n) => n.startsWith('mirrorflow_') && !PROCESS_DEFAULTS.test(n));
    expect(own).toEqual(expect.arrayContaining(SPEC_METRICS));
    expect(own.filter((n) => !used.has(n))).toEqual([]);
  }, 60_000);

  it('passes Grafana\'s dashboard schema (@grafana/schema, unknown keys refused by tsc)', async () => {
    const dir = await mkdtemp(path.join(ROOT, 'node_modules/.mf-dash-check-'));
    try {
      const check = (json: unknown) => `import type { Dashboard } from '@grafana/schema';\nexport const d: Dashboard = ${JSON.stringify(json, null, 1)};\n`;
      await writeFile(path.join(dir, 'tsconfig.json'), JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, module: 'NodeNext', moduleResolution: 'NodeNext', types: [], skipLibCheck: true },
        files: ['dashboard.ts', 'inputs.ts', 'current.ts'],
      }));
      await writeFile(path.join(dir, 'dashboard.ts'), check(dashboard));
      // What an export from a Grafana UI leaves in: the check must refuse both.
      await writeFile(path.join(dir, 'inputs.ts'), check({ ...dashboard, __inputs: [{ name: 'DS_PROMETHEUS', type: 'datasource' }] }));
      const withCurrent = structuredClone(dashboard);
      withCurrent.templating.list[0]!.current = {};
      await writeFile(path.join(dir, 'current.ts'), check(withCurrent));
      const result = await run(path.join(ROOT, 'node_modules/.bin/tsc'), ['-p', dir]).then(() => ({ stdout: '' }), (e: { stdout: string }) => e);
      const errors = result.stdout.split('\n').filter(Boolean);
      expect(errors.filter((l) => l.startsWith(path.join(dir, 'dashboard.ts')) || l.includes('dashboard.ts('))).toEqual([]);
      expect(errors.join('\n')).toMatch(/inputs\.ts.*'"__inputs"' does not exist in type 'Dashboard'/);
      expect(errors.join('\n')).toMatch(/current\.ts.*missing the following properties from type 'VariableOption'/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('has unique panel ids, a query in every panel, and no overlapping panels', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels.filter((p) => p.type !== 'row')) expect([p.title, p.targets?.length > 0]).toEqual([p.title, true]);
    expect(dashboard.uid).toBe('mirrorflow');
    const cells = new Set<string>();
    for (const { gridPos: g, title } of dashboard.panels) {
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          expect(cells.has(`${x},${y}`), `${title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
  });
});
