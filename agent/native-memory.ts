// Memory outside the JS heap (koffi), for structs the kernel reads or writes by address:
// sendmmsg's vectors and arena, BPF_PROG_TEST_RUN's frame and context.
import koffi from 'koffi';

export class NativeMemory {
  private ptr: unknown;
  /** The memory itself, zeroed at allocation. */
  readonly view: Buffer;
  /** Below 2^48 on every Linux ABI we run on, so a JS number holds it exactly. */
  readonly address: number;

  constructor(size: number) {
    this.ptr = koffi.alloc('uint8_t', size);
    this.view = Buffer.from(koffi.view(this.ptr, size));
    this.view.fill(0);
    this.address = Number(koffi.address(this.ptr));
  }

  /** Frees the memory; the view must not be used afterwards. */
  release(): void {
    if (this.ptr !== null) koffi.free(this.ptr);
    this.ptr = null;
  }
}
