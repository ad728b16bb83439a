import type { RankCollectives } from '../../src/engine/backend.js';

/** Int32 words of the control buffer: arrivals at the barrier, and the barrier's generation. */
export const controlWords = 2;

/**
 * All-reduce and all-gather between tensor-parallel ranks in worker threads of one process,
 * over SharedArrayBuffers: each rank writes its part into its own slot, a barrier, then every
 * rank reads all slots in rank order (so every rank computes the same sum, bit for bit).
 */
export class SharedMemoryCollectives implements RankCollectives {
  private readonly control: Int32Array;
  private slots!: Float32Array;
  private slotSize = 0;

  constructor(
    readonly rank: number,
    readonly tpSize: number,
    control: SharedArrayBuffer,
  ) {
    this.control = new Int32Array(control);
  }

  /** The step's data buffer: tpSize slots of equal size (the main thread grows it as steps need). */
  useData(data: SharedArrayBuffer): void {
    this.slots = new Float32Array(data);
    this.slotSize = this.slots.length / this.tpSize;
  }

  allReduce(x: Float32Array): void {
    this.checkFits(x.length);
    this.slots.set(x, this.rank * this.slotSize);
    this.barrier();
    x.set(this.slots.subarray(0, x.length));
    for (let r = 1; r < this.tpSize; r++) {
      const base = r * this.slotSize;
      for (let i = 0; i < x.length; i++) x[i] = x[i]! + this.slots[base + i]!;
    }
    this.barrier();
  }

  allGather(x: Float32Array, out: Float32Array, rows: number, parts: readonly number[]): void {
    this.checkFits(x.length);
    this.slots.set(x, this.rank * this.slotSize);
    this.barrier();
    const width = parts.reduce((a, b) => a + b, 0);
    let col = 0;
    for (let r = 0; r < this.tpSize; r++) {
      const cols = parts[r]!;
      const base = r * this.slotSize;
      for (let row = 0; row < rows; row++) out.set(this.slots.subarray(base + row * cols, base + (row + 1) * cols), row * width + col);
      col += cols;
    }
    this.barrier();
  }

  private checkFits(n: number): void {
    if (n > this.slotSize) throw new Error(`tensor-parallel collective of ${n} floats over slots of ${this.slotSize}`);
  }

  /** Every rank waits here until all have arrived (a generation counter makes it reusable). */
  private barrier(): void {
    const generation = Atomics.load(this.control, 1);
    if (Atomics.add(this.control, 0, 1) === this.tpSize - 1) {
      Atomics.store(this.control, 0, 0);
      Atomics.add(this.control, 1, 1);
      Atomics.notify(this.control, 1);
      return;
    }
    while (Atomics.load(this.control, 1) === generation) Atomics.wait(this.control, 1, generation);
  }
}
