// The container image, checked without a docker daemon (none runs here):
// - the Dockerfile pins its base images and its runtime stage installs the Debian package of
//   every program the agent spawns and every shared library it loads (found from the
//   sources and the built native modules, owners looked up with dpkg on this Debian host,
//   the same release as the base image);
// - the build context lets through everything the build and install.sh read;
// - the runtime tree is built the way the Dockerfile builds it (scripts/install.sh with the
//   Dockerfile's own DESTDIR/NODE arguments) into a directory, and its ENTRYPOINT, the
//   wrapper's target and CMD's config file are there and work.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { pathMtu } from '../../agent/mirror/path-mtu.js';
import { REPO_ROOT } from '../e2e/helpers/build.js';

const run = promisify(execFile);
const read = (rel: string) => readFileSync(path.join(REPO_ROOT, rel), 'utf8');
/** Libraries the node:*-slim base image has because node itself needs them. */
const IN_BASE_IMAGE = new Set(['libc6', 'libstdc++6', 'libgcc-s1']);

interface Stage {
  from: string;
  /** Instruction lines with their `\` continuations joined. */
  lines: string[];
}

function stages(dockerfile: string): Stage[] {
  const joined = dockerfile.replace(/\\\n/g, ' ').split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#'));
  const out: Stage[] = [];
  for (const line of joined) {
    const from = /^FROM\s+(\S+)/.exec(line);
    if (from) out.push({ from: from[1]!, lines: [] });
    else out.at(-1)?.lines.push(line);
  }
  return out;
}

/** Packages an `apt-get install` line of the stage names. */
function aptPackages(stage: Stage): string[] {
  return stage.lines.flatMap((l) => [...l.matchAll(/apt-get install((?:\s+[-\w.+]+)+)/g)].flatMap((m) => m[1]!.trim().split(/\s+/)).filter((w) => !w.startsWith('-')));
}

/** The Debian package that owns a file of this host (usrmerge: tries the path with and without /usr). */
async function owner(file: string): Promise<string> {
  const real = realpathSync(file);
  const candidates = [real, real.replace(/^\/usr\//, '/'), real.startsWith('/usr/') ? real : `/usr${real}`];
  for (const c of candidates) {
    const r = await run('dpkg', ['-S', c]).then((x) => x.stdout, () => '');
    if (r !== '') return r.split(':')[0]!.trim();
  }
  throw new Error(`no Debian package owns ${file}`);
}

/** Programs the agent runs (execFile/run('name', …) in agent/, the lab and its helpers left out). */
function spawnedPrograms(): string[] {
  const names = new Set<string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'lab') walk(p);
      } else if (entry.name.endsWith('.ts')) {
        for (const m of readFileSync(p, 'utf8').matchAll(/\b(?:run|execFile|spawn)\('([\w-]+)'/g)) names.add(m[1]!);
      }
    }
  };
  walk(path.join(REPO_ROOT, 'agent'));
  return [...names].sort();
}

/** Shared libraries the agent loads: koffi.load() names and the NEEDED entries of the built native modules. */
async function loadedLibraries(): Promise<string[]> {
  const libs = new Set<string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.name.endsWith('.ts')) for (const m of readFileSync(p, 'utf8').matchAll(/koffi\.load\('([^']+)'\)/g)) libs.add(m[1]!);
    }
  };
  walk(path.join(REPO_ROOT, 'agent'));
  for (const mod of ['pcap/build/Release/pcap_binding.node', 'raw-socket/build/Release/raw.node', '@koromix/koffi-linux-x64/linux_x64/koffi.node']) {
    const { stdout } = await run('readelf', ['-d', path.join(REPO_ROOT, 'node_modules', mod)]);
    for (const m of stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)) libs.add(m[1]!);
  }
  return [...libs].sort();
}

/** Where the dynamic linker finds a library on this host. */
async function resolveLibrary(soname: string): Promise<string> {
  const { stdout } = await run('ldconfig', ['-p']);
  const line = stdout.split('\n').find((l) => l.trim().startsWith(`${soname} `) && l.includes('x86-64'));
  const found = line?.split('=> ')[1]?.trim();
  if (found === undefined) throw new Error(`${soname} is not installed on this host`);
  return found;
}

describe('container image', () => {
  const dockerfile = read('Dockerfile');
  const [build, runtime] = stages(dockerfile);

  it('pins both base images to one exact Node.js release', () => {
    expect(build!.from).toMatch(/^node:\d+\.\d+\.\d+-bookworm$/);
    expect(runtime!.from).toMatch(/^node:\d+\.\d+\.\d+-bookworm-slim(@sha256:[0-9a-f]{64})?$/);
    expect(runtime!.from.split('-')[0]).toBe(build!.from.split('-')[0]);
  });

  it('installs the package of every program the agent spawns and every library it loads', async () => {
    const installed = new Set(aptPackages(runtime!));
    const programs = spawnedPrograms();
    expect(programs).toEqual(expect.arrayContaining(['ip', 'tc']));
    for (const program of programs) {
      const { stdout } = await run('sh', ['-c', `command -v ${program}`]);
      const pkg = await owner(stdout.trim());
      expect([program, installed.has(pkg)], `${program} comes from ${pkg}`).toEqual([program, true]);
    }
    const libraries = await loadedLibraries();
    expect(libraries).toEqual(expect.arrayContaining(['libbpf.so.1', 'libpcap.so.0.8', 'libc.so.6']));
    for (const lib of libraries) {
      const pkg = await owner(await resolveLibrary(lib));
      expect([lib, installed.has(pkg) || IN_BASE_IMAGE.has(pkg)], `${lib} comes from ${pkg}`).toEqual([lib, true]);
    }
  });

  it('without iproute2 the path MTU falls back and says so, instead of blaming the route', async () => {
    const saved = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      expect(await pathMtu('192.0.2.1')).toEqual({ mtu: 1500, reason: 'default: the ip command (iproute2) is not installed' });
    } finally {
      process.env.PATH = saved;
    }
  });

  it('the build context holds everything the Dockerfile and install.sh read', () => {
    // .dockerignore: ignore everything ("*"), then let named top-level entries through.
    const allowed = read('.dockerignore').split('\n').filter((l) => l.startsWith('!')).map((l) => l.slice(1));
    expect(read('.dockerignore').split('\n')).toContain('*');
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'Makefile', 'agent', 'bpf', 'scripts', 'systemd', 'docs']) {
      expect(allowed).toContain(needed);
    }
    const installReads = [...read('scripts/install.sh').matchAll(/(?<![\w/$.])((?:systemd|docs|scripts)\/[\w.*-]*[\w*]|README\.md)/g)].map((m) => m[1]!);
    expect(installReads).toEqual(expect.arrayContaining(['README.md', 'docs/mirrorflow.1', 'scripts/mirrorflow.bash-completion']));
    for (const file of installReads) {
      expect([file, allowed.includes(file.split('/')[0]!)]).toEqual([file, true]);
      if (!file.includes('*')) expect(existsSync(path.join(REPO_ROOT, file)), file).toBe(true);
    }
  });

  describe('the runtime tree, built as the Dockerfile builds it', () => {
    let root: string;
    const install = /(?:^|&&\s*)((?:\w+=\S+\s+)+)scripts\/install\.sh/.exec(build!.lines.join('\n'));

    beforeAll(async () => {
      expect(install, 'the build stage runs scripts/install.sh').not.toBeNull();
      root = await mkdtemp(path.join(os.tmpdir(), 'mf-image-'));
      // The Dockerfile's own variables, with DESTDIR redirected here.
      const vars = Object.fromEntries(install![1]!.trim().split(/\s+/).map((kv) => kv.split('=') as [string, string]));
      expect(Object.keys(vars).sort()).toEqual(['DESTDIR', 'NODE']);
      await run(path.join(REPO_ROOT, 'scripts/install.sh'), [], { env: { ...process.env, ...vars, DESTDIR: root } });
    }, 120_000);
    afterAll(() => rm(root, { recursive: true, force: true }));

    const instruction = (name: string): string[] => {
      const line = runtime!.lines.find((l) => l.startsWith(`${name} `));
      return JSON.parse(line!.slice(name.length + 1)) as string[];
    };

    it('has the ENTRYPOINT, the node and agent it execs, and the config CMD names', async () => {
      const [entry] = instruction('ENTRYPOINT');
      const wrapper = path.join(root, entry!);
      expect(statSync(wrapper).mode & 0o111).not.toBe(0);
      const exec = /^exec (\S+) (\S+) "\$@"$/m.exec(readFileSync(wrapper, 'utf8'));
      expect(exec).not.toBeNull();
      // The node binary is the base image's (official node images install it there).
      expect(exec![1]).toBe('/usr/local/bin/node');
      expect(existsSync(path.join(root, exec![2]!))).toBe(true);
      expect(readdirSync(path.join(root, path.dirname(exec![2]!), '../bpf')).some((f) => f.endsWith('.bpf.o'))).toBe(true);

      const cmd = instruction('CMD');
      expect(cmd.slice(0, 2)).toEqual(['run', '--config']);
      const config = path.join(root, cmd[2]!);
      expect(existsSync(config)).toBe(true);
      // The tree alone (runtime modules only) starts: it validates the config the image runs with.
      const cli = path.join(root, exec![2]!);
      const validated = await run(process.execPath, [cli, 'validate', '--config', config]);
      expect(validated.stdout).toBe(`${config}: valid\n`);
      const version = await run(process.execPath, [cli, '--version']);
      expect(version.stdout).toMatch(/^\d+\.\d+\.\d+/);
    });
  });
});
