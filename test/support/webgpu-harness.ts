import { BackendUnavailableError } from '../../src/errors.js';
import { GpuContext, MAP_READ, Usage, type GpuContextOptions } from '../../backends/webgpu/gpu.js';
import { encodeStep, type Dispatch, type StepShape } from '../../backends/webgpu/kernels.js';

/**
 * Opens a WebGPU device for tests. Without an adapter: in CI (CI set, e.g. CI=true) the error propagates so
 * the WebGPU tests fail loudly; elsewhere it says why and returns null so they are skipped.
 */
export async function openGpuForTests(options: GpuContextOptions = {}): Promise<GpuContext | null> {
  try {
    return await GpuContext.open(options);
  } catch (e) {
    const inCi = process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI.toLowerCase());
    if (!(e instanceof BackendUnavailableError) || inCi) throw e;
    console.warn(`skipping WebGPU tests: ${e.message}`);
    return null;
  }
}

/** Runs single kernels on device buffers: the op-level half of the parity tests. */
export class KernelHarness {
  readonly step: GPUBuffer;
  private readonly buffers: GPUBuffer[] = [];

  constructor(readonly ctx: GpuContext) {
    this.step = this.track(ctx.buffer('step', 32, Usage.UNIFORM | Usage.COPY_DST));
  }

  upload(data: Float32Array | Int32Array | Uint32Array | ArrayBuffer): GPUBuffer {
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const buffer = this.track(this.ctx.storage('test input', bytes.byteLength));
    if (bytes.byteLength > 0) this.ctx.device.queue.writeBuffer(buffer, 0, bytes);
    return buffer;
  }

  zeros(count: number): GPUBuffer {
    return this.upload(new Float32Array(count));
  }

  async run(dispatches: Dispatch[], shape: Partial<StepShape>): Promise<void> {
    const full: StepShape = { numTokens: 0, numSeqs: 0, numSplits: 1, splitSize: 0, numPenalties: 0, topLogprobs: 0, ...shape };
    await this.ctx.checkErrors();
    this.ctx.device.queue.writeBuffer(this.step, 0, encodeStep(full));
    const encoder = this.ctx.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const d of dispatches) {
      const workgroups = d.workgroups(full);
      if (!workgroups) continue;
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(workgroups[0], workgroups[1]);
    }
    pass.end();
    this.ctx.device.queue.submit([encoder.finish()]);
    await this.ctx.device.queue.onSubmittedWorkDone();
  }

  async readBytes(buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    const staging = this.ctx.buffer('test readback', bytes, Usage.MAP_READ | Usage.COPY_DST);
    const encoder = this.ctx.device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, Math.ceil(bytes / 4) * 4);
    this.ctx.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(MAP_READ);
    const copy = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return copy;
  }

  async readF32(buffer: GPUBuffer, count: number): Promise<Float32Array> {
    return new Float32Array(await this.readBytes(buffer, count * 4));
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }

  private track(buffer: GPUBuffer): GPUBuffer {
    this.buffers.push(buffer);
    return buffer;
  }
}
