// The netlink link watcher against the kernel: veth pairs created, renamed, taken down and
// up and deleted in a namespace of the test's own; each change must be reported once, in
// well under a second, and a burst must lose nothing.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../agent/exec.js';
import { LinkWatcher, type LinkEvent } from '../../agent/capture/link-watcher.js';
import { inNetns } from './helpers/netns.js';

const ns = `mf-lw-${randomBytes(2).toString('hex')}`;
const ip = (...args: string[]) => run('ip', ['-n', ns, ...args]);
const batch = (lines: string[]) => run('ip', ['-n', ns, '-batch', '-'], { input: `${lines.join('\n')}\n` });

let watcher: LinkWatcher;
const seen: Array<LinkEvent & { at: number }> = [];
let notify: (() => void) | undefined;

/** Resolves when `done` holds for the events seen, or rejects after `ms` with what was seen. */
function until(done: (events: typeof seen) => boolean, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      notify = undefined;
      reject(new Error(`timed out after ${ms} ms; saw ${JSON.stringify(seen.map((e) => [e.kind, e.link.name]))}`));
    }, ms);
    const check = () => {
      if (!done(seen)) return;
      clearTimeout(timer);
      notify = undefined;
      resolve();
    };
    notify = check;
    check();
  });
}

beforeAll(async () => {
  await run('ip', ['netns', 'add', ns]);
  watcher = inNetns(ns, () =>
    LinkWatcher.open({
      onEvents: (events) => {
        const at = performance.now();
        for (const e of events) seen.push({ ...e, at });
        notify?.();
      },
      onWarning: (msg) => {
        throw new Error(`unexpected warning: ${msg}`);
      },
    }),
  );
});

afterAll(async () => {
  watcher?.close();
  await run('ip', ['netns', 'del', ns]).catch(() => undefined);
});

describe('LinkWatcher', () => {
  it('starts from the links present (a fresh namespace has lo)', () => {
    expect(watcher.names()).toEqual(['lo']);
  });

  it('reports a veth pair appearing, up, renamed, down and vanishing, each within 250 ms', async () => {
    seen.length = 0;
    const t0 = performance.now();
    await ip('link', 'add', 'lwa0', 'type', 'veth', 'peer', 'name', 'lwb0');
    await until((s) => s.filter((e) => e.kind === 'appeared').length === 2, 1000);
    expect(seen.map((e) => [e.kind, e.link.name]).sort()).toEqual([['appeared', 'lwa0'], ['appeared', 'lwb0']]);
    expect(Math.max(...seen.map((e) => e.at)) - t0).toBeLessThan(250);
    const index = seen.find((e) => e.link.name === 'lwa0')!.link.ifindex;
    expect(watcher.present().get(index)?.name).toBe('lwa0');

    seen.length = 0;
    const t1 = performance.now();
    await ip('link', 'set', 'lwa0', 'up');
    await ip('link', 'set', 'lwb0', 'up');
    await until((s) => s.filter((e) => e.kind === 'up').length === 2, 1000);
    expect(seen.at(-1)!.at - t1).toBeLessThan(250);

    seen.length = 0;
    await ip('link', 'set', 'lwb0', 'down');
    // lwb0 goes down, and lwa0 loses its carrier (its peer is down).
    await until((s) => s.filter((e) => e.kind === 'down').length === 2, 1000);
    expect(seen.map((e) => [e.kind, e.link.name]).sort()).toEqual([['down', 'lwa0'], ['down', 'lwb0']]);

    seen.length = 0;
    await ip('link', 'set', 'lwb0', 'name', 'lwc0');
    await until((s) => s.some((e) => e.kind === 'renamed'), 1000);
    expect(seen.filter((e) => e.kind === 'renamed')).toEqual([expect.objectContaining({ kind: 'renamed', from: 'lwb0', link: expect.objectContaining({ name: 'lwc0' }) })]);

    seen.length = 0;
    const t2 = performance.now();
    await ip('link', 'del', 'lwa0');
    await until((s) => s.filter((e) => e.kind === 'vanished').length === 2, 1000);
    expect(seen.map((e) => [e.kind, e.link.name]).sort()).toEqual([['vanished', 'lwa0'], ['vanished', 'lwc0']]);
    expect(seen.at(-1)!.at - t2).toBeLessThan(250);
    expect(watcher.names()).toEqual(['lo']);
  });

  it('a burst of 200 pairs created and 100 deleted loses no event and ends with what the kernel has', async () => {
    seen.length = 0;
    await batch(Array.from({ length: 200 }, (_, i) => `link add lwx${i} type veth peer name lwy${i}`));
    await until((s) => s.filter((e) => e.kind === 'appeared').length === 400, 5000);
    await batch(Array.from({ length: 100 }, (_, i) => `link del lwx${i}`));
    await until((s) => s.filter((e) => e.kind === 'vanished').length === 200, 5000);
    const { stdout } = await ip('-j', 'link', 'show');
    const kernel = (JSON.parse(stdout) as Array<{ ifname: string }>).map((l) => l.ifname).sort();
    expect(watcher.names().sort()).toEqual(kernel);
    expect(kernel).toHaveLength(1 + 200);
    // Each event once: no pair reported twice.
    const appeared = seen.filter((e) => e.kind === 'appeared').map((e) => e.link.name);
    expect(new Set(appeared).size).toBe(400);
  });
});
