// IPFIX exporter over UDP (RFC 7011) for one flow log: each message packs as many data
// records as fit in maxMessageBytes; templates ride along with the first message, again
// once templateIntervalMs has passed, and after any socket error (the collector may have
// restarted and forgotten them). NODATA/SKIPDATA records carry no 5-tuple and are
// skipped. UDP is best effort: a collector that is down answers with ICMP port
// unreachable, which surfaces as an 'error' event after a send; the sink then backs off
// so records wait in the queue instead of being sent into the void.
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import type { FlowRecord } from '../flow/record.js';
import { interfaceNameProblem, parseHostPort, parseIp } from '../config/schema.js';
import type { SinkOptions } from './sink.js';
import { BackOff, QueuedSink } from './queue.js';
import {
  IPV4_TEMPLATE,
  IPV6_TEMPLATE,
  MESSAGE_HEADER_LEN,
  SET_HEADER_LEN,
  TEMPLATE_SET_LEN,
  writeDataRecord,
  writeMessageHeader,
  writeSetHeader,
  writeSetLength,
  writeTemplateSet,
  type ExportRecord,
  type Template,
} from './ipfix-template.js';

const DEFAULT_TEMPLATE_INTERVAL_MS = 30_000;
/** Fits a 1500-byte MTU under IPv6 + UDP headers with room for tunnels. */
const DEFAULT_MAX_MESSAGE_BYTES = 1400;
/** A message sent this long ago without an error coming back means the collector is reachable again. */
const RECOVERY_QUIET_MS = 1000;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

export class IpfixSink extends QueuedSink {
  /** Data records sent before the next message: its sequence number (RFC 7011 §3.1). */
  private sequence = 0;
  private readonly domain: number;
  private readonly host: string;
  private readonly port: number;
  private readonly templateIntervalMs: number;
  private readonly buf: Buffer;
  private socket: dgram.Socket | undefined;
  /** When templates last went out; undefined: they must go with the next message. */
  private templatesSentAt: number | undefined;
  /** The socket reported an error after a send (counted then); the next delivery backs off first. */
  private backOff = false;
  /** When the first message after the last socket error went out; undefined until one has. */
  private sentSinceErrorAt: number | undefined;
  private readonly ifindexes = new Map<string, number>();

  constructor(collector: string, opts: SinkOptions) {
    super('ipfix', opts);
    this.deliveryConfirms = false;
    const hp = parseHostPort(collector);
    if (typeof hp === 'string') throw new Error(`flow log ${opts.flowLogId}: ipfix collector: ${hp}`);
    this.host = hp.host;
    this.port = hp.port;
    this.domain = observationDomain(opts.flowLogId);
    this.templateIntervalMs = opts.templateIntervalMs ?? DEFAULT_TEMPLATE_INTERVAL_MS;
    const maxBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (maxBytes < MESSAGE_HEADER_LEN + TEMPLATE_SET_LEN + SET_HEADER_LEN + IPV6_TEMPLATE.recordLength) {
      throw new Error(`maxMessageBytes ${maxBytes} cannot hold the templates and one IPv6 record`);
    }
    this.buf = Buffer.alloc(maxBytes);
  }

  protected async deliver(batch: readonly FlowRecord[]): Promise<number> {
    if (this.backOff) {
      this.backOff = false;
      throw new BackOff('collector reported an error');
    }
    const socket = await this.connect();
    const now = Date.now();
    if (this.sentSinceErrorAt !== undefined && now - this.sentSinceErrorAt >= RECOVERY_QUIET_MS) this.recovered();
    const withTemplates = this.templatesSentAt === undefined || now - this.templatesSentAt >= this.templateIntervalMs;
    const buf = this.buf;
    let off = MESSAGE_HEADER_LEN;
    if (withTemplates) off = writeTemplateSet(buf, off);
    let consumed = 0;
    let dataRecords = 0;
    let skipped = 0;
    let set: Template | undefined;
    let setOff = 0;
    for (const record of batch) {
      const r = this.exportable(record);
      if (r === undefined) {
        consumed++;
        skipped++;
        continue;
      }
      const t = r.src.length === 4 ? IPV4_TEMPLATE : IPV6_TEMPLATE;
      const need = t.recordLength + (t === set ? 0 : SET_HEADER_LEN);
      if (off + need > buf.length) break;
      if (t !== set) {
        if (set !== undefined) writeSetLength(buf, setOff, off);
        set = t;
        setOff = off;
        off = writeSetHeader(buf, off, t.id);
      }
      off = writeDataRecord(buf, off, t, r);
      consumed++;
      dataRecords++;
    }
    if (set !== undefined) writeSetLength(buf, setOff, off);
    if (dataRecords > 0) {
      writeMessageHeader(buf, off, Math.floor(now / 1000), this.sequence, this.domain);
      await new Promise<void>((resolve, reject) => socket.send(buf, 0, off, (err) => (err ? reject(err) : resolve()))).catch((err: unknown) => {
        this.templatesSentAt = undefined;
        this.sentSinceErrorAt = undefined;
        throw err;
      });
      this.sequence += dataRecords;
      this.records += dataRecords;
      this.bytes += off;
      if (withTemplates) this.templatesSentAt = now;
      this.sentSinceErrorAt ??= now;
    }
    this.skipped += skipped;
    return consumed;
  }

  protected async release(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    if (socket !== undefined) await new Promise<void>((resolve) => socket.close(() => resolve()));
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
    socket.on('error', (err) => {
      this.failed(err);
      this.backOff = true;
      this.sentSinceErrorAt = undefined;
      this.templatesSentAt = undefined;
    });
    this.socket = socket;
    return socket;
  }

  /** The record with its addresses as bytes and its interface index; undefined when it has no 5-tuple. */
  private exportable(record: FlowRecord): ExportRecord | undefined {
    if (record['log-status'] !== 'OK' || record.srcaddr === null || record.dstaddr === null) return undefined;
    const src = parseIp(record.srcaddr);
    const dst = parseIp(record.dstaddr);
    if (src === undefined || dst === undefined || src.family !== dst.family) return undefined;
    return { src: src.bytes, dst: dst.bytes, record, ifindex: this.ifindex(record['eni-id']) };
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
