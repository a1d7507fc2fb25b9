// TcpTracker: hand-made cases for each rule (keep-alive, spurious, out of order, reused
// ports, sequence wrap, resets, zero window, both directions in one entry, eviction), and
// seeded random connections written to a pcap whose per-frame verdicts must equal tshark's
// tcp.analysis.* on the same file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PcapWriter } from '../../agent/capture/pcap-file.js';
import { tsharkFields } from '../../agent/lab/lab.js';
import { buildPacket } from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { DECODE_OK, PacketView } from '../../agent/packet/view.js';
import {
  EV_OUT_OF_ORDER, EV_RESET, EV_RETRANS, EV_RTT_CLIENT, EV_RTT_SERVER, EV_SPURIOUS, EV_SYN_RETRANS, EV_ZERO_WINDOW, TcpTracker,
} from '../../agent/flow/tcp.js';

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const PSH = 0x08;
const ACK = 0x10;
/** TCP seq, ack and window offsets in a frame built by buildPacket (Ethernet + 20-byte IPv4). */
const SEQ_AT = 38;
const ACK_AT = 42;
const WIN_AT = 48;

interface Seg {
  from: 'c' | 's';
  flags: number;
  seq: number;
  ack: number;
  len?: number;
  win?: number;
  /** Seconds. */
  t: number;
  /** Client port, to tell connections apart. */
  port?: number;
}

function frame(s: Seg): Buffer {
  const c = s.from === 'c';
  const port = s.port ?? 40000;
  const f = buildPacket({
    src: c ? '10.0.0.1' : '10.0.0.2', dst: c ? '10.0.0.2' : '10.0.0.1', proto: 'tcp',
    srcPort: c ? port : 80, dstPort: c ? 80 : port, tcpFlags: s.flags, payload: s.len ?? 0,
  });
  f.writeUInt32BE(s.seq >>> 0, SEQ_AT);
  f.writeUInt32BE(s.ack >>> 0, ACK_AT);
  f.writeUInt16BE(s.win ?? 1000, WIN_AT);
  return f;
}

const view = new PacketView();
function run(t: TcpTracker, segs: readonly Seg[]): number[] {
  return segs.map((s) => {
    const f = frame(s);
    view.tsUs = Math.round(s.t * 1e6);
    expect(decode(view, f, f.length, f.length)).toBe(DECODE_OK);
    return t.observe(0, view);
  });
}

/** Handshake at t (client ISN c, server ISN s, 1 ms each way) and the client's first 100 bytes. */
function opening(c: number, s: number, t = 1, port = 40000): Seg[] {
  return [
    { from: 'c', flags: SYN, seq: c, ack: 0, t, port },
    { from: 's', flags: SYN | ACK, seq: s, ack: c + 1, t: t + 0.001, port },
    { from: 'c', flags: ACK, seq: c + 1, ack: s + 1, t: t + 0.002, port },
    { from: 'c', flags: PSH | ACK, seq: c + 1, ack: s + 1, len: 100, t: t + 0.003, port },
  ];
}

describe('TCP tracker rules', () => {
  it('keeps both directions of a connection in one entry and times the handshake from each side', () => {
    const t = new TcpTracker(16);
    const ev = run(t, opening(1000, 5000));
    expect(ev).toEqual([0, EV_RTT_SERVER, EV_RTT_CLIENT, 0]);
    expect(t.active).toBe(1);
    expect([t.lastRttServerUs, t.lastRttClientUs, t.lastHandshakeRttUs]).toEqual([1000, 1000, 2000]);
  });

  it('does not count keep-alives, counts a retransmission of ACKed data as spurious', () => {
    const t = new TcpTracker(16);
    const ev = run(t, [
      ...opening(1000, 5000),
      { from: 's', flags: ACK, seq: 5001, ack: 1101, t: 1.004 },
      { from: 'c', flags: ACK, seq: 1100, ack: 5001, len: 1, t: 3 },
      { from: 'c', flags: ACK, seq: 1100, ack: 5001, t: 4 },
      { from: 'c', flags: PSH | ACK, seq: 1001, ack: 5001, len: 100, t: 5 },
    ]);
    expect(ev.slice(5)).toEqual([0, 0, EV_SPURIOUS | EV_RETRANS]);
    expect(t.retransmissions).toBe(1);
  });

  it('calls a segment below nextseq out of order within the handshake RTT of the last advance, else a retransmission', () => {
    const t = new TcpTracker(16);
    const ev = run(t, [
      ...opening(1000, 5000),
      { from: 'c', flags: ACK, seq: 1201, ack: 5001, len: 100, t: 1.004 },
      // The hole, 1 ms after the advance: within the 2 ms handshake RTT.
      { from: 'c', flags: ACK, seq: 1101, ack: 5001, len: 100, t: 1.005 },
      // The same hole 1 s later: a retransmission.
      { from: 'c', flags: ACK, seq: 1101, ack: 5001, len: 100, t: 2.005 },
    ]);
    expect(ev.slice(4)).toEqual([0, EV_OUT_OF_ORDER, EV_RETRANS]);
    expect([t.outOfOrder, t.retransmissions]).toEqual([1, 1]);
  });

  it('starts a new connection on a SYN with another ISN (reused ports), not a SYN retransmission', () => {
    const t = new TcpTracker(16);
    const ev = run(t, [
      ...opening(1000, 5000),
      { from: 'c', flags: FIN | ACK, seq: 1101, ack: 5001, t: 1.004 },
      { from: 's', flags: FIN | ACK, seq: 5001, ack: 1102, t: 1.005 },
      { from: 'c', flags: ACK, seq: 1102, ack: 5002, t: 1.006 },
      // Same ports, a lower ISN: a new connection, with its own handshake RTT.
      ...opening(500, 9000, 5).slice(0, 3).map((s, i) => ({ ...s, t: 5 + i * 0.003 })),
      // Its SYN again, same ISN: a SYN retransmission.
      { from: 'c', flags: SYN, seq: 500, ack: 0, t: 6 },
    ]);
    expect(ev.slice(7)).toEqual([0, EV_RTT_SERVER, EV_RTT_CLIENT, EV_RETRANS | EV_SYN_RETRANS]);
    expect(t.lastHandshakeRttUs).toBe(6000);
    expect([t.retransmissions, t.synRetransmissions, t.active]).toEqual([1, 1, 1]);
  });

  it('compares sequence numbers modulo 2^32', () => {
    const t = new TcpTracker(16);
    const isn = 0xffff_ffc0;
    const ev = run(t, [
      ...opening(isn, 5000),
      // 100 bytes from isn + 1 wrap past zero; the next segment starts at 0x25.
      { from: 'c', flags: ACK, seq: (isn + 101) >>> 0, ack: 5001, len: 100, t: 1.004 },
      { from: 'c', flags: ACK, seq: (isn + 101) >>> 0, ack: 5001, len: 100, t: 2 },
    ]);
    expect(ev.slice(4)).toEqual([0, EV_RETRANS]);
  });

  it('flags resets, and zero windows only without SYN, FIN or RST', () => {
    const t = new TcpTracker(16);
    const ev = run(t, [
      ...opening(1000, 5000),
      { from: 's', flags: ACK, seq: 5001, ack: 1101, win: 0, t: 1.004 },
      { from: 's', flags: FIN | ACK, seq: 5001, ack: 1101, win: 0, t: 1.005 },
      { from: 's', flags: RST | ACK, seq: 5002, ack: 1101, win: 0, t: 1.006 },
    ]);
    expect(ev.slice(4)).toEqual([EV_ZERO_WINDOW, 0, EV_RESET]);
    expect([t.zeroWindows, t.resets]).toEqual([1, 1]);
  });

  it('evicts the least recently seen connections, keeping a busy one', () => {
    const t = new TcpTracker(32);
    run(t, opening(1000, 5000));
    for (let port = 1; port <= 2000; port++) {
      run(t, [
        { from: 'c', flags: SYN, seq: 7, ack: 0, t: 2 + port / 1000, port },
        { from: 'c', flags: ACK, seq: 1101, ack: 5001, t: 2 + port / 1000 },
      ]);
    }
    expect(t.active).toBeLessThanOrEqual(32);
    expect(t.evictions).toBe(2000 + 1 - 32);
    // The busy connection still knows its sequence space: this is a retransmission.
    expect(run(t, [{ from: 'c', flags: PSH | ACK, seq: 1001, ack: 5001, len: 100, t: 10 }])).toEqual([EV_RETRANS]);
  });
});

/** mulberry32: a small seeded PRNG, so a failing seed can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * Connections with lost, duplicated, reordered and spurious segments, duplicate ACKs,
 * keep-alives, zero windows, SYN retransmissions, resets and reused ports; time in µs.
 */
function randomTraffic(seed: number, connections: number): Seg[] {
  const rnd = prng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const out: Seg[] = [];
  let t = 1_000_000;
  const at = (gapUs: number) => (t += gapUs) / 1e6;
  for (let conn = 0; conn < connections; conn++) {
    const port = 40000 + (rnd() < 0.3 && conn > 0 ? conn - 1 : conn);
    const rtt = int(100, 3000);
    const cIsn = rnd() < 0.2 ? 0xffffffff - int(0, 3000) : int(0, 0xffffffff);
    const sIsn = int(0, 0xffffffff);
    const seg = (s: Omit<Seg, 't' | 'port'>, gapUs: number) => out.push({ ...s, seq: s.seq >>> 0, ack: s.ack >>> 0, port, t: at(gapUs) });
    for (let n = int(1, rnd() < 0.2 ? 3 : 1); n > 0; n--) seg({ from: 'c', flags: SYN, seq: cIsn, ack: 0 }, int(1, 1_000_000));
    for (let n = int(1, rnd() < 0.2 ? 2 : 1); n > 0; n--) seg({ from: 's', flags: SYN | ACK, seq: sIsn, ack: cIsn + 1 }, rtt);
    let cNext = cIsn + 1;
    let sNext = sIsn + 1;
    let acked = cNext;
    seg({ from: 'c', flags: ACK, seq: cNext, ack: sNext }, rtt);
    const sent: Array<[number, number]> = [];
    const win = () => (rnd() < 0.1 ? 0 : int(1, 3000));
    for (let step = int(10, 60); step > 0; step--) {
      const r = rnd();
      if (r < 0.35) {
        const len = int(1, 1460);
        sent.push([cNext, len]);
        seg({ from: 'c', flags: ACK | PSH, seq: cNext, ack: sNext, len }, int(1, 2 * rtt));
        cNext += len;
      } else if (r < 0.5) {
        acked = acked + Math.floor((cNext - acked) * rnd());
        seg({ from: 's', flags: ACK, seq: sNext, ack: acked, win: win() }, int(1, 2 * rtt));
      } else if (r < 0.58 && sent.length > 0) {
        // Duplicate ACKs, then the hole soon (fast) or late.
        const w = win();
        for (let n = int(1, 3); n > 0; n--) seg({ from: 's', flags: ACK, seq: sNext, ack: acked, win: w }, int(1, 500));
        const [s0, l0] = sent[int(0, sent.length - 1)]!;
        seg({ from: 'c', flags: ACK, seq: rnd() < 0.5 ? acked : s0, ack: sNext, len: l0 }, rnd() < 0.5 ? int(1, 30_000) : int(1, 4 * rtt));
      } else if (r < 0.7 && sent.length > 0) {
        const [s0, l0] = sent[int(0, sent.length - 1)]!;
        seg({ from: 'c', flags: ACK, seq: s0, ack: sNext, len: l0 }, rnd() < 0.5 ? int(1, rtt * 2) : int(100_000, 300_000));
      } else if (r < 0.78) {
        // Reordered: the later segment first.
        const a = int(1, 1000);
        const b = int(1, 1000);
        seg({ from: 'c', flags: ACK, seq: cNext + a, ack: sNext, len: b }, int(1, rtt));
        seg({ from: 'c', flags: ACK, seq: cNext, ack: sNext, len: a }, int(1, 2 * rtt));
        sent.push([cNext, a], [cNext + a, b]);
        cNext += a + b;
      } else if (r < 0.84) {
        seg({ from: 'c', flags: ACK, seq: cNext - 1, ack: sNext, len: int(0, 1) }, int(1, 2_000_000));
      } else if (r < 0.92) {
        const len = int(1, 500);
        seg({ from: 's', flags: ACK | PSH, seq: sNext, ack: acked, len, win: win() }, int(1, rtt));
        sNext += len;
        seg({ from: 'c', flags: ACK, seq: cNext, ack: sNext, win: win() }, int(1, rtt));
      } else if (r < 0.96) {
        seg({ from: 's', flags: ACK, seq: sNext, ack: acked, win: 0 }, int(1, rtt));
      } else {
        // Zero-window probe of one new byte; the receiver may or may not take it.
        seg({ from: 's', flags: ACK, seq: sNext, ack: acked, win: 0 }, int(1, rtt));
        seg({ from: 'c', flags: ACK, seq: cNext, ack: sNext, len: 1 }, int(1, 300_000));
        const took = rnd() < 0.5;
        seg({ from: 's', flags: ACK, seq: sNext, ack: took ? cNext + 1 : acked, win: rnd() < 0.7 ? 0 : int(1, 3000) }, int(1, rtt));
        if (took) {
          sent.push([cNext, 1]);
          cNext += 1;
          acked = cNext;
        }
      }
    }
    if (rnd() < 0.3) seg({ from: rnd() < 0.5 ? 'c' : 's', flags: RST | ACK, seq: cNext, ack: sNext, win: 0 }, int(1, rtt));
    else {
      seg({ from: 'c', flags: FIN | ACK, seq: cNext, ack: sNext }, int(1, rtt));
      seg({ from: 's', flags: FIN | ACK, seq: sNext, ack: cNext + 1 }, int(1, rtt));
      seg({ from: 'c', flags: ACK, seq: cNext + 1, ack: sNext + 1 }, int(1, rtt));
    }
  }
  return out;
}

describe('TCP tracker against tshark on random connections', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mirrorflow-tcp-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20])('flags the same frames as tshark (seed %i)', async (seed) => {
    const segs = randomTraffic(seed, 40);
    const file = join(dir, `random-${seed}.pcap`);
    const w = new PcapWriter(file, 65535);
    for (const s of segs) {
      const f = frame(s);
      w.write(f, f.length, f.length, Math.round(s.t * 1e6));
    }
    await w.close();

    // One row per frame: retransmission, spurious, out of order, zero window, reset; the
    // handshake RTT on the frame that completes it (tshark repeats it on later frames too).
    const theirs = await tsharkFields(file, '', [
      'tcp.analysis.retransmission', 'tcp.analysis.spurious_retransmission', 'tcp.analysis.out_of_order',
      'tcp.analysis.zero_window', 'tcp.flags.reset', 'tcp.flags.syn', 'tcp.stream', 'tcp.analysis.initial_rtt',
    ]);
    const t = new TcpTracker(1024);
    const seen = new Set<string>();
    const rows = segs.map((s, i) => {
      const e = run(t, [s])[0]!;
      const [retrans, spurious, ooo, zeroWin, reset, syn, stream = '', rtt = ''] = theirs[i]!;
      const firstRtt = rtt !== '' && !seen.has(stream);
      if (firstRtt) seen.add(stream);
      return {
        want: [retrans, spurious, ooo, zeroWin, reset, retrans === '1' && syn === '1', firstRtt ? Math.round(Number(rtt) * 1e6) : -1],
        got: [
          e & EV_RETRANS ? '1' : '', e & EV_SPURIOUS ? '1' : '', e & EV_OUT_OF_ORDER ? '1' : '', e & EV_ZERO_WINDOW ? '1' : '',
          e & EV_RESET ? '1' : '0', (e & EV_SYN_RETRANS) !== 0, e & EV_RTT_CLIENT ? t.lastHandshakeRttUs : -1,
        ],
      };
    });
    expect(theirs).toHaveLength(segs.length);
    expect(rows.filter((r) => r.got[0] === '1').length).toBeGreaterThan(10);
    expect(rows.map((r, i) => `${i + 1} ${JSON.stringify(r.got)}`)).toEqual(rows.map((r, i) => `${i + 1} ${JSON.stringify(r.want)}`));
  });
});
