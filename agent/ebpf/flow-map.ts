// The kernel's flow table (bpf/flowlog.bpf.h): which interfaces the TC programs count flows
// on, and the drain of what they counted. Entries carry the slot they were counted in
// (mf_state.count_slot); a drain flips it, lets the programs still on the old slot finish,
// then takes that slot (MirrorMaps), so no program adds to an entry while it is read and
// deleted. Read with batch lookups (a few syscalls for the map, not two per flow); per
// flow, not per packet.

import { mapDelete, mapDeleteBatch, mapForEachBatch, mapKeys, mapUpdate, perCpuValueSize, type MapHandle } from './libbpf.js';
import { FLOW_KEY_SIZE, FLOW_VAL_SIZE, flowSlotOf, sumFlow, u32Key, type KernelFlow } from './layout.js';

/** Entries per batch syscall; more than any hash bucket holds (the kernel refuses a batch smaller than a bucket). */
const BATCH_ENTRIES = 4096;

export class KernelFlowMap {
  private readonly valueSize: number;

  constructor(private readonly flows: MapHandle, private readonly interfaces: MapHandle, private readonly cpus: number) {
    this.valueSize = perCpuValueSize(FLOW_VAL_SIZE, cpus);
  }

  /** Counts flows on these interfaces (kernel ifindexes) only; the others' packets are not looked at. */
  setInterfaces(ifindexes: readonly number[]): void {
    const wanted = new Set(ifindexes);
    for (const key of mapKeys(this.interfaces)) if (!wanted.has(key.readUInt32LE(0))) mapDelete(this.interfaces, key);
    for (const ifindex of wanted) mapUpdate(this.interfaces, u32Key(ifindex), Buffer.from([1]));
  }

  /** Reads and deletes the entries counted in `slot` (both slots with 'all'), summed over the CPUs. */
  take(slot: number | 'all'): KernelFlow[] {
    const out: KernelFlow[] = [];
    const taken: Buffer[] = [];
    mapForEachBatch(this.flows, this.valueSize, BATCH_ENTRIES, (key, value) => {
      if (slot !== 'all' && flowSlotOf(key) !== slot) return;
      out.push(sumFlow(key, value, this.cpus));
      taken.push(Buffer.from(key));
    });
    for (let i = 0; i < taken.length; i += BATCH_ENTRIES) {
      const chunk = taken.slice(i, i + BATCH_ENTRIES);
      mapDeleteBatch(this.flows, Buffer.concat(chunk, chunk.length * FLOW_KEY_SIZE), chunk.length);
    }
    return out;
  }
}
