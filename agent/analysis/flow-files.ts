// Which files hold the flow logs to analyse: the paths a --files glob matches, or the
// file sinks of a config with their rotations (path, path.1 … path.keep; see
// sinks/jsonl-file.ts). Each file is looked at once here: its size and whether it ends
// in a newline, since a file being written (or cut by a crash) may end in part of a line.
import { open, stat } from 'node:fs/promises';
import { glob } from 'tinyglobby';
import type { Config } from '../config/types.js';

export interface FlowFile {
  path: string;
  size: number;
  /** The file's last byte is not a newline: its last line is incomplete and is skipped. */
  cutTail: boolean;
}

/** A set of files that cannot be analysed, with the reason naming the glob or sink. */
export class FlowFilesError extends Error {}

const NEWLINE = 0x0a;

/** Every regular file each pattern matches, in the order given, each path once; a pattern matching nothing is an error. */
export async function filesFromGlobs(patterns: readonly string[]): Promise<FlowFile[]> {
  if (patterns.length === 0) throw new FlowFilesError('no --files given');
  const paths: string[] = [];
  for (const pattern of patterns) {
    // A plain path is used as it is, so names with glob characters in them still work.
    const literal = await stat(pattern).then((st) => st.isFile(), () => false);
    const matched = literal ? [pattern] : (await glob(pattern, { absolute: true, onlyFiles: true, expandDirectories: false })).sort();
    if (matched.length === 0) throw new FlowFilesError(`--files ${pattern}: matches no file`);
    paths.push(...matched);
  }
  return describe([...new Set(paths)]);
}

/** The files of every flow log with a file sink, newest first, rotations included; an error when none exists. */
export async function filesFromConfig(config: Config, configPath: string): Promise<FlowFile[]> {
  const sinks = config.flowLogs.flatMap((fl, i) => (fl.sink.type === 'file' ? [{ i, id: fl.id, ...fl.sink }] : []));
  if (sinks.length === 0) throw new FlowFilesError(`${configPath}: no flow log has a file sink (flowLogs[].sink.type: file)`);
  const paths: string[] = [];
  for (const sink of sinks) {
    for (const candidate of [sink.path, ...Array.from({ length: sink.keep }, (_, k) => `${sink.path}.${k + 1}`)]) {
      if (await stat(candidate).then((st) => st.isFile(), () => false)) paths.push(candidate);
    }
  }
  if (paths.length === 0) {
    const where = sinks.map((s) => `flowLogs[${s.i}] (${s.id}): ${s.path}`).join('; ');
    throw new FlowFilesError(`${configPath}: no flow log file exists yet (${where}, and its rotations .1…)`);
  }
  return describe([...new Set(paths)]);
}

async function describe(paths: readonly string[]): Promise<FlowFile[]> {
  return Promise.all(paths.map(async (path) => {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      if (size === 0) return { path, size, cutTail: false };
      const last = Buffer.alloc(1);
      await fh.read(last, 0, 1, size - 1);
      return { path, size, cutTail: last[0] !== NEWLINE };
    } finally {
      await fh.close();
    }
  }));
}

/** The file's current state, to tell whether it changed since it was described. */
export async function redescribe(file: FlowFile): Promise<FlowFile> {
  const [now] = await describe([file.path]);
  return now!;
}
