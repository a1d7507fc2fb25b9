import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

/** Parses "host:port" or "[v6]:port"; throws with the offending text. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`metrics.listen: expected host:port, got "${listen}"`);
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * Serves /metrics (Prometheus text), /healthz (the process is alive) and /readyz (capture
 * is attached). Resolves once listening; rejects when the address cannot be bound.
 */
export async function serveMetrics(listen: string, registry: Registry, isReady: () => boolean): Promise<Server> {
  const { host, port } = parseListen(listen);
  const server = createServer((req, res) => {
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
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
  return server;
}
