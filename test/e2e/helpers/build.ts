// The e2e tests run the compiled agent (`node dist/agent/cli.js run`), as a user would.
// Rebuild dist when any agent source is newer than it.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../../agent/exec.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const AGENT_CLI = join(REPO_ROOT, 'dist/agent/cli.js');

async function newestSource(dir: string): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, await newestSource(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, (await stat(path)).mtimeMs);
  }
  return newest;
}

/** Compiles the agent with tsc when dist/agent/cli.js is missing or older than agent/**.ts. */
export async function ensureBuilt(): Promise<void> {
  const built = await stat(AGENT_CLI).then((s) => s.mtimeMs, () => 0);
  if (built >= (await newestSource(join(REPO_ROOT, 'agent')))) return;
  await run('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: REPO_ROOT });
}
