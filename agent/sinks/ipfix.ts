// IPFIX exporter over UDP (RFC 7011) for one flow log: each message packs as many data
// records as fit in maxMessageBytes; templates ride along with the first message, again
// once the refresh interval has passed, and first thing after any error (the collector
// may have restarted and forgotten them).
//
// UDP says nothing about delivery, except that a collector that is down answers with ICMP
// port unreachable, which a connected socket reports as ECONNREFUSED after the send. So a
// sent message's records stay "in flight" until errorWaitMs has passed without an error;
// an error puts every in-flight record back at the front of the queue (each record at
// most MAX_SEND_ATTEMPTS times, then it is counted as dropped and logged), and the sink
// probes the collector with template-only messages until one draws no error, so no data
// record is sent into a collector known to be down.
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Sink } from '../config/types.js';
import type { FlowRecord } from '../flow/record.js';
import { interfaceNameProblem, parseHostPort } from '../config/schema.js';
import { parseIp } from '../packet/address.js';
import type { SinkOptions } from './sink.js';
import { BackOff, QueuedSink } from './queue.js';
import {
  dataRecordLength,
  IPV6_TEMPLATE,
  MESSAGE_HEADER_LEN,
  SET_HEADER_LEN,
  templateOf,
  templateSet,
  writeDataRecord,
  writeMessageHeader,
  writeSetHeader,
  writeSetLength,
  type ExportRecord,
  type Template,
} from './ipfix-template.js';
import { ErrorCode, MirrorflowError } from '../errors.js';

/** Fits a 1500-byte MTU under IPv6 + UDP headers with room for tunnels. */
const DEFAULT_MAX_MESSAGE_BYTES = 1400;
/** An ICMP error for a message arrives within a round trip; after this the message counts as delivered. */
const DEFAULT_ERROR_WAIT_MS = 500;
/** Sends of one record that drew an error before it is given up on (counted as dropped). */
const MAX_SEND_ATTEMPTS = 5;
/** Records sent and not yet confirmed, at most: beyond, the sink waits for confirmations. */
const IN_FLIGHT_LIMIT = 20_000;
/** Longest mirror session id (config ID_PATTERN). */
const SESSION_ID_MAX = 64;
/** The largest data record (IPv6, longest session id with its length prefix): the least a message must hold. */
const LARGEST_RECORD = IPV6_TEMPLATE.fixedLength + 1 + SESSION_ID_MAX;
const MS_PER_S = 1000;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

type IpfixSetting = Extract<Sink, { type: 'ipfix' }>;

interface InFlight {
  records: FlowRecord[];
  /** performance.now() of the send. */
  sentAt: number;
}

export class IpfixSink extends QueuedSink {
  /** Data records sent before the next message: its sequence number (RFC 7011 §3.1). */
  private sequence = 0;
  private readonly domain: number;
  private readonly host: string;
  private readonly port: number;
  private readonly templateIntervalMs: number;
  private readonly errorWaitMs: number;
  private readonly templates: Buffer;
  private readonly buf: Buffer;
  private socket: dgram.Socket | undefined;
  /** When templates last went out (Date.now()); undefined: they must go with the next message. */
  private templatesSentAt: number | undefined;
  /** The collector reported an error: back off, then probe it with templates until one draws no error. */
  private backOffPending = false;
  private probing = false;
  private probeSentAt: number | undefined;
  private inFlight: InFlight[] = [];
  private inFlightRecords = 0;
  private confirmTimer: NodeJS.Timeout | undefined;
  /** Resolves release() once nothing is in flight. */
  private idle: (() => void) | undefined;
  /** Sends of a record that drew an error so far. */
  private readonly attempts = new WeakMap<FlowRecord, number>();
  private readonly ifindexes = new Map<string, number>();

  constructor(setting: IpfixSetting, opts: SinkOptions) {
    super('ipfix', opts);
    this.deliveryConfirms = false;
    const hp = parseHostPort(setting.collector);
    if (typeof hp === 'string') throw new MirrorflowError(ErrorCode.SINK_INVALID, `flow log ${opts.flowLogId}: ipfix collector: ${hp}`);
    this.host = hp.host;
    this.port = hp.port;
    this.domain = observationDomain(opts.flowLogId);
    this.templates = templateSet(setting.enterpriseNumber);
    this.templateIntervalMs = setting.templateRefresh * MS_PER_S;
    this.errorWaitMs = opts.errorWaitMs ?? DEFAULT_ERROR_WAIT_MS;
    const maxBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (maxBytes < MESSAGE_HEADER_LEN + this.templates.length + SET_HEADER_LEN + LARGEST_RECORD) {
      throw new MirrorflowError(ErrorCode.SINK_INVALID, `maxMessageBytes ${maxBytes} cannot hold the templates and one IPv6 record`);
    }
    this.buf = Buffer.alloc(maxBytes);
  }

  protected async deliver(batch: readonly FlowRecord[]): Promise<number> {
    this.confirmDue();
    if (this.backOffPending) {
      this.backOffPending = false;
      throw new BackOff('collector reported an error');
    }
    const socket = await this.connect();
    if (this.probing) await this.probe(socket);
    if (this.inFlightRecords >= IN_FLIGHT_LIMIT) throw new BackOff('waiting for confirmations', this.untilConfirmed());

    const now = Date.now();
    const withTemplates = this.templatesSentAt === undefined || now - this.templatesSentAt >= this.templateIntervalMs;
    const buf = this.buf;
    let off = MESSAGE_HEADER_LEN;
    if (withTemplates) off += this.templates.copy(buf, off);
    let consumed = 0;
    let skipped = 0;
    const sent: FlowRecord[] = [];
    let set: Template | undefined;
    let setOff = 0;
    for (const record of batch) {
      const r = this.exportable(record);
      if (r === undefined) {
        consumed++;
        skipped++;
        continue;
      }
      const t = templateOf(r);
      const need = dataRecordLength(t, r) + (t === set ? 0 : SET_HEADER_LEN);
      if (off + need > buf.length) break;
      if (t !== set) {
        if (set !== undefined) writeSetLength(buf, setOff, off);
        set = t;
        setOff = off;
        off = writeSetHeader(buf, off, t.id);
      }
      off = writeDataRecord(buf, off, t, r);
      consumed++;
      sent.push(record);
    }
    if (set !== undefined) writeSetLength(buf, setOff, off);
    if (sent.length > 0) {
      writeMessageHeader(buf, off, Math.floor(now / MS_PER_S), this.sequence, this.domain);
      await this.send(socket, off);
      this.sequence += sent.length;
      this.records += sent.length;
      this.bytes += off;
      if (withTemplates) this.templatesSentAt = now;
      if (this.probing) {
        // An error for an earlier message came while this one was on its way: the collector
        // is down, so this one goes again after the probe rather than waiting to be refused.
        this.requeue(sent);
      } else {
        this.inFlight.push({ records: sent, sentAt: performance.now() });
        this.inFlightRecords += sent.length;
        this.armConfirmTimer();
      }
    }
    this.skipped += skipped;
    this.confirm(skipped);
    return consumed;
  }

  protected async release(): Promise<void> {
    if (this.inFlightRecords > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    const socket = this.socket;
    this.socket = undefined;
    if (socket !== undefined) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  /** Sends `length` bytes of the buffer; a refused send is handled like an ICMP error and retried. */
  private async send(socket: dgram.Socket, length: number): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => socket.send(this.buf, 0, length, (err) => (err ? reject(err) : resolve())));
    } catch (err) {
      this.collectorFailed(err);
      throw new BackOff('send failed');
    }
  }

  /**
   * After an error: a message of templates only, then errorWaitMs without an error, before
   * data records go out again. Returns once the collector counts as reachable.
   */
  private async probe(socket: dgram.Socket): Promise<void> {
    if (this.probeSentAt === undefined) {
      this.templates.copy(this.buf, MESSAGE_HEADER_LEN);
      const length = MESSAGE_HEADER_LEN + this.templates.length;
      writeMessageHeader(this.buf, length, Math.floor(Date.now() / MS_PER_S), this.sequence, this.domain);
      await this.send(socket, length);
      this.bytes += length;
      this.probeSentAt = performance.now();
    }
    const waited = performance.now() - this.probeSentAt;
    if (waited < this.errorWaitMs) throw new BackOff('probing the collector', this.errorWaitMs - waited);
    this.probing = false;
    this.probeSentAt = undefined;
    this.recovered();
  }

  /**
   * The collector refused something (ICMP port unreachable, or a send failed): every record
   * in flight goes back to the queue, templates go first again, and the sink probes.
   */
  private collectorFailed(err: unknown): void {
    this.failed(err);
    this.backOffPending = true;
    this.probing = true;
    this.probeSentAt = undefined;
    this.templatesSentAt = undefined;
    const back = this.inFlight.flatMap((m) => m.records);
    this.inFlight = [];
    this.inFlightRecords = 0;
    const retry: FlowRecord[] = [];
    let lost = 0;
    for (const r of back) {
      const n = (this.attempts.get(r) ?? 0) + 1;
      if (n >= MAX_SEND_ATTEMPTS) lost++;
      else {
        this.attempts.set(r, n);
        retry.push(r);
      }
    }
    if (lost > 0) this.lose(lost, `refused by the collector ${MAX_SEND_ATTEMPTS} times`);
    this.requeue(retry);
    this.settledInFlight();
  }

  /** Settles every in-flight message sent at least errorWaitMs ago. */
  private confirmDue(): void {
    const due = performance.now() - this.errorWaitMs;
    let n = 0;
    let i = 0;
    for (; i < this.inFlight.length && this.inFlight[i]!.sentAt <= due; i++) n += this.inFlight[i]!.records.length;
    if (i === 0) return;
    this.inFlight.splice(0, i);
    this.inFlightRecords -= n;
    this.confirm(n);
    this.settledInFlight();
  }

  private untilConfirmed(): number {
    return Math.max(1, this.inFlight[0]!.sentAt + this.errorWaitMs - performance.now());
  }

  private armConfirmTimer(): void {
    if (this.confirmTimer !== undefined || this.inFlight.length === 0) return;
    this.confirmTimer = setTimeout(() => {
      this.confirmTimer = undefined;
      this.confirmDue();
      this.armConfirmTimer();
    }, this.untilConfirmed());
  }

  private settledInFlight(): void {
    if (this.inFlightRecords > 0) return;
    clearTimeout(this.confirmTimer);
    this.confirmTimer = undefined;
    this.idle?.();
    this.idle = undefined;
  }

  private async connect(): Promise<dgram.Socket> {
    if (this.socket !== undefined) return this.socket;
    const literal = parseIp(this.host);
    const address = literal !== undefined ? this.host : (await lookup(this.host)).address;
    const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.connect(this.port, address, () => {
          socket.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      socket.close();
      throw err;
    }
    socket.on('error', (err) => this.collectorFailed(err));
    this.socket = socket;
    return socket;
  }

  /** The record with its addresses as bytes and its interface index; undefined when it cannot be encoded. */
  private exportable(record: FlowRecord): ExportRecord | undefined {
    const ifindex = this.ifindex(record['eni-id']);
    if (record['log-status'] !== 'OK') return { src: undefined, dst: undefined, record, ifindex };
    if (record.srcaddr === null || record.dstaddr === null) return undefined;
    const src = parseIp(record.srcaddr);
    const dst = parseIp(record.dstaddr);
    if (src === undefined || dst === undefined || src.family !== dst.family) return undefined;
    return { src: src.bytes, dst: dst.bytes, record, ifindex };
  }

  /** /sys/class/net/NAME/ifindex, read once per name; 0 when there is no such interface. */
  private ifindex(name: string): number {
    let index = this.ifindexes.get(name);
    if (index === undefined) {
      index = 0;
      if (interfaceNameProblem(name) === undefined) {
        try {
          index = Number.parseInt(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8'), 10) || 0;
        } catch {
          // Not an interface on this host (a replayed capture's name): 0 means unknown.
        }
      }
      this.ifindexes.set(name, index);
    }
    return index;
  }
}

/** FNV-1a of the flow log id: a stable observation domain per flow log, so two flow logs to one collector stay apart. */
function observationDomain(flowLogId: string): number {
  let h = FNV_OFFSET;
  for (const byte of Buffer.from(flowLogId, 'utf8')) h = Math.imul(h ^ byte, FNV_PRIME) >>> 0;
  return h;
}
