// The kernel's flow table (bpf/flowlog.bpf.h): the drain of what the TC programs counted on
// the interfaces a flow log covers (MirrorMaps.setFlowInterfaces). Entries carry the slot they were counted in
// (mf_state.count_slot); a drain flips it, lets the programs still on the old slot finish,
// then takes that slot (MirrorMaps), so no program adds to an entry while it is read and
// deleted. Read with batch lookups (a few syscalls for the map, not two per flow); per
// flow, not per packet.

import { mapBatches, mapDeleteBatch, perCpuValueSize, type MapHandle } from './libbpf.js';
import { FLOW_KEY_SIZE, FLOW_VAL_SIZE, flowSlotOf, sumFlow, type KernelFlow } from './layout.js';

/** Entries per batch syscall; more than any hash bucket holds (the kernel refuses a batch smaller than a bucket). */
const BATCH_ENTRIES = 4096;

/** Lets the event loop run (a scrape, the control socket) between two chunks of a long drain. */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export class KernelFlowMap {
  private readonly valueSize: number;

  constructor(private readonly flows: MapHandle, private readonly cpus: number) {
    this.valueSize = perCpuValueSize(FLOW_VAL_SIZE, cpus);
  }

  /**
   * Reads and deletes the entries counted in `slot` (both slots with 'all'), summed over the
   * CPUs, a chunk at a time with the event loop running in between (~2.6 µs per flow: 100k
   * flows would hold it for a quarter of a second).
   */
  async take(slot: number | 'all'): Promise<KernelFlow[]> {
    const out: KernelFlow[] = [];
    const taken = Buffer.alloc(FLOW_KEY_SIZE * BATCH_ENTRIES);
    for (const batch of mapBatches(this.flows, this.valueSize, BATCH_ENTRIES)) {
      let n = 0;
      for (let i = 0; i < batch.count; i++) {
        const key = batch.keys.subarray(i * FLOW_KEY_SIZE, (i + 1) * FLOW_KEY_SIZE);
        if (slot !== 'all' && flowSlotOf(key) !== slot) continue;
        out.push(sumFlow(key, batch.values.subarray(i * this.valueSize, (i + 1) * this.valueSize), this.cpus));
        key.copy(taken, n++ * FLOW_KEY_SIZE);
      }
      // Deleted after the chunk was read: the next lookup resumes from the kernel's bucket
      // token, which deleting entries already returned does not move.
      mapDeleteBatch(this.flows, taken, n);
      await yieldToLoop();
    }
    return out;
  }
}
