// `mirrorflow lab` as a user runs it (root): it must end with "lab: OK", which it prints
// only when the destination decoded what the rules select and the bulk transfer, with the
// veths' default offloads, arrived whole (copies covering every byte the receiver got).
import { describe, expect, it } from 'vitest';
import { run } from '../../agent/exec.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';

describe('mirrorflow lab (root)', () => {
  it('ends OK, with the bulk transfer arriving whole at the destination', async () => {
    await ensureBuilt();
    const { stdout } = await run(process.execPath, [AGENT_CLI, 'lab'], { cwd: REPO_ROOT, timeoutMs: 240_000 });
    expect(stdout).toMatch(/\nlab: OK\n/);
    const bulk = /receiver got (\d+) bytes; dst got (\d+) copies of its data segments, largest inner frame (\d+) B/.exec(stdout);
    expect(bulk).not.toBeNull();
    const [, received, copies, largest] = bulk!.map(Number);
    // One copy per wire segment (≤ 1448 payload bytes each), none larger than a wire frame.
    expect(copies).toBeGreaterThanOrEqual(Math.floor(received! / 1448));
    expect(largest).toBeLessThanOrEqual(1450);
    expect(stdout).toMatch(/cover all \d+ bytes the receiver got, without a hole/);
    expect(stdout).toMatch(/lab: namespaces and files removed/);
  }, 300_000);
});
