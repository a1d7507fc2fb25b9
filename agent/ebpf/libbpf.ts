// The few libbpf calls the eBPF data plane needs, through koffi (Debian's libbpf.so.1).
// Structs with a leading `sz` (bpf_tc_hook, bpf_tc_opts, bpf_test_run_opts) are built as
// Buffers with the x86-64/aarch64 LP64 layout of libbpf 1.x headers; koffi passes a Buffer
// for a `void *` parameter as a pointer to its memory, so libbpf's writes land in it.

import koffi from 'koffi';
import { NativeMemory } from '../native-memory.js';
import { ErrorCode, MirrorflowError } from '../errors.js';

const lib = koffi.load('libbpf.so.1');

const fn = {
  openFile: lib.func('void *bpf_object__open_file(const char *path, void *opts)'),
  load: lib.func('int bpf_object__load(void *obj)'),
  close: lib.func('void bpf_object__close(void *obj)'),
  findProgram: lib.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
  setAutoload: lib.func('int bpf_program__set_autoload(void *prog, bool autoload)'),
  attachProgram: lib.func('void *bpf_program__attach(void *prog)'),
  destroyLink: lib.func('int bpf_link__destroy(void *link)'),
  programFd: lib.func('int bpf_program__fd(void *prog)'),
  findMap: lib.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
  mapFd: lib.func('int bpf_map__fd(void *map)'),
  mapKeySize: lib.func('uint32_t bpf_map__key_size(void *map)'),
  mapValueSize: lib.func('uint32_t bpf_map__value_size(void *map)'),
  update: lib.func('int bpf_map_update_elem(int fd, void *key, void *value, uint64_t flags)'),
  lookup: lib.func('int bpf_map_lookup_elem(int fd, void *key, void *value)'),
  remove: lib.func('int bpf_map_delete_elem(int fd, void *key)'),
  lookupAndDelete: lib.func('int bpf_map_lookup_and_delete_elem(int fd, void *key, void *value)'),
  nextKey: lib.func('int bpf_map_get_next_key(int fd, void *key, void *next)'),
  lookupBatch: lib.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, void *opts)'),
  deleteBatch: lib.func('int bpf_map_delete_batch(int fd, void *keys, _Inout_ uint32_t *count, void *opts)'),
  setMaxEntries: lib.func('int bpf_map__set_max_entries(void *map, uint32_t max_entries)'),
  possibleCpus: lib.func('int libbpf_num_possible_cpus(void)'),
  hookCreate: lib.func('int bpf_tc_hook_create(void *hook)'),
  hookDestroy: lib.func('int bpf_tc_hook_destroy(void *hook)'),
  tcAttach: lib.func('int bpf_tc_attach(void *hook, void *opts)'),
  tcDetach: lib.func('int bpf_tc_detach(void *hook, void *opts)'),
  tcQuery: lib.func('int bpf_tc_query(void *hook, void *opts)'),
  testRun: lib.func('int bpf_prog_test_run_opts(int fd, void *opts)'),
  objInfo: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)'),
  setPrint: lib.func('void *libbpf_set_print(void *fn)'),
};

const PrintFn = koffi.proto('int mf_libbpf_print(int level, const char *fmt, void *args)');

export const BPF_ANY = 0n;
export const TC_INGRESS = 1;
export const TC_EGRESS = 2;
const TC_HOOK_SIZE = 24;
const TC_OPTS_SIZE = 32;
const TEST_RUN_OPTS_SIZE = 80;
const EEXIST = 17;
const ENOENT = 2;

export class LibbpfError extends MirrorflowError {
  constructor(what: string, readonly errno: number) {
    super(ErrorCode.LIBBPF, `${what}: ${errnoText(errno)}`);
  }
}

function errnoText(errno: number): string {
  const names: Record<number, string> = {
    1: 'EPERM (operation not permitted: run as root / CAP_BPF+CAP_NET_ADMIN)', 2: 'ENOENT', 7: 'E2BIG',
    13: 'EACCES (rejected by the verifier)', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV (no such interface)',
    22: 'EINVAL', 95: 'EOPNOTSUPP',
  };
  return names[errno] ?? `errno ${errno}`;
}

/** libbpf returns -errno (and sets errno); koffi.errno() covers the NULL-pointer returns. */
function check(what: string, rc: number): number {
  if (rc < 0) throw new LibbpfError(what, -rc);
  return rc;
}

let silenced = false;
/** libbpf prints verifier and probe chatter to stderr by default; route it nowhere. */
function silenceLibbpf(): void {
  if (silenced) return;
  silenced = true;
  const cb = koffi.register(() => 0, koffi.pointer(PrintFn));
  fn.setPrint(cb);
}

export interface MapHandle {
  name: string;
  fd: number;
  keySize: number;
  valueSize: number;
}

export class BpfObject {
  private constructor(private obj: unknown) {}

  /**
   * Opens the ELF object at `path` and loads (verifies) its programs, except those in
   * `skip`, which are left out of the kernel entirely.
   */
  static load(path: string, skip: readonly string[] = [], maxEntries: Readonly<Record<string, number>> = {}): BpfObject {
    silenceLibbpf();
    const obj = fn.openFile(path, null);
    if (!obj) throw new LibbpfError(`open ${path}`, koffi.errno());
    for (const name of skip) {
      const prog = fn.findProgram(obj, name);
      if (prog) fn.setAutoload(prog, false);
    }
    for (const [name, entries] of Object.entries(maxEntries)) {
      const map = fn.findMap(obj, name);
      const rc = map ? (fn.setMaxEntries(map, entries) as number) : -ENOENT;
      if (rc < 0) {
        fn.close(obj);
        throw new LibbpfError(`size map ${name} to ${entries} entries`, -rc);
      }
    }
    const rc = fn.load(obj) as number;
    if (rc < 0) {
      fn.close(obj);
      throw new LibbpfError(`load ${path}`, -rc);
    }
    return new BpfObject(obj);
  }

  /** Attaches a tracing program where its section says (tp_btf/...); returns the link. */
  attach(name: string): BpfLink {
    const prog = fn.findProgram(this.obj, name);
    if (!prog) throw new MirrorflowError(ErrorCode.EBPF_OBJECT, `BPF object has no program ${name}`);
    const link = fn.attachProgram(prog);
    if (!link) throw new LibbpfError(`attach ${name}`, koffi.errno());
    return new BpfLink(link);
  }

  programFd(name: string): number {
    const prog = fn.findProgram(this.obj, name);
    if (!prog) throw new MirrorflowError(ErrorCode.EBPF_OBJECT, `BPF object has no program ${name}`);
    return check(`fd of program ${name}`, fn.programFd(prog) as number);
  }

  map(name: string): MapHandle {
    const map = fn.findMap(this.obj, name);
    if (!map) throw new MirrorflowError(ErrorCode.EBPF_OBJECT, `BPF object has no map ${name}`);
    return {
      name,
      fd: check(`fd of map ${name}`, fn.mapFd(map) as number),
      keySize: fn.mapKeySize(map) as number,
      valueSize: fn.mapValueSize(map) as number,
    };
  }

  /** Closes the object: programs not attached anywhere and maps are freed by the kernel. */
  close(): void {
    if (this.obj) fn.close(this.obj);
    this.obj = null;
  }
}

/** An attached tracing program; destroying the link detaches it. */
export class BpfLink {
  constructor(private link: unknown) {}

  destroy(): void {
    if (this.link) fn.destroyLink(this.link);
    this.link = null;
  }
}

export function mapUpdate(map: MapHandle, key: Buffer, value: Buffer): void {
  check(`update ${map.name}`, fn.update(map.fd, key, value, BPF_ANY) as number);
}

/** False when the key is absent. */
export function mapLookup(map: MapHandle, key: Buffer, value: Buffer): boolean {
  const rc = fn.lookup(map.fd, key, value) as number;
  if (rc === -ENOENT) return false;
  check(`lookup ${map.name}`, rc);
  return true;
}

export function mapDelete(map: MapHandle, key: Buffer): void {
  const rc = fn.remove(map.fd, key) as number;
  if (rc !== -ENOENT) check(`delete ${map.name}`, rc);
}

/** Reads and removes one entry; false when the key is absent. */
export function mapLookupAndDelete(map: MapHandle, key: Buffer, value: Buffer): boolean {
  const rc = fn.lookupAndDelete(map.fd, key, value) as number;
  if (rc === -ENOENT) return false;
  check(`lookup and delete ${map.name}`, rc);
  return true;
}

/** Every key of a hash map (a snapshot; entries may change meanwhile). */
export function mapKeys(map: MapHandle): Buffer[] {
  const keys: Buffer[] = [];
  let prev: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(map.keySize);
    const rc = fn.nextKey(map.fd, prev, next) as number;
    if (rc === -ENOENT) return keys;
    check(`next key of ${map.name}`, rc);
    keys.push(next);
    prev = next;
  }
}

/** Per-CPU map values as the kernel copies them out: each CPU's value 8-byte aligned. */
export const perCpuValueSize = (valueSize: number, cpus: number): number => Math.ceil(valueSize / 8) * 8 * cpus;

/** One chunk of a batch lookup: `count` keys and values laid end to end. */
export interface MapBatch {
  keys: Buffer;
  values: Buffer;
  count: number;
}

/**
 * Every entry of a hash map, in chunks of up to `chunk` entries (BPF_MAP_LOOKUP_BATCH: a few
 * syscalls for the whole map, not two per entry); `valueSize` is one entry's value as copied
 * out (perCpuValueSize for a per-CPU map). Each chunk's buffers are reused by the next.
 */
export function* mapBatches(map: MapHandle, valueSize: number, chunk: number): Generator<MapBatch> {
  const batch = { keys: Buffer.alloc(map.keySize * chunk), values: Buffer.alloc(valueSize * chunk), count: 0 };
  const token = Buffer.alloc(8);
  const next = Buffer.alloc(8);
  let first = true;
  for (;;) {
    const count = [chunk];
    const rc = fn.lookupBatch(map.fd, first ? null : token, next, batch.keys, batch.values, count, null) as number;
    if (rc < 0 && rc !== -ENOENT) check(`batch lookup of ${map.name}`, rc);
    batch.count = count[0]!;
    if (batch.count > 0) yield batch;
    if (rc === -ENOENT) return;
    next.copy(token);
    first = false;
  }
}

/** Deletes `count` keys laid end to end in `keys` (BPF_MAP_DELETE_BATCH); absent ones are an error. */
export function mapDeleteBatch(map: MapHandle, keys: Buffer, count: number): void {
  if (count === 0) return;
  const n = [count];
  check(`batch delete of ${map.name} (${n[0]} of ${count} deleted)`, fn.deleteBatch(map.fd, keys, n, null) as number);
}

export const possibleCpus = (): number => check('possible CPUs', fn.possibleCpus() as number);

function tcHook(ifindex: number, attachPoint: number): Buffer {
  const hook = Buffer.alloc(TC_HOOK_SIZE);
  hook.writeBigUInt64LE(BigInt(TC_HOOK_SIZE), 0);
  hook.writeInt32LE(ifindex, 8);
  hook.writeUInt32LE(attachPoint, 12);
  return hook;
}

function tcOpts(handle: number, priority: number, progFd = 0): Buffer {
  const opts = Buffer.alloc(TC_OPTS_SIZE);
  opts.writeBigUInt64LE(BigInt(TC_OPTS_SIZE), 0);
  opts.writeInt32LE(progFd, 8);
  opts.writeUInt32LE(handle, 20);
  opts.writeUInt32LE(priority, 24);
  return opts;
}

/** Creates the clsact qdisc; returns false when it already existed. */
export function tcHookCreate(ifindex: number): boolean {
  const rc = fn.hookCreate(tcHook(ifindex, TC_INGRESS)) as number;
  if (rc === -EEXIST) return false;
  check(`create clsact on ifindex ${ifindex}`, rc);
  return true;
}

/** Removes the clsact qdisc (and every filter on it). */
export function tcHookDestroy(ifindex: number): void {
  const rc = fn.hookDestroy(tcHook(ifindex, TC_INGRESS | TC_EGRESS)) as number;
  if (rc !== -ENOENT && rc !== -22) check(`destroy clsact on ifindex ${ifindex}`, rc);
}

/** Attaches (or replaces) the filter handle/priority with `progFd`. */
export function tcAttach(ifindex: number, attachPoint: number, progFd: number, handle: number, priority: number): void {
  const BPF_TC_F_REPLACE = 1;
  const opts = tcOpts(handle, priority, progFd);
  opts.writeUInt32LE(BPF_TC_F_REPLACE, 12);
  check(`attach tc program to ifindex ${ifindex}`, fn.tcAttach(tcHook(ifindex, attachPoint), opts) as number);
}

/** Detaches the filter handle/priority; absent filters and interfaces are fine. */
export function tcDetach(ifindex: number, attachPoint: number, handle: number, priority: number): void {
  const rc = fn.tcDetach(tcHook(ifindex, attachPoint), tcOpts(handle, priority)) as number;
  if (rc !== -ENOENT && rc !== -19 && rc !== -22) check(`detach tc program from ifindex ${ifindex}`, rc);
}

/** Program id attached at handle/priority, or 0 when none. */
export function tcQuery(ifindex: number, attachPoint: number, handle: number, priority: number): number {
  const opts = tcOpts(handle, priority);
  const rc = fn.tcQuery(tcHook(ifindex, attachPoint), opts) as number;
  if (rc === -ENOENT || rc === -19 || rc === -22) return 0;
  check(`query tc on ifindex ${ifindex}`, rc);
  return opts.readUInt32LE(16);
}

/** struct bpf_map_info (linux/bpf.h): the part up to its id. */
const MAP_INFO_SIZE = 8;

/** The kernel's id of a map (what `bpftool map show id N` takes). */
export function mapId(map: MapHandle): number {
  const info = Buffer.alloc(MAP_INFO_SIZE);
  check(`info of map ${map.name}`, fn.objInfo(map.fd, info, [MAP_INFO_SIZE]) as number);
  return info.readUInt32LE(4);
}

/** struct bpf_prog_info (linux/bpf.h, kernel 5.16+): its size and where verified_insns sits. */
const PROG_INFO_SIZE = 232;
const PROG_INFO_VERIFIED_INSNS = 216;

/** Instructions the verifier processed when it loaded the program (0 on kernels before 5.16). */
export function verifiedInstructions(progFd: number): number {
  const info = Buffer.alloc(PROG_INFO_SIZE);
  const len = [PROG_INFO_SIZE];
  check('program info', fn.objInfo(progFd, info, len) as number);
  return info.readUInt32LE(PROG_INFO_VERIFIED_INSNS);
}

export interface TestRunResult {
  retval: number;
  /** Mean nanoseconds per run as the kernel measured it. */
  durationNs: number;
  /** The __sk_buff after the run (cb[], mark, ...). */
  ctxOut: Buffer;
  /** The packet after the run (a program may have cut or changed it); a view, valid until the next run. */
  dataOut: Buffer;
}

/**
 * __sk_buff: big enough for every field up to the kernel's last; the kernel checks the tail is
 * zero. Offsets are the UAPI's (stable); test/unit/kernel-contract.test.ts checks them against BTF.
 */
export const SKB_CTX_SIZE = 192;
export const SKB_MARK_OFFSET = 8;
export const SKB_IFINDEX_OFFSET = 40;
export const SKB_CB_OFFSET = 48;
export const SKB_GSO_SEGS_OFFSET = 164;
export const SKB_GSO_SIZE_OFFSET = 176;

const MAX_TEST_FRAME = 65535;
let testMemory: { data: NativeMemory; dataOut: NativeMemory; ctx: NativeMemory; ctxOut: NativeMemory; opts: Buffer } | undefined;

/** BPF_PROG_TEST_RUN of a TC program on one frame. */
export function testRun(progFd: number, frame: Buffer, ctxIn: Buffer, repeat = 1): TestRunResult {
  if (frame.length > MAX_TEST_FRAME || ctxIn.length !== SKB_CTX_SIZE) throw new Error('test run: frame or context size out of range');
  testMemory ??= {
    data: new NativeMemory(MAX_TEST_FRAME),
    dataOut: new NativeMemory(MAX_TEST_FRAME),
    ctx: new NativeMemory(SKB_CTX_SIZE),
    ctxOut: new NativeMemory(SKB_CTX_SIZE),
    opts: Buffer.alloc(TEST_RUN_OPTS_SIZE),
  };
  const { data, dataOut, ctx, ctxOut, opts } = testMemory;
  frame.copy(data.view, 0);
  ctxIn.copy(ctx.view, 0);
  opts.fill(0);
  opts.writeBigUInt64LE(BigInt(TEST_RUN_OPTS_SIZE), 0);
  opts.writeBigUInt64LE(BigInt(data.address), 8);
  opts.writeBigUInt64LE(BigInt(dataOut.address), 16);
  opts.writeUInt32LE(frame.length, 24);
  opts.writeUInt32LE(MAX_TEST_FRAME, 28);
  opts.writeBigUInt64LE(BigInt(ctx.address), 32);
  opts.writeBigUInt64LE(BigInt(ctxOut.address), 40);
  opts.writeUInt32LE(SKB_CTX_SIZE, 48);
  opts.writeUInt32LE(SKB_CTX_SIZE, 52);
  opts.writeInt32LE(repeat, 60);
  check('BPF_PROG_TEST_RUN', fn.testRun(progFd, opts) as number);
  return {
    retval: opts.readUInt32LE(56), durationNs: opts.readUInt32LE(64), ctxOut: Buffer.from(ctxOut.view),
    dataOut: dataOut.view.subarray(0, opts.readUInt32LE(28)),
  };
}
