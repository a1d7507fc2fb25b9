import { createHash } from 'node:crypto';

export const VNI_MAX = 0xffffff;

/**
 * The VNI of a session whose config omits one: the first 24 bits of SHA-256(session id).
 * Stable for the same id across restarts and hosts, so a destination's vxlan device keeps
 * matching; different ids collide only by chance (1 in 2^24).
 */
export function deriveVni(sessionId: string): number {
  return createHash('sha256').update(sessionId, 'utf8').digest().readUIntBE(0, 3);
}
