// The one place IP addresses are parsed and formatted: config validation, rule
// compilation, outer frames, flow records, IPFIX and libpcap expressions all use it.
// Output follows RFC 5952: lowercase hex, no leading zeros, the longest run of two or more
// zero groups compressed (the first of equal runs), a single zero group left as "0", and
// IPv4-mapped addresses in mixed notation (::ffff:192.0.2.1, §5).

import { isIPv4, isIPv6 } from 'node:net';

export interface IpAddress {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

/** Parses an IPv4 or IPv6 literal (no zone index, embedded IPv4 allowed); undefined when it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  if (isIPv4(text)) return { family: 4, bytes: Uint8Array.from(text.split('.'), Number) };
  if (!isIPv6(text) || text.includes('%')) return undefined;
  let s = text;
  const tailStart = s.lastIndexOf(':') + 1;
  const tail = s.slice(tailStart);
  if (tail.includes('.')) {
    // Embedded IPv4 (::ffff:1.2.3.4): rewrite as the two hex groups it stands for.
    const [a = 0, b = 0, c = 0, d = 0] = tail.split('.').map(Number);
    s = `${s.slice(0, tailStart)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [left = '', right] = s.split('::');
  const head = left === '' ? [] : left.split(':');
  const rest = right === undefined || right === '' ? [] : right.split(':');
  const groups = right === undefined ? head : [...head, ...Array<string>(8 - head.length - rest.length).fill('0'), ...rest];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    bytes[2 * i] = v >> 8;
    bytes[2 * i + 1] = v & 0xff;
  });
  return { family: 6, bytes };
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it carries; any other unchanged. */
export function unmapIp(ip: IpAddress): IpAddress {
  const b = ip.bytes;
  if (ip.family === 6 && b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return { family: 4, bytes: b.slice(12) };
  }
  return ip;
}

/**
 * The address packets sent to `text` carry on the wire: an IPv4-mapped literal is the IPv4
 * address it maps (a dual-stack socket sends to it over IPv4). Throws when `text` is not an address.
 */
export function wireAddress(text: string): IpAddress {
  const ip = parseIp(text);
  if (ip === undefined) throw new Error(`not an IP address: ${JSON.stringify(text)}`);
  return unmapIp(ip);
}

/** Bytes (network order) as 4 big-endian u32 words, the form rules and kernel maps compare. */
export function wordsOf(bytes: Uint8Array): Uint32Array {
  const words = new Uint32Array(4);
  for (let i = 0; i < bytes.length; i += 4) {
    words[i / 4] = ((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!) >>> 0;
  }
  return words;
}

/** Parses an IPv4 or IPv6 literal into 4 network-order words (IPv4 in word 0); throws when it is not one. */
export function parseAddress(text: string): { family: 4 | 6; words: Uint32Array } {
  const ip = parseIp(text);
  if (ip === undefined) throw new Error(`not an IP address: ${JSON.stringify(text)}`);
  return { family: ip.family, words: wordsOf(ip.bytes) };
}

/**
 * Address words (network order, as numbers; signed Int32Array entries are fine) from
 * `words[at]` on: IPv4 in one word, IPv6 in four, RFC 5952 text.
 */
export function formatAddress(family: 4 | 6, words: ArrayLike<number>, at = 0): string {
  const w0 = words[at]! >>> 0;
  if (family === 4) return `${w0 >>> 24}.${(w0 >>> 16) & 0xff}.${(w0 >>> 8) & 0xff}.${w0 & 0xff}`;
  const group = (i: number): number => {
    const w = words[at + (i >> 1)]! >>> 0;
    return i & 1 ? w & 0xffff : w >>> 16;
  };
  const w3 = words[at + 3]! >>> 0;
  if (w0 === 0 && words[at + 1]! === 0 && words[at + 2]! >>> 0 === 0xffff) {
    return `::ffff:${w3 >>> 24}.${(w3 >>> 16) & 0xff}.${(w3 >>> 8) & 0xff}.${w3 & 0xff}`;
  }
  // The longest run of zero groups, at least two long; the first one on a tie (§4.2).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (group(i) !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && group(j) === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === best) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    out += group(i).toString(16);
  }
  return out;
}

/** The canonical (RFC 5952) text of an address. */
export function formatIp(ip: IpAddress): string {
  return formatAddress(ip.family, wordsOf(ip.bytes));
}
