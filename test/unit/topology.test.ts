// The lab topology on its own (root): names, reachability through the router, a vxlan
// device that decapsulates what arrives with its VNI, and a complete cleanup.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { run } from '../../agent/exec.js';
import { driveTraffic, startCapture, startTrafficServer, tsharkFields } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';

const VNI = 77;
const IFNAMSIZ_MAX = 15;

async function namespaces(): Promise<string> {
  return (await run('ip', ['netns', 'list'])).stdout;
}

describe('lab topology', () => {
  let a: Topology;
  let b: Topology;

  beforeAll(async () => {
    [a, b] = await Promise.all([createLabTopology({ vnis: [VNI] }), createLabTopology({ vnis: [VNI] })]);
  }, 30000);

  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
  }, 30000);

  it('gives two labs distinct, kernel-sized names', () => {
    expect(a.suffix).not.toBe(b.suffix);
    for (const t of [a, b]) {
      for (const name of [t.srcIf, t.peerSrcIf, t.peerDstIf, t.dstIf, ...t.vxlan.map((v) => v.name)]) {
        expect(name.length).toBeLessThanOrEqual(IFNAMSIZ_MAX);
        expect(name).toContain(t.suffix);
      }
    }
    expect(Object.values(a.ns)).not.toEqual(expect.arrayContaining(Object.values(b.ns)));
  });

  it('leaves src with exactly one interface besides lo', async () => {
    const links = JSON.parse((await a.exec('src', 'ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[];
    expect(links.map((l) => l.ifname).sort()).toEqual([a.srcIf, 'lo'].sort());
  });

  it('routes TCP, UDP and ICMP (v4 and v6) from src to dst through the peer', async () => {
    await startTrafficServer(a, 'dst', 8080, [4000]);
    const cap = await startCapture(a, 'src', a.srcIf, join(a.workDir, 'src.pcap'));
    await driveTraffic(a, 'src', {
      tcp: [{ host: a.v4.dst, port: 8080, bytes: 3000 }, { host: a.v6.dst, port: 8080, bytes: 3000 }],
      udp: [{ host: a.v4.dst, port: 4000, count: 2, size: 50 }],
      icmp: [{ host: a.v4.dst, count: 2 }, { host: a.v6.dst, count: 2 }],
    });
    await cap.stop();
    const syns = await tsharkFields(cap.file, 'tcp.flags.syn == 1 && tcp.flags.ack == 1', ['ip.src', 'ipv6.src']);
    expect(syns.map((r) => r.join('')).sort()).toEqual([a.v4.dst, a.v6.dst].sort());
    expect(await tsharkFields(cap.file, `udp.dstport == 4000 && ip.dst == ${a.v4.dst}`, ['frame.number'])).toHaveLength(2);
    expect(await tsharkFields(cap.file, 'icmp.type == 0 || icmpv6.type == 129', ['frame.number'])).toHaveLength(4);
  }, 30000);

  it('decapsulates VXLAN with its VNI on the dst vxlan device', async () => {
    const vx = a.vxlan[0]!;
    const cap = await startCapture(a, 'dst', vx.name, join(a.workDir, 'decap.pcap'));
    const inner = Buffer.alloc(60, 0x5a);
    Buffer.from('020000000001020000000002', 'hex').copy(inner, 0);
    inner.writeUInt16BE(0x88b5, 12); // local experimental ethertype
    const vxlanHdr = Buffer.from([0x08, 0, 0, 0, (VNI >> 16) & 0xff, (VNI >> 8) & 0xff, VNI & 0xff, 0]);
    const wrongVni = Buffer.from(vxlanHdr);
    wrongVni[6] = (VNI + 1) & 0xff;
    const send = `const s=require('node:dgram').createSocket('udp4');const [h,...p]=process.argv.slice(1);
      (async()=>{for(const x of p)await new Promise(r=>s.send(Buffer.from(x,'hex'),4789,h,r));s.close()})()`;
    await a.exec('src', process.execPath, ['-e', send, a.v4.dst,
      Buffer.concat([wrongVni, inner]).toString('hex'), Buffer.concat([vxlanHdr, inner]).toString('hex')]);
    await cap.waitFor(1, 5000);
    await cap.stop();
    const rows = await tsharkFields(cap.file, '', ['frame.len', 'eth.type']);
    expect(rows).toEqual([['60', '0x88b5']]);
  }, 30000);

  it('destroy() removes the namespaces and can be called again', async () => {
    const t = await createLabTopology();
    await t.destroy();
    await t.destroy();
    const list = await namespaces();
    for (const ns of Object.values(t.ns)) expect(list).not.toContain(ns);
  }, 30000);
});
