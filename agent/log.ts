import { pino, type Logger } from 'pino';

export type { Logger };

/** The agent's structured logger: JSON lines on stdout (the journal and kubectl logs read them). */
export function createLogger(level: string = 'info'): Logger {
  return pino({ name: 'mirrorflow', level, base: { pid: process.pid } });
}
