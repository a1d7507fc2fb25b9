// The one line `mirrorflow session start|stop|add-source|remove-source` prints: what the
// agent did (or that nothing needed doing), not the whole session.

export type SessionEditOp = 'session.start' | 'session.stop' | 'session.addSource' | 'session.removeSource';

interface EditResult {
  changed?: boolean;
  session?: { id?: string; sources?: string[] } | null;
}

export function formatEditSummary(op: SessionEditOp, args: { id: string; interface?: string }, result: unknown): string {
  const { changed = false, session } = (result ?? {}) as EditResult;
  const id = session?.id ?? args.id;
  const sources = session?.sources?.join(', ') ?? '';
  const saved = changed ? ' (written to the config file)' : '';
  switch (op) {
    case 'session.start':
      return `session ${id} ${changed ? 'started' : 'was already enabled'}${saved}\n`;
    case 'session.stop':
      return `session ${id} ${changed ? 'stopped' : 'was already stopped'}${saved}\n`;
    case 'session.addSource':
      return `session ${id}: ${changed ? `added source ${args.interface}` : `${args.interface} was already a source`}; sources: ${sources}${saved}\n`;
    case 'session.removeSource':
      return `session ${id}: ${changed ? `removed source ${args.interface}` : `${args.interface} was not a source`}; sources: ${sources}${saved}\n`;
  }
}
