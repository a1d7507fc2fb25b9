// IPFIX (RFC 7011) encoding of flow records: the two templates (IPv4, IPv6), the template
// set that announces them, data records, and the message header. The element tables are
// the single source for both the template and the data records, so the two cannot
// disagree; docs/sinks.md lists the same elements.
import type { FlowRecord } from '../flow/record.js';

export const IPFIX_VERSION = 10;
export const MESSAGE_HEADER_LEN = 16;
export const SET_HEADER_LEN = 4;
export const TEMPLATE_SET_ID = 2;
export const IPV4_TEMPLATE_ID = 256;
export const IPV6_TEMPLATE_ID = 257;
const TEMPLATE_RECORD_HEADER_LEN = 4;
const FIELD_SPECIFIER_LEN = 4;
const TWO_POW_32 = 2 ** 32;

/** flowDirection (IE 61) values. */
const FLOW_DIRECTION_INGRESS = 0;
const FLOW_DIRECTION_EGRESS = 1;
/** firewallEvent (IE 233) values: a window's report of allowed traffic is a flow update. */
const FIREWALL_EVENT_IGNORE = 0;
const FIREWALL_EVENT_DENIED = 3;
const FIREWALL_EVENT_UPDATE = 5;

/** A record with everything IPFIX needs resolved: address bytes and interface indexes. */
export interface ExportRecord {
  src: Uint8Array;
  dst: Uint8Array;
  record: FlowRecord;
  /** ifindex of the record's interface (eni-id), 0 when unknown. */
  ifindex: number;
}

export interface InformationElement {
  id: number;
  name: string;
  length: number;
  value(r: ExportRecord): number | Uint8Array;
}

const tail: readonly InformationElement[] = [
  { id: 7, name: 'sourceTransportPort', length: 2, value: (r) => r.record.srcport ?? 0 },
  { id: 11, name: 'destinationTransportPort', length: 2, value: (r) => r.record.dstport ?? 0 },
  { id: 4, name: 'protocolIdentifier', length: 1, value: (r) => r.record.protocol ?? 0 },
  { id: 6, name: 'tcpControlBits', length: 2, value: (r) => r.record['tcp-flags'] ?? 0 },
  { id: 61, name: 'flowDirection', length: 1, value: (r) => (r.record.direction === 'out' ? FLOW_DIRECTION_EGRESS : FLOW_DIRECTION_INGRESS) },
  { id: 2, name: 'packetDeltaCount', length: 8, value: (r) => r.record.packets ?? 0 },
  { id: 1, name: 'octetDeltaCount', length: 8, value: (r) => r.record.bytes ?? 0 },
  { id: 150, name: 'flowStartSeconds', length: 4, value: (r) => r.record.start },
  { id: 151, name: 'flowEndSeconds', length: 4, value: (r) => r.record.end },
  { id: 10, name: 'ingressInterface', length: 4, value: (r) => (r.record.direction === 'in' ? r.ifindex : 0) },
  { id: 14, name: 'egressInterface', length: 4, value: (r) => (r.record.direction === 'out' ? r.ifindex : 0) },
  { id: 233, name: 'firewallEvent', length: 1, value: (r) => firewallEvent(r.record) },
];

export interface Template {
  id: number;
  family: 4 | 6;
  elements: readonly InformationElement[];
  /** Bytes of one data record. */
  recordLength: number;
}

function template(id: number, family: 4 | 6, elements: readonly InformationElement[]): Template {
  return { id, family, elements, recordLength: elements.reduce((n, e) => n + e.length, 0) };
}

export const IPV4_TEMPLATE = template(IPV4_TEMPLATE_ID, 4, [
  { id: 8, name: 'sourceIPv4Address', length: 4, value: (r) => r.src },
  { id: 12, name: 'destinationIPv4Address', length: 4, value: (r) => r.dst },
  ...tail,
]);

export const IPV6_TEMPLATE = template(IPV6_TEMPLATE_ID, 6, [
  { id: 27, name: 'sourceIPv6Address', length: 16, value: (r) => r.src },
  { id: 28, name: 'destinationIPv6Address', length: 16, value: (r) => r.dst },
  ...tail,
]);

export const TEMPLATES: readonly Template[] = [IPV4_TEMPLATE, IPV6_TEMPLATE];

/** Bytes of the template set announcing every template. */
export const TEMPLATE_SET_LEN =
  SET_HEADER_LEN + TEMPLATES.reduce((n, t) => n + TEMPLATE_RECORD_HEADER_LEN + FIELD_SPECIFIER_LEN * t.elements.length, 0);

function firewallEvent(r: FlowRecord): number {
  if (r.action === 'ACCEPT') return FIREWALL_EVENT_UPDATE;
  if (r.action === 'REJECT') return FIREWALL_EVENT_DENIED;
  return FIREWALL_EVENT_IGNORE;
}

/** Writes the message header; `length` covers the whole message. */
export function writeMessageHeader(buf: Buffer, length: number, exportTime: number, sequence: number, domain: number): void {
  buf.writeUInt16BE(IPFIX_VERSION, 0);
  buf.writeUInt16BE(length, 2);
  buf.writeUInt32BE(exportTime, 4);
  buf.writeUInt32BE(sequence % TWO_POW_32, 8);
  buf.writeUInt32BE(domain, 12);
}

/** Writes the template set at `off`; returns the offset after it. */
export function writeTemplateSet(buf: Buffer, off: number): number {
  buf.writeUInt16BE(TEMPLATE_SET_ID, off);
  buf.writeUInt16BE(TEMPLATE_SET_LEN, off + 2);
  let p = off + SET_HEADER_LEN;
  for (const t of TEMPLATES) {
    buf.writeUInt16BE(t.id, p);
    buf.writeUInt16BE(t.elements.length, p + 2);
    p += TEMPLATE_RECORD_HEADER_LEN;
    for (const e of t.elements) {
      buf.writeUInt16BE(e.id, p);
      buf.writeUInt16BE(e.length, p + 2);
      p += FIELD_SPECIFIER_LEN;
    }
  }
  return p;
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

/** Writes one data record in template order; returns the offset after it. */
export function writeDataRecord(buf: Buffer, off: number, t: Template, r: ExportRecord): number {
  let p = off;
  for (const e of t.elements) {
    const v = e.value(r);
    if (typeof v === 'number') writeUnsigned(buf, p, e.length, v);
    else buf.set(v, p);
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
