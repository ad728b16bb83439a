import { MAP_READ, Usage, type GpuContext } from './gpu.js';
import type { Dispatch, StepShape } from './kernels.js';

export interface OpTiming {
  op: string;
  dispatches: number;
  ms: number;
}

/**
 * Per-op GPU time with timestamp queries: each dispatch gets its own compute pass with
 * timestamps at its start and end (only in profiling runs: passes cost a little each).
 */
export class StepProfiler {
  last: OpTiming[] | null = null;
  private querySet: GPUQuerySet | null = null;
  private resolve: GPUBuffer | null = null;
  private readback: GPUBuffer | null = null;
  private capacity = 0;
  private labels: string[] = [];

  private constructor(private readonly ctx: GpuContext) {}

  /** Null when the adapter has no timestamp queries. */
  static create(ctx: GpuContext): StepProfiler | null {
    return ctx.hasTimestamps ? new StepProfiler(ctx) : null;
  }

  encode(encoder: GPUCommandEncoder, dispatches: Dispatch[], shape: StepShape): void {
    const active = dispatches.map((d) => ({ d, workgroups: d.workgroups(shape) })).filter((a) => a.workgroups !== null);
    this.ensureCapacity(active.length);
    this.labels = active.map((a) => a.d.label);
    active.forEach(({ d, workgroups }, i) => {
      const pass = encoder.beginComputePass({
        label: d.label,
        timestampWrites: { querySet: this.querySet!, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
      });
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(workgroups![0], workgroups![1]);
      pass.end();
    });
    const bytes = active.length * 16;
    encoder.resolveQuerySet(this.querySet!, 0, 2 * active.length, this.resolve!, 0);
    encoder.copyBufferToBuffer(this.resolve!, 0, this.readback!, 0, bytes);
  }

  async collect(): Promise<void> {
    const bytes = this.labels.length * 16;
    await this.readback!.mapAsync(MAP_READ, 0, bytes);
    const stamps = new BigInt64Array(this.readback!.getMappedRange(0, bytes).slice(0));
    this.readback!.unmap();
    const byOp = new Map<string, OpTiming>();
    this.labels.forEach((op, i) => {
      const entry = byOp.get(op) ?? { op, dispatches: 0, ms: 0 };
      entry.dispatches++;
      entry.ms += Number(stamps[2 * i + 1]! - stamps[2 * i]!) / 1e6;
      byOp.set(op, entry);
    });
    this.last = [...byOp.values()];
  }

  destroy(): void {
    this.querySet?.destroy();
    this.resolve?.destroy();
    this.readback?.destroy();
  }

  private ensureCapacity(dispatches: number): void {
    if (dispatches <= this.capacity) return;
    this.destroy();
    this.capacity = Math.max(dispatches, 2 * this.capacity);
    this.querySet = this.ctx.device.createQuerySet({ type: 'timestamp', count: 2 * this.capacity });
    this.resolve = this.ctx.buffer('timestamps', this.capacity * 16, Usage.QUERY_RESOLVE | Usage.COPY_SRC);
    this.readback = this.ctx.buffer('timestamps readback', this.capacity * 16, Usage.MAP_READ | Usage.COPY_DST);
  }
}
