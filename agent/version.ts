// What this build is: the package version, and the git commit when `make build` could
// read one (dist/build-info.json; absent in a tree built without git, e.g. a container
// build whose context has no .git). Shown by `--version`, the start log line and
// mirrorflow_build_info.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BuildInfo {
  version: string;
  /** Short commit, with "-dirty" when the tree had uncommitted changes; "unknown" without git. */
  commit: string;
}

/** The tree's root: the nearest directory above this module holding mirrorflow's package.json (dist/agent/ or agent/). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate) && (JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string }).name === 'mirrorflow') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no mirrorflow package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

function readBuildInfo(): BuildInfo {
  const root = packageRoot();
  const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  let commit = 'unknown';
  try {
    commit = (JSON.parse(readFileSync(join(root, 'dist', 'build-info.json'), 'utf8')) as { commit?: string }).commit ?? commit;
  } catch {
    // Built without `make build` (plain tsc) or without git: the version alone says what this is.
  }
  return { version, commit };
}

export const BUILD_INFO: Readonly<BuildInfo> = Object.freeze(readBuildInfo());

/** `mirrorflow --version`: "0.1.0 (commit 5007607)". */
export function versionText(info: BuildInfo = BUILD_INFO): string {
  return info.commit === 'unknown' ? info.version : `${info.version} (commit ${info.commit})`;
}
