// The catalogue of coded errors (fastify style): every error the agent raises on purpose
// carries a stable `code` a user can grep for in logs and docs.

export const ErrorCode = {
  /** The configuration text parsed but failed validation; see `ConfigError.issues`. */
  CONFIG_INVALID: 'MF_CONFIG_INVALID',
  /** The configuration file could not be read (missing, permissions, a directory...). */
  CONFIG_READ: 'MF_CONFIG_READ',
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
