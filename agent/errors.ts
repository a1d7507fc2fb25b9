// The catalogue of coded errors (fastify style): every error a user can meet (config, CLI,
// control socket, sinks, data plane start) carries a stable `code` to grep for in logs and
// in docs/errors.md, which lists each with its cause and remedy. The control protocol's
// own codes are ControlErrorCode (agent/control/protocol.ts). Internal assertions (a
// state validation should have made impossible) stay plain Errors.

export const ErrorCode = {
  /** The configuration text parsed but failed validation; see `ConfigError.issues`. */
  CONFIG_INVALID: 'MF_CONFIG_INVALID',
  /** The configuration file could not be read (missing, permissions, a directory...). */
  CONFIG_READ: 'MF_CONFIG_READ',
  /** The metrics endpoint's address is malformed or cannot be bound (in use, not local). */
  METRICS_LISTEN: 'MF_METRICS_LISTEN',
  /** The control socket path is taken: not a socket, or another agent listens on it. */
  CONTROL_SOCKET: 'MF_CONTROL_SOCKET',
  /** A flow log sink cannot be built from its settings (IPFIX collector, message size). */
  SINK_INVALID: 'MF_SINK_INVALID',
  /** The pcap plane could not open its UDP sockets to a mirror target. */
  MIRROR_SOCKET: 'MF_MIRROR_SOCKET',
  /** bpf/mirror.bpf.o is missing, lacks a program or map, or does not match agent/ebpf/layout.ts. */
  EBPF_OBJECT: 'MF_EBPF_OBJECT',
  /** The config is valid but exceeds what the eBPF plane's maps hold (agent/limits.ts). */
  EBPF_LIMIT: 'MF_EBPF_LIMIT',
  /** `dataPlane: ebpf` was asked for and the eBPF plane cannot be opened here (the message says why). */
  EBPF_UNUSABLE: 'MF_EBPF_UNUSABLE',
  /** libbpf refused a call: loading (verifier, permissions), attaching, a map update. */
  LIBBPF: 'MF_LIBBPF',
  /** The eBPF plane's segmenting veth could not be set up (offloads stay on, ip/ethtool failed). */
  EBPF_SETUP: 'MF_EBPF_SETUP',
  /** A command the agent runs (tc, ip, ethtool) failed; the message has its argv, exit code and stderr. */
  COMMAND_FAILED: 'MF_COMMAND_FAILED',
  /** A capture file (`mirrorflow replay`, `flows` input) cannot be read or is not a pcap/pcapng of Ethernet frames. */
  CAPTURE_FILE: 'MF_CAPTURE_FILE',
  /** Capture on a source interface could not be opened: the interface, the AF_PACKET socket, its ring, or the wake-up. */
  CAPTURE_OPEN: 'MF_CAPTURE_OPEN',
  /** The capture prefilter derived from the rules does not compile or is larger than the kernel takes. */
  CAPTURE_FILTER: 'MF_CAPTURE_FILTER',
  /** A CLI command cannot learn the agent's control socket from the config; pass --socket. */
  SOCKET_PATH: 'MF_SOCKET_PATH',
  /** `mirrorflow replay` cannot use its input as given (MAC, interface, directions). */
  REPLAY_INPUT: 'MF_REPLAY_INPUT',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export class MirrorflowError extends Error {
  readonly code: ErrorCodeValue;

  constructor(code: ErrorCodeValue, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** `message [code]` for a coded error, the message alone otherwise: what the CLI prints. */
export function describeError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('MF_') ? `${message} [${code}]` : message;
}

/** One validation problem: `path` is JS style (`sessions[0].vni`), `message` says what was expected and got. */
export interface ConfigIssue {
  path: string;
  message: string;
}

/** One issue per line, `<path>: <reason>`. */
export function formatIssues(issues: readonly ConfigIssue[]): string {
  return issues.map((i) => `${i.path}: ${i.message}`).join('\n');
}

export class ConfigError extends MirrorflowError {
  readonly issues: readonly ConfigIssue[];
  /** Where the text came from (a file path), when known. */
  readonly source: string | undefined;

  /** `source` names where the text came from (a file path) for the message. */
  constructor(issues: readonly ConfigIssue[], source?: string) {
    const where = source === undefined ? 'config' : `config ${source}`;
    const count = issues.length === 1 ? '1 error' : `${issues.length} errors`;
    super(ErrorCode.CONFIG_INVALID, `${where} is invalid (${count}):\n${formatIssues(issues)}`);
    this.issues = Object.freeze(issues.map((i) => Object.freeze({ ...i })));
    this.source = source;
  }
}

export class ConfigReadError extends MirrorflowError {
  readonly path: string;

  constructor(path: string, reason: string, cause?: unknown) {
    super(ErrorCode.CONFIG_READ, `cannot read config ${path}: ${reason}`, { cause });
    this.path = path;
  }
}

const FILE_ERROR_REASONS: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'it is a directory',
  ELOOP: 'too many levels of symbolic links',
};

/** Why a file could not be read, in words ("no such file"), instead of Node's "ENOENT: ... open 'x'". */
export function fileErrorReason(err: unknown): string {
  return FILE_ERROR_REASONS[(err as NodeJS.ErrnoException).code ?? ''] ?? (err as Error).message;
}
