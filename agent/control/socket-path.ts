// Where the CLI finds the running agent's control socket when `--socket` is not given: the
// `agent.control.socket` of the config file the agent runs with (the same default path).
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { DEFAULTS } from '../config/schema.js';
import { ErrorCode, MirrorflowError, fileErrorReason } from '../errors.js';

/**
 * The control socket named in `configPath`, or the default one when the file leaves it
 * out. The file is only read, not validated: `status` must work while someone edits it.
 * A missing file at the default location means the default socket; any other file that
 * cannot be read is an error naming it.
 */
export async function socketFromConfig(configPath: string, isDefaultPath: boolean): Promise<string> {
  let text: string;
  try {
    text = await readFile(configPath, 'utf8');
  } catch (err) {
    if (isDefaultPath && (err as NodeJS.ErrnoException).code === 'ENOENT') return DEFAULTS.controlSocket;
    throw new MirrorflowError(ErrorCode.SOCKET_PATH, `cannot read config ${configPath} for agent.control.socket: ${fileErrorReason(err)}; pass --socket PATH`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new MirrorflowError(ErrorCode.SOCKET_PATH, `config ${configPath} is not valid YAML (${(err as Error).message.split('\n')[0]}); pass --socket PATH`, { cause: err });
  }
  const socket = (doc as { agent?: { control?: { socket?: unknown } } } | null)?.agent?.control?.socket;
  if (socket === undefined) return DEFAULTS.controlSocket;
  if (typeof socket !== 'string' || socket === '') {
    throw new MirrorflowError(ErrorCode.SOCKET_PATH, `config ${configPath}: agent.control.socket is ${JSON.stringify(socket)}, so the agent has no control socket`);
  }
  return socket;
}
