// The interface watcher's view of an interface: an index and carrier-change count while it
// exists, MISSING when it does not, and an error — never MISSING — when the agent itself
// cannot look (EMFILE: descriptors exhausted), so that is not taken for an interface change.
import { beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { interfaceState, MISSING, sameLife } from '../../agent/capture/interface-state.js';
import { run } from '../../agent/exec.js';
import { REPO_ROOT, ensureBuilt } from '../e2e/helpers/build.js';

describe('interface state', () => {
  beforeAll(() => ensureBuilt());

  it('is index/carrier changes for an existing interface and MISSING for an absent one', async () => {
    const index = (await readFile('/sys/class/net/lo/ifindex', 'utf8')).trim();
    expect(await interfaceState('lo')).toMatch(new RegExp(`^${index}/\\d*$`));
    expect(await interfaceState('mf-none0')).toBe(MISSING);
  });

  it('tells a down/up (same index) from a new life of the interface (new index, gone, appeared)', () => {
    expect(sameLife('7/2', '7/4')).toBe(true);
    expect(sameLife('7/2', '7/2')).toBe(true);
    expect(sameLife('7/2', '9/0')).toBe(false);
    expect(sameLife('7/2', MISSING)).toBe(false);
    expect(sameLife(MISSING, '7/0')).toBe(false);
  });

  it('throws EMFILE instead of answering MISSING when the process is out of descriptors', async () => {
    const module = pathToFileURL(join(REPO_ROOT, 'dist/agent/capture/interface-state.js')).href;
    const script = `
import { openSync } from 'node:fs';
const { interfaceState } = await import(${JSON.stringify(module)});
const held = [];
try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}
try { console.log('state ' + await interfaceState('lo')); } catch (err) { console.log('error ' + err.code); }
process.exit(0);`;
    const { stdout } = await run('prlimit', ['--nofile=64:64', process.execPath, '--input-type=module', '-e', script]);
    expect(stdout.trim()).toBe('error EMFILE');
  });
});
