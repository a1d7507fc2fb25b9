// One control-socket connection: newline framing with a line limit, requests answered one at
// a time in order, and backpressure both ways, so no client can grow the agent without bound:
// - a line longer than maxLineBytes is answered with an error and the connection closed;
// - at most maxQueuedLines requests wait per connection; beyond that the agent stops reading;
// - while more than maxUnsentBytes of answers wait in the socket (the client does not read),
//   the agent stops answering and reading until the socket drains.
// A client that closes early (ECONNRESET, EPIPE) or half-closes only ends its own connection.

import type net from 'node:net';
import { ControlErrorCode, encodeMessage, type ControlResponse } from './protocol.js';

export interface ConnectionLimits {
  /** A request line (without its newline) longer than this is refused and the connection closed. */
  maxLineBytes: number;
  /** Requests read but not answered yet; reading pauses at this count. */
  maxQueuedLines: number;
  /** Answers written but not taken by the client yet; answering and reading pause above this. */
  maxUnsentBytes: number;
  /** A connection with no traffic either way for this long is closed. */
  idleMs: number;
}

/** Why a connection ended badly, as the `reason` label of mirrorflow_control_errors_total. */
export type ConnectionErrorReason = 'reset' | 'broken_pipe' | 'line_too_long' | 'idle_timeout' | 'too_many_connections' | 'other';

const NEWLINE = 0x0a;

export function errorReason(err: NodeJS.ErrnoException): ConnectionErrorReason {
  if (err.code === 'ECONNRESET') return 'reset';
  if (err.code === 'EPIPE') return 'broken_pipe';
  return 'other';
}

/** Serves one connection until it closes; `answer` turns a request line into its response. */
export function serveConnection(
  socket: net.Socket,
  limits: ConnectionLimits,
  answer: (line: string) => Promise<ControlResponse>,
  onError: (reason: ConnectionErrorReason, err?: Error) => void,
): void {
  /** Bytes of the line being read, spread over the chunks that carried them. */
  let partial: Buffer[] = [];
  let partialBytes = 0;
  const queue: string[] = [];
  let answering = false;
  /** An answer is being computed (an edit may take a while): that is not the client idling. */
  let computing = false;
  let inputEnded = false;
  let refused = false;

  const flowing = (): boolean => queue.length < limits.maxQueuedLines && socket.writableLength <= limits.maxUnsentBytes;
  const updateReading = (): void => {
    if (refused || inputEnded || socket.destroyed) return;
    if (flowing()) socket.resume();
    else socket.pause();
  };

  const refuse = (message: string): void => {
    refused = true;
    queue.length = 0;
    partial = [];
    socket.pause();
    onError('line_too_long');
    // Destroyed once the answer is out: the rest of the line is never read.
    socket.end(encodeMessage({ id: null, ok: false, error: { code: ControlErrorCode.BAD_REQUEST, message } }), () => socket.destroy());
  };

  const pump = async (): Promise<void> => {
    if (answering) return;
    answering = true;
    try {
      while (queue.length > 0 && !socket.destroyed) {
        if (socket.writableLength > limits.maxUnsentBytes) {
          // The client is not reading its answers: wait until it does (or goes away).
          await new Promise<void>((resolve) => {
            const done = (): void => {
              socket.off('drain', done);
              socket.off('close', done);
              resolve();
            };
            socket.once('drain', done);
            socket.once('close', done);
          });
          continue;
        }
        const line = queue.shift()!;
        updateReading();
        computing = true;
        const response = await answer(line).finally(() => (computing = false));
        if (socket.writable) socket.write(encodeMessage(response));
      }
    } finally {
      answering = false;
    }
    if (inputEnded && queue.length === 0 && socket.writable) socket.end();
    updateReading();
  };

  const enqueue = (bytes: Buffer): void => {
    // A trailing CR (telnet, CRLF clients) is not part of the request.
    const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.length - 1 : bytes.length;
    const line = bytes.toString('utf8', 0, end);
    if (line.trim() === '') return;
    queue.push(line);
  };

  socket.on('data', (chunk: Buffer) => {
    if (refused) return;
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl >= 0; nl = chunk.indexOf(NEWLINE, start)) {
      if (partialBytes + nl - start > limits.maxLineBytes) return refuse(`request line longer than ${limits.maxLineBytes} bytes`);
      const piece = chunk.subarray(start, nl);
      enqueue(partialBytes === 0 ? piece : Buffer.concat([...partial, piece]));
      partial = [];
      partialBytes = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      partialBytes += chunk.length - start;
      if (partialBytes > limits.maxLineBytes) return refuse(`request line longer than ${limits.maxLineBytes} bytes`);
      // Copied: the rest of the chunk must not keep the whole chunk alive.
      partial.push(Buffer.from(chunk.subarray(start)));
    }
    updateReading();
    void pump();
  });
  socket.on('end', () => {
    inputEnded = true;
    void pump();
  });
  socket.on('drain', updateReading);
  socket.on('error', (err: NodeJS.ErrnoException) => onError(errorReason(err), err));
  socket.setTimeout(limits.idleMs, () => {
    // A client that reads none of its answers for this long is idle too.
    if (computing) return;
    onError('idle_timeout');
    socket.destroy();
  });
}
