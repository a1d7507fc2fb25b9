// Which data plane a config gets: pcap when asked for; eBPF when asked for (an error when the
// kernel refuses); auto: eBPF when the programs load here, else pcap with the reason logged once.
import type { Config } from '../config/types.js';
import { ErrorCode, MirrorflowError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DataPlane } from './data-plane.js';
import { EbpfPlane } from './ebpf-plane.js';
import { PcapPlane } from './pcap-plane.js';

export class PlaneChooser {
  /** Why the eBPF plane could not be opened, so `auto` does not retry on every reload. */
  private ebpfUnusable: string | undefined;

  constructor(private readonly log: Logger) {}

  /** The plane for `config`: `current` when it is the one wanted (the eBPF plane stays open across generations), else a new one. */
  async choose(config: Config, current: DataPlane | undefined): Promise<DataPlane> {
    const wanted = config.agent.dataPlane;
    if (wanted === 'pcap') return current?.name === 'pcap' ? current : new PcapPlane();
    if (current?.name === 'ebpf') return current;
    if (wanted === 'auto' && this.ebpfUnusable !== undefined) return current ?? new PcapPlane();
    try {
      return await EbpfPlane.open(config.agent.control.socket, this.log);
    } catch (err) {
      this.ebpfUnusable = (err as Error).message;
      if (wanted === 'ebpf') {
        throw new MirrorflowError(ErrorCode.EBPF_UNUSABLE, `agent.dataPlane: ebpf is not usable on this host: ${this.ebpfUnusable}`, { cause: err });
      }
      this.log.warn({ reason: this.ebpfUnusable }, 'eBPF data plane not usable; dataPlane auto uses pcap');
      return current ?? new PcapPlane();
    }
  }
}
