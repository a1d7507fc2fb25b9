// IPFIX (RFC 7011) encoding of flow records: the three templates (IPv4 flows, IPv6 flows,
// NODATA/SKIPDATA status), the template set that announces them, data records, and the
// message header. The element tables are the single source for both the template and the
// data records, so the two cannot disagree; docs/sinks.md lists the same elements, and
// deploy/pmacct/ names the enterprise-specific ones for nfacctd.
import type { FlowRecord } from '../flow/record.js';

export const IPFIX_VERSION = 10;
export const MESSAGE_HEADER_LEN = 16;
export const SET_HEADER_LEN = 4;
export const TEMPLATE_SET_ID = 2;
export const IPV4_TEMPLATE_ID = 256;
export const IPV6_TEMPLATE_ID = 257;
export const STATUS_TEMPLATE_ID = 258;
/**
 * IANA's enterprise number for documentation (RFC 5612): the default for the
 * enterprise-specific elements until an operator configures their own.
 */
export const DOCUMENTATION_ENTERPRISE_NUMBER = 32473;
/** Field length announcing a variable-length element (RFC 7011 §7). */
export const VARIABLE_LENGTH = 0xffff;
const TEMPLATE_RECORD_HEADER_LEN = 4;
const FIELD_SPECIFIER_LEN = 4;
const ENTERPRISE_FIELD_SPECIFIER_LEN = 8;
const ENTERPRISE_BIT = 0x8000;
/** Variable-length values shorter than this take a one-byte length prefix (RFC 7011 §7). */
const SHORT_VARIABLE_MAX = 255;
const TWO_POW_32 = 2 ** 32;
const MS_PER_S = 1000;

/** flowDirection (IE 61) values. */
const FLOW_DIRECTION_INGRESS = 0;
const FLOW_DIRECTION_EGRESS = 1;
/**
 * forwardingStatus (IE 89, RFC 7270 and IANA's sub-registry): status in the two top bits,
 * reason below. The element made for the verdict: nfacctd reads it as a custom primitive,
 * nfdump's IPFIX reader from 1.7.2 on (`%fwd`, filter `fwdstat`).
 */
export const FORWARDING_STATUS = { ACCEPT: 64 /* Forwarded, unknown reason */, REJECT: 129 /* Dropped, ACL deny */ } as const;
/**
 * observationPointId (IE 138): where the packets were seen, the interface itself (traffic
 * that crossed it) or the host's packet filter (traffic it dropped). Debian's nfdump 1.7.1
 * decodes this (`%opid`) but not forwardingStatus, so it is how that nfdump tells the two apart.
 */
export const OBSERVATION_POINT = { ACCEPT: 1, REJECT: 2 } as const;
/** flowEndReason (IE 136) of status records: NODATA is an idle window, SKIPDATA lost packets to a lack of resources. */
export const END_REASON = { NODATA: 1 /* idle timeout */, SKIPDATA: 5 /* lack of resources */ } as const;
/** handshakeRttMicroseconds when the record's `rtt-us` is null (no handshake seen). */
export const RTT_UNKNOWN = 0xffffffff;
/** logStatus values; OK records use the flow templates, which do not carry it. */
export const LOG_STATUS = { OK: 0, NODATA: 1, SKIPDATA: 2 } as const;

/** The enterprise-specific elements, numbered under the configured enterprise number. */
export const ENTERPRISE_ELEMENTS = {
  tcpRetransmissions: 1,
  tcpZeroWindows: 2,
  handshakeRttMicroseconds: 3,
  mirroredPackets: 4,
  mirrorSession: 5,
  logStatus: 6,
  skippedPackets: 7,
} as const;

/** A record with everything IPFIX needs resolved: address bytes and interface indexes. */
export interface ExportRecord {
  /** Address bytes; undefined on NODATA/SKIPDATA records. */
  src: Uint8Array | undefined;
  dst: Uint8Array | undefined;
  record: FlowRecord;
  /** ifindex of the record's interface (eni-id), 0 when unknown. */
  ifindex: number;
}

export interface InformationElement {
  id: number;
  /** True: numbered under the sink's enterprise number (the field specifier carries it). */
  enterprise: boolean;
  name: string;
  /** Bytes, or VARIABLE_LENGTH for a string with a length prefix. */
  length: number;
  value(r: ExportRecord): number | Uint8Array | string;
}

const ie = (id: number, name: string, length: number, value: InformationElement['value']): InformationElement => ({ id, enterprise: false, name, length, value });
const pen = (name: keyof typeof ENTERPRISE_ELEMENTS, length: number, value: InformationElement['value']): InformationElement => ({
  id: ENTERPRISE_ELEMENTS[name],
  enterprise: true,
  name,
  length,
  value,
});

const isIcmp = (r: FlowRecord): boolean => r['icmp-type'] !== null;
const icmpTypeCode = (r: ExportRecord): number => (isIcmp(r.record) ? (r.record['icmp-type']! << 8) | r.record['icmp-code']! : 0);
const noAddress = new Uint8Array(0);

/** Times of every record: the capture window, in the milliseconds nfdump and pmacct both decode. */
const times: readonly InformationElement[] = [
  ie(152, 'flowStartMilliseconds', 8, (r) => r.record.start * MS_PER_S),
  ie(153, 'flowEndMilliseconds', 8, (r) => r.record.end * MS_PER_S),
];

function flowElements(icmp: InformationElement): InformationElement[] {
  return [
    ie(7, 'sourceTransportPort', 2, (r) => r.record.srcport ?? 0),
    ie(11, 'destinationTransportPort', 2, (r) => r.record.dstport ?? 0),
    ie(4, 'protocolIdentifier', 1, (r) => r.record.protocol ?? 0),
    // Reduced-size encoding (RFC 7011 §6.2) of the unsigned16: nfacctd reads only one byte,
    // the first, and the six flags fit in it.
    ie(6, 'tcpControlBits', 1, (r) => r.record['tcp-flags'] ?? 0),
    ie(61, 'flowDirection', 1, (r) => (r.record.direction === 'out' ? FLOW_DIRECTION_EGRESS : FLOW_DIRECTION_INGRESS)),
    ie(2, 'packetDeltaCount', 8, (r) => r.record.packets ?? 0),
    ie(1, 'octetDeltaCount', 8, (r) => r.record.bytes ?? 0),
    ...times,
    ie(10, 'ingressInterface', 4, (r) => (r.record.direction === 'in' ? r.ifindex : 0)),
    ie(14, 'egressInterface', 4, (r) => (r.record.direction === 'out' ? r.ifindex : 0)),
    ie(89, 'forwardingStatus', 1, (r) => (r.record.action === 'REJECT' ? FORWARDING_STATUS.REJECT : FORWARDING_STATUS.ACCEPT)),
    ie(138, 'observationPointId', 4, (r) => (r.record.action === 'REJECT' ? OBSERVATION_POINT.REJECT : OBSERVATION_POINT.ACCEPT)),
    icmp,
    pen('tcpRetransmissions', 4, (r) => r.record.retrans ?? 0),
    pen('tcpZeroWindows', 4, (r) => r.record['zero-win'] ?? 0),
    pen('handshakeRttMicroseconds', 4, (r) => r.record['rtt-us'] ?? RTT_UNKNOWN),
    pen('mirroredPackets', 8, (r) => r.record['mirrored-packets'] ?? 0),
    pen('mirrorSession', VARIABLE_LENGTH, (r) => r.record['mirror-session'] ?? ''),
  ];
}

const IPV4_ELEMENTS: readonly InformationElement[] = [
  ie(8, 'sourceIPv4Address', 4, (r) => r.src ?? noAddress),
  ie(12, 'destinationIPv4Address', 4, (r) => r.dst ?? noAddress),
  ...flowElements(ie(32, 'icmpTypeCodeIPv4', 2, icmpTypeCode)),
];

const IPV6_ELEMENTS: readonly InformationElement[] = [
  ie(27, 'sourceIPv6Address', 16, (r) => r.src ?? noAddress),
  ie(28, 'destinationIPv6Address', 16, (r) => r.dst ?? noAddress),
  ...flowElements(ie(139, 'icmpTypeCodeIPv6', 2, icmpTypeCode)),
];

/** NODATA and SKIPDATA: no 5-tuple, the interface, the window, and what was skipped. */
const STATUS_ELEMENTS: readonly InformationElement[] = [
  ...times,
  ie(10, 'ingressInterface', 4, (r) => r.ifindex),
  ie(136, 'flowEndReason', 1, (r) => (r.record['log-status'] === 'SKIPDATA' ? END_REASON.SKIPDATA : END_REASON.NODATA)),
  pen('logStatus', 1, (r) => LOG_STATUS[r.record['log-status']]),
  pen('skippedPackets', 8, (r) => r.record['skipped-packets'] ?? 0),
];

export interface Template {
  id: number;
  elements: readonly InformationElement[];
  /** Bytes of the fixed-length elements of one data record. */
  fixedLength: number;
}

function template(id: number, elements: readonly InformationElement[]): Template {
  return { id, elements, fixedLength: elements.reduce((n, e) => n + (e.length === VARIABLE_LENGTH ? 0 : e.length), 0) };
}

export const IPV4_TEMPLATE = template(IPV4_TEMPLATE_ID, IPV4_ELEMENTS);
export const IPV6_TEMPLATE = template(IPV6_TEMPLATE_ID, IPV6_ELEMENTS);
export const STATUS_TEMPLATE = template(STATUS_TEMPLATE_ID, STATUS_ELEMENTS);
export const TEMPLATES: readonly Template[] = [IPV4_TEMPLATE, IPV6_TEMPLATE, STATUS_TEMPLATE];

/** The template a record goes out with. */
export function templateOf(r: ExportRecord): Template {
  if (r.src === undefined) return STATUS_TEMPLATE;
  return r.src.length === 4 ? IPV4_TEMPLATE : IPV6_TEMPLATE;
}

/** The template set announcing every template, with `enterpriseNumber` on the enterprise-specific elements. */
export function templateSet(enterpriseNumber: number): Buffer {
  const length =
    SET_HEADER_LEN +
    TEMPLATES.reduce(
      (n, t) => n + TEMPLATE_RECORD_HEADER_LEN + t.elements.reduce((m, e) => m + (e.enterprise ? ENTERPRISE_FIELD_SPECIFIER_LEN : FIELD_SPECIFIER_LEN), 0),
      0,
    );
  const buf = Buffer.alloc(length);
  buf.writeUInt16BE(TEMPLATE_SET_ID, 0);
  buf.writeUInt16BE(length, 2);
  let p = SET_HEADER_LEN;
  for (const t of TEMPLATES) {
    buf.writeUInt16BE(t.id, p);
    buf.writeUInt16BE(t.elements.length, p + 2);
    p += TEMPLATE_RECORD_HEADER_LEN;
    for (const e of t.elements) {
      buf.writeUInt16BE(e.enterprise ? e.id | ENTERPRISE_BIT : e.id, p);
      buf.writeUInt16BE(e.length, p + 2);
      p += FIELD_SPECIFIER_LEN;
      if (e.enterprise) {
        buf.writeUInt32BE(enterpriseNumber, p);
        p += ENTERPRISE_FIELD_SPECIFIER_LEN - FIELD_SPECIFIER_LEN;
      }
    }
  }
  return buf;
}

/** Writes the message header; `length` covers the whole message. */
export function writeMessageHeader(buf: Buffer, length: number, exportTime: number, sequence: number, domain: number): void {
  buf.writeUInt16BE(IPFIX_VERSION, 0);
  buf.writeUInt16BE(length, 2);
  buf.writeUInt32BE(exportTime, 4);
  buf.writeUInt32BE(sequence % TWO_POW_32, 8);
  buf.writeUInt32BE(domain, 12);
}

/** Writes a set header (`length` may be patched later with writeSetLength). */
export function writeSetHeader(buf: Buffer, off: number, setId: number): number {
  buf.writeUInt16BE(setId, off);
  buf.writeUInt16BE(SET_HEADER_LEN, off + 2);
  return off + SET_HEADER_LEN;
}

export function writeSetLength(buf: Buffer, setOff: number, end: number): void {
  buf.writeUInt16BE(end - setOff, setOff + 2);
}

/** Bytes of one data record of `t` for `r` (variable-length values with their prefix). */
export function dataRecordLength(t: Template, r: ExportRecord): number {
  let n = t.fixedLength;
  for (const e of t.elements) if (e.length === VARIABLE_LENGTH) n += 1 + Buffer.byteLength(e.value(r) as string, 'utf8');
  return n;
}

/** Writes one data record in template order; returns the offset after it. */
export function writeDataRecord(buf: Buffer, off: number, t: Template, r: ExportRecord): number {
  let p = off;
  for (const e of t.elements) {
    const v = e.value(r);
    if (e.length === VARIABLE_LENGTH) {
      const n = buf.write(v as string, p + 1, 'utf8');
      if (n >= SHORT_VARIABLE_MAX) throw new Error(`${e.name}: ${n} bytes do not fit the short length prefix`);
      buf.writeUInt8(n, p);
      p += 1 + n;
      continue;
    }
    if (typeof v === 'number') writeUnsigned(buf, p, e.length, v);
    else if (typeof v !== 'string' && v.length === e.length) buf.set(v, p);
    else throw new Error(`${e.name}: value does not fill ${e.length} bytes`);
    p += e.length;
  }
  return p;
}

function writeUnsigned(buf: Buffer, off: number, length: number, v: number): void {
  switch (length) {
    case 1:
      buf.writeUInt8(v, off);
      break;
    case 2:
      buf.writeUInt16BE(v, off);
      break;
    case 4:
      buf.writeUInt32BE(v, off);
      break;
    case 8:
      buf.writeUInt32BE(Math.floor(v / TWO_POW_32), off);
      buf.writeUInt32BE(v % TWO_POW_32, off + 4);
      break;
    default:
      throw new Error(`no unsigned encoding of ${length} bytes`);
  }
}
