import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BackendError, BackendUnavailableError } from '../../src/errors.js';

// WebGPU's usage flags (fixed by the spec), so no globals need installing.
export const Usage = {
  MAP_READ: 0x1,
  COPY_SRC: 0x4,
  COPY_DST: 0x8,
  UNIFORM: 0x40,
  STORAGE: 0x80,
  QUERY_RESOLVE: 0x200,
} as const;
/** GPUMapMode.READ, for mapAsync. */
export const MAP_READ = 0x1;

const shaderDir = fileURLToPath(new URL('../../shaders/', import.meta.url));

export interface GpuContextOptions {
  /** Use f32 weights even when the adapter has shader-f16. */
  forceF32Weights?: boolean;
  /** Pretend the largest storage binding is this many bytes (tests of weight splitting). */
  maxBindingBytes?: number;
}

/**
 * The Dawn instance, adapter and device, and the shaders compiled on it. The object `create()`
 * returns is kept here on purpose: if it is garbage-collected while the device lives, Dawn's
 * event processing crashes the process.
 */
export class GpuContext {
  readonly f16Weights: boolean;
  readonly maxBindingBytes: number;
  readonly hasTimestamps: boolean;
  /** A CPU implementation (lavapipe, SwiftShader): fewer, larger workgroups pay off there. */
  readonly isSoftware: boolean;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private lost = false;
  private recording: GPUBuffer[] | null = null;
  private readonly pendingErrors: Promise<GPUError | null>[] = [];

  private constructor(
    readonly gpu: GPU,
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly description: string,
    options: GpuContextOptions,
  ) {
    this.f16Weights = device.features.has('shader-f16') && !options.forceF32Weights;
    this.hasTimestamps = device.features.has('timestamp-query');
    this.isSoftware = adapter.info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader/i.test(description);
    this.maxBindingBytes = Math.min(device.limits.maxStorageBufferBindingSize, options.maxBindingBytes ?? Infinity);
    void device.lost.then((info) => {
      this.lost = true;
      if (info.reason !== 'destroyed') console.error(`webgpu: device lost: ${info.message}`);
    });
  }

  static async open(options: GpuContextOptions = {}): Promise<GpuContext> {
    let webgpu: typeof import('webgpu');
    try {
      webgpu = await import('webgpu');
    } catch (e) {
      throw new BackendUnavailableError('webgpu', `the webgpu package (Dawn) does not load here: ${(e as Error).message.split('\n')[0]}`);
    }
    const gpu = (dawnInstance ??= webgpu.create([]));
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) {
      throw new BackendUnavailableError(
        'webgpu',
        'no WebGPU adapter (no GPU driver; on Debian run scripts/setup/install-vulkan.sh for a software Vulkan driver)',
      );
    }
    const wanted: GPUFeatureName[] = ['shader-f16', 'timestamp-query'];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const device = await adapter
      .requestDevice({
        requiredFeatures,
        requiredLimits: {
          maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
          maxBufferSize: l.maxBufferSize,
          maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
          maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
          maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
          maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        },
      })
      .catch((e: Error) => {
        throw new BackendUnavailableError('webgpu', `the adapter refused a device: ${e.message.split('\n')[0]}`);
      });
    device.addEventListener('uncapturederror', (event) => {
      console.error(`webgpu: ${(event as GPUUncapturedErrorEvent).error.message}`);
    });
    const info = adapter.info;
    const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'unknown adapter';
    const fallback = info.isFallbackAdapter ? ', software fallback' : '';
    const f16 = device.features.has('shader-f16') && !options.forceF32Weights ? 'f16' : 'f32';
    const description = `webgpu: ${name} (Dawn${fallback}, ${f16} weights)`;
    return new GpuContext(gpu, adapter, device, description, options);
  }

  get isLost(): boolean {
    return this.lost;
  }

  /** A compute pipeline for shaders/<name>.wgsl (with shaders/common.wgsl), compiled once per override set. */
  pipeline(name: string, constants: Record<string, number> = {}): GPUComputePipeline {
    const key = `${name} ${JSON.stringify(constants)}`;
    let pipeline = this.pipelines.get(key);
    if (!pipeline) {
      const header = this.f16Weights ? 'enable f16;\nalias wtype = f16;\n' : 'alias wtype = f32;\n';
      const code = header + readShader('common') + readShader(name);
      this.device.pushErrorScope('validation');
      const module = this.device.createShaderModule({ label: name, code });
      pipeline = this.device.createComputePipeline({ label: name, layout: 'auto', compute: { module, entryPoint: 'main', constants } });
      this.pendingErrors.push(this.device.popErrorScope());
      this.pipelines.set(key, pipeline);
    }
    return pipeline;
  }

  /** Runs `build` inside a validation error scope; checkErrors reports what it raised. */
  captureErrors<T>(build: () => T): T {
    this.device.pushErrorScope('validation');
    try {
      return build();
    } finally {
      this.pendingErrors.push(this.device.popErrorScope());
    }
  }

  /** Rejects with the first validation error (a WGSL compile error, a bad binding) raised since the last call. */
  async checkErrors(): Promise<void> {
    const pending = this.pendingErrors.splice(0);
    for (const error of await Promise.all(pending)) if (error) throw new BackendError('webgpu', error.message);
  }

  buffer(label: string, size: number, usage: number): GPUBuffer {
    const buffer = this.device.createBuffer({ label, size: Math.max(16, align(size, 4)), usage });
    this.recording?.push(buffer);
    return buffer;
  }

  /** Runs `build` and returns with it every buffer it created, so its owner can destroy them together. */
  recordBuffers<T>(build: () => T): { result: T; buffers: GPUBuffer[] } {
    const outer = this.recording;
    const buffers: GPUBuffer[] = [];
    this.recording = buffers;
    try {
      return { result: build(), buffers };
    } finally {
      this.recording = outer;
      outer?.push(...buffers);
    }
  }

  storage(label: string, size: number): GPUBuffer {
    return this.buffer(label, size, Usage.STORAGE | Usage.COPY_DST | Usage.COPY_SRC);
  }

  uniform(label: string, words: ArrayLike<number>, floatIndices: number[] = []): GPUBuffer {
    const data = new ArrayBuffer(align(words.length * 4, 16));
    const u32 = new Uint32Array(data);
    const f32 = new Float32Array(data);
    for (let i = 0; i < words.length; i++) {
      if (floatIndices.includes(i)) f32[i] = words[i]!;
      else u32[i] = words[i]!;
    }
    const buffer = this.buffer(label, data.byteLength, Usage.UNIFORM | Usage.COPY_DST);
    this.device.queue.writeBuffer(buffer, 0, data);
    return buffer;
  }

  bindGroup(pipeline: GPUComputePipeline, buffers: GPUBuffer[], label?: string): GPUBindGroup {
    return this.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }

  destroy(): void {
    this.pipelines.clear();
    this.device.destroy();
  }
}

/**
 * One Dawn instance per process, never released: a context's device can still deliver events
 * (device lost, finished work) after the context is destroyed, and if the instance has been
 * garbage-collected by then Dawn crashes the process.
 */
let dawnInstance: GPU | null = null;

const shaderCache = new Map<string, string>();

function readShader(name: string): string {
  let code = shaderCache.get(name);
  if (code === undefined) {
    code = readFileSync(`${shaderDir}${name}.wgsl`, 'utf8');
    shaderCache.set(name, code);
  }
  return code;
}

export function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Splits a workgroup count over x and y so neither exceeds the 65535 limit (shaders refold it). */
export function foldWorkgroups(count: number): [number, number] {
  if (count <= 65535) return [count, 1];
  const y = Math.ceil(count / 65535);
  return [Math.ceil(count / y), y];
}
