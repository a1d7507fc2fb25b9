// A flow log record as written (SPEC §4): one direction of one 5-tuple on one interface
// during one capture window. Field names are the wire names of the JSON lines format.

export type LogStatus = 'OK' | 'NODATA' | 'SKIPDATA';
export type FlowAction = 'ACCEPT' | 'REJECT';

export interface FlowRecord {
  version: 1;
  'vswitch-id': string | null;
  'vm-id': string;
  'vpc-id': string | null;
  'account-id': string | null;
  'eni-id': string;
  srcaddr: string | null;
  srcport: number | null;
  dstaddr: string | null;
  dstport: number | null;
  protocol: number | null;
  direction: 'in' | 'out' | null;
  packets: number | null;
  bytes: number | null;
  /** Window bounds, seconds since the epoch (UTC), aligned to the flow log's window. */
  start: number;
  end: number;
  'log-status': LogStatus;
  action: FlowAction | null;
  'tcp-flags': number | null;
  /** ICMP/ICMPv6 type and code of the flow (ICMP flows are keyed per type and code); null for other protocols. */
  'icmp-type': number | null;
  'icmp-code': number | null;
  retrans: number | null;
  'zero-win': number | null;
  /** Handshake RTT seen from this host in microseconds, when the handshake was seen. */
  'rtt-us': number | null;
  'mirrored-packets': number | null;
  'mirror-session': string | null;
  /** Only on SKIPDATA records: packets lost to capture drops or flow table evictions. */
  'skipped-packets'?: number;
}
