// A one-line progress indication on a terminal for scans that take a while: nothing for
// the first second (most queries are done by then), nothing at all when stderr is not a
// terminal (a pipe or a log file gets no carriage-return noise).

/** How long a scan runs before the progress line appears. */
const SHOW_AFTER_MS = 1000;

export interface Progress {
  update(percentage: number): void;
  done(): void;
}

export function terminalProgress(stream: NodeJS.WriteStream, label: string, now: () => number = Date.now): Progress {
  const started = now();
  let shown = false;
  return {
    update(percentage) {
      if (stream.isTTY !== true || now() - started < SHOW_AFTER_MS) return;
      const pct = percentage >= 0 ? `${Math.min(100, percentage).toFixed(0)}%` : '…';
      stream.write(`\r${label}: ${pct}  (${((now() - started) / 1000).toFixed(0)} s)\x1b[K`);
      shown = true;
    },
    done() {
      if (shown) stream.write('\r\x1b[K');
      shown = false;
    },
  };
}
