import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { ErrorCode, MirrorflowError } from '../errors.js';

/** Parses "host:port" or "[v6]:port"; throws with the offending text. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new MirrorflowError(ErrorCode.METRICS_LISTEN, `metrics.listen: expected host:port, got "${listen}"`);
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * What one client may hold: any local user can connect, so connections are few and short.
 * A scrape is one small GET answered in milliseconds; anything slower is a client holding a
 * slot. Connections beyond maxConnections are closed as soon as they are accepted, so the
 * agent's descriptors stay bounded whatever arrives.
 */
export interface HttpLimits {
  maxConnections: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  idleTimeoutMs: number;
}

export const HTTP_LIMITS: HttpLimits = {
  maxConnections: 64,
  /** The whole request head must arrive within this. */
  headersTimeoutMs: 5_000,
  /** The whole request (head and any body). */
  requestTimeoutMs: 10_000,
  /** An idle kept-alive connection is closed after this. */
  keepAliveTimeoutMs: 5_000,
  /** A connection with no traffic at all (not even a request started). */
  idleTimeoutMs: 10_000,
};

const ALLOWED_METHODS = 'GET, HEAD';

/**
 * Serves /metrics (Prometheus text), /healthz (the process is alive) and /readyz (capture
 * is attached), to GET and HEAD only (405 otherwise). Resolves once listening; rejects when
 * the address cannot be bound.
 */
export async function serveMetrics(
  listen: string, registry: Registry, isReady: () => boolean, overrides: Partial<HttpLimits> = {},
): Promise<Server> {
  const { host, port } = parseListen(listen);
  const limits = { ...HTTP_LIMITS, ...overrides };
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // How often the two timeouts above are checked.
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
    },
    (req, res) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: ALLOWED_METHODS }).end('method not allowed\n');
        return;
      }
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/metrics') {
        registry.metrics().then(
          (text) => { res.writeHead(200, { 'content-type': registry.contentType }); res.end(text); },
          (err: Error) => { res.writeHead(500); res.end(err.message); },
        );
      } else if (path === '/healthz') {
        res.writeHead(200).end('ok\n');
      } else if (path === '/readyz') {
        const ready = isReady();
        res.writeHead(ready ? 200 : 503).end(ready ? 'ready\n' : 'not ready\n');
      } else {
        res.writeHead(404).end('not found\n');
      }
    },
  );
  server.maxConnections = limits.maxConnections;
  server.setTimeout(limits.idleTimeoutMs, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      // accept() failing (EMFILE) must not end the agent; the next accept retries.
      server.on('error', () => undefined);
      resolve();
    });
  });
  return server;
}
