// Interfaces coming and going must not disturb the others: stable slots (agent/rules/
// interface-slots.ts) and a flow stage that is retargeted, not rebuilt. Checked on the
// records: the open flows of an interface that stays are written once, at their window's
// end, whatever came or went meanwhile; a gone interface's flows are written under its name;
// a slot is given to a new interface only after the quarantine.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { compileRules } from '../../agent/rules/compile.js';
import { InterfaceSlots } from '../../agent/rules/interface-slots.js';
import { FlowLogs } from '../../agent/flow/flow-logs.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { decode } from '../../agent/packet/decode.js';
import { IPPROTO_UDP } from '../../agent/packet/offsets.js';
import { DECODE_OK, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import type { Logger } from '../../agent/log.js';
import { ethernet, ipv4, udp } from '../helpers/build-packet.js';

describe('InterfaceSlots', () => {
  it('keeps every interface at its slot while others come and go', () => {
    const slots = new InterfaceSlots(60);
    expect(slots.layout(['eth0', 'cali1', 'cali2'], 0).interfaces).toEqual(['eth0', 'cali1', 'cali2']);
    const gone = slots.layout(['eth0', 'cali2', 'cali3'], 10);
    expect(gone.interfaces).toEqual(['eth0', 'cali1', 'cali2', 'cali3']);
    expect([...gone.live]).toEqual([1, 0, 1, 1]);
  });

  it('gives a gone interface\'s slot to a new one only after the quarantine, oldest first', () => {
    const slots = new InterfaceSlots(60);
    slots.layout(['a', 'b', 'c'], 0);
    slots.layout(['c'], 5); // a and b gone at 5
    expect(slots.layout(['c', 'd'], 64).interfaces).toEqual(['a', 'b', 'c', 'd']);
    const reused = slots.layout(['c', 'd', 'e', 'f'], 65);
    expect(reused.interfaces).toEqual(['e', 'f', 'c', 'd']);
    expect([...reused.live]).toEqual([1, 1, 1, 1]);
  });

  it('an interface back within the quarantine gets its own slot again', () => {
    const slots = new InterfaceSlots(60);
    slots.layout(['a', 'b'], 0);
    slots.layout(['b'], 1);
    expect(slots.layout(['a', 'b'], 30).interfaces).toEqual(['a', 'b']);
  });

  it('stays bounded by the most interfaces covered at once under churn', () => {
    const slots = new InterfaceSlots(60);
    let length = 0;
    // 1,000 pods over 1,000 minutes, 10 alive at a time, one replaced per minute.
    for (let t = 0; t < 1000; t++) {
      const alive = Array.from({ length: 10 }, (_, k) => `pod${t + k}`);
      length = slots.layout(alive, t * 60).interfaces.length;
    }
    expect(length).toBeLessThanOrEqual(12);
  });
});

const dir = mkdtempSync(join(tmpdir(), 'mf-slots-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const LOG = join(dir, 'flows.jsonl');
const CONFIG = `
agent: { vmId: test, metrics: { listen: "" } }
flowLogs:
  - { id: fl-1, sources: ["*"], window: 60, sink: { type: file, path: ${JSON.stringify(LOG)} } }
`;
const quiet: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as unknown as Logger;
const T0 = 1_700_000_040; // a multiple of 60

function frame(src: string, port: number): Buffer {
  return ethernet({ etherType: 0x0800, payload: ipv4({ src, dst: '198.18.0.1', protocol: IPPROTO_UDP, payload: udp({ srcPort: port, dstPort: 53 }) }) });
}

describe('flow stage across interfaces coming and going', () => {
  it('retargets the stage: open flows of the others are written once at their window end, a gone one\'s under its name', async () => {
    const config = parseConfig(CONFIG, { localAddresses: [] });
    const slots = new InterfaceSlots(62);
    const flowLogs = new FlowLogs(quiet);
    const build = (present: string[], nowSec: number) => {
      const rules = compileRules(config, present, (covered) => slots.layout(covered, nowSec));
      const stage = flowLogs.prepare(config, rules.interfaces, rules.live)!;
      return { rules, stage };
    };
    const first = build(['lo', 'eth0', 'cali1'], T0);
    await flowLogs.commit(first.stage);
    const view = new PacketView();
    const see = (ifIndex: number, src: string, port: number, tsSec: number) => {
      const f = frame(src, port);
      expect(decode(view, f, f.length, f.length)).toBe(DECODE_OK);
      view.direction = DIR_OUT;
      view.tsUs = tsSec * 1e6;
      first.stage.observe(ifIndex, view, -1);
    };
    see(first.rules.interfaceIndex('eth0'), '198.18.0.2', 1000, T0 + 1);
    see(first.rules.interfaceIndex('cali1'), '198.18.0.3', 2000, T0 + 2);

    // cali1 goes, cali2 appears: the same stage, eth0 at the same index.
    const second = build(['lo', 'eth0', 'cali2'], T0 + 10);
    expect(second.stage).toBe(first.stage);
    // The old generation retires after the new one is built: cali1's last frame, still in
    // its capture, is drained into the stage then, and counts.
    see(first.rules.interfaceIndex('cali1'), '198.18.0.3', 2000, T0 + 9);
    await flowLogs.commit(second.stage);
    expect(second.rules.interfaceIndex('eth0')).toBe(first.rules.interfaceIndex('eth0'));
    expect(second.rules.interfaces).toEqual(['eth0', 'cali1', 'cali2']);
    see(second.rules.interfaceIndex('eth0'), '198.18.0.2', 1000, T0 + 20);
    see(second.rules.interfaceIndex('cali2'), '198.18.0.4', 3000, T0 + 21);

    flowLogs.tick(T0 + 61);
    // After the quarantine cali1's slot goes to the next new interface.
    const third = build(['lo', 'eth0', 'cali2', 'cali3'], T0 + 80);
    expect(third.stage).toBe(first.stage);
    expect(third.rules.interfaces).toEqual(['eth0', 'cali3', 'cali2']);
    await flowLogs.stop();

    const records = readFileSync(LOG, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as FlowRecord);
    const firstWindow = records.filter((r) => r.start === T0);
    // eth0's flow is one record of 2 packets: the changes between its packets did not cut it.
    expect(firstWindow.filter((r) => r['log-status'] === 'OK').map((r) => [r['eni-id'], r.srcport, r.packets]).sort())
      .toEqual([['cali1', 2000, 2], ['cali2', 3000, 1], ['eth0', 1000, 2]]);
    // No NODATA for the gone interface (nor for the live ones, which had traffic).
    expect(firstWindow.filter((r) => r['log-status'] === 'NODATA')).toEqual([]);
    // The window after: NODATA for the live interfaces only, the new one under its own name.
    expect(records.filter((r) => r.start === T0 + 60 && r['log-status'] === 'NODATA').map((r) => r['eni-id']).sort()).toEqual(['cali2', 'cali3', 'eth0']);
  });
});
