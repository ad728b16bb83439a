import { hash32 } from './hash32.js';
import type { LlamaConfig, WeightDType } from './config.js';
import { bytesPerElement, f32ToBf16, f32ToF16 } from './dtype.js';
import { expectedTensors, type DeviceWeightRecipe, type TensorInfo, type WeightSource } from './weights.js';

/**
 * Deterministic random weights for benchmarking (`--load-format dummy`), as vLLM and SGLang
 * offer. Each element is a pure function of (seed, tensor name, index), so a GPU backend can
 * generate the same values on the device instead of uploading them.
 *
 * Scales keep activations and logits in a realistic range: matrices are uniform with variance
 * 1/fan_in, embedding rows have unit norm, layer norms are 1 +- 0.1 and the final norm about 3,
 * so logits are finite and spread (a standard deviation near 3). Output projections (o_proj,
 * down_proj) are scaled by 4/sqrt(2 * layers): the residual stream stays bounded at any depth,
 * yet each token's own layer outputs dominate it. With 1/sqrt(2 * layers), greedy decoding of
 * the tiny and small presets locked onto one repeated token after a few steps ("x x x x ..."),
 * which hides most bugs in parity tests.
 */
export class DummyWeights implements WeightSource {
  readonly random = true;
  readonly description: string;
  private readonly tensors = new Map<string, TensorInfo & { halfRange: number; offset: number }>();

  constructor(
    readonly config: LlamaConfig,
    readonly seed = 0,
    readonly dtype: WeightDType = config.dtype,
  ) {
    this.description = `dummy weights (seed ${seed}, ${dtype})`;
    for (const t of expectedTensors(config)) {
      this.tensors.set(t.name, { name: t.name, dtype, shape: t.shape, ...dummyDistribution(config, t.name, t.shape) });
    }
  }

  info(name: string): TensorInfo | undefined {
    const t = this.tensors.get(name);
    return t && { name: t.name, dtype: t.dtype, shape: t.shape };
  }

  /** Uniform in [offset - halfRange, offset + halfRange): what a device-side generator needs. */
  deviceRecipe(name: string): DeviceWeightRecipe {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`no dummy tensor ${name}`);
    return { kind: 'hash-uniform', key: tensorKey(this.seed, name), halfRange: t.halfRange, offset: t.offset };
  }

  async read(name: string): Promise<Uint8Array> {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`no dummy tensor ${name}`);
    return this.readRange(name, 0, t.shape.reduce((a, b) => a * b, 1) * bytesPerElement[this.dtype]);
  }

  /** Generates only the elements in the range (whole elements: offsets and lengths are multiples of the element size). */
  async readRange(name: string, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`no dummy tensor ${name}`);
    const size = bytesPerElement[this.dtype];
    const first = byteOffset / size;
    const n = byteLength / size;
    const key = tensorKey(this.seed, name);
    const bytes = new Uint8Array(byteLength);
    if (this.dtype === 'f32') {
      const out = new Float32Array(bytes.buffer);
      for (let i = 0; i < n; i++) out[i] = dummyValue(key, first + i, t.halfRange, t.offset);
    } else {
      const out = new Uint16Array(bytes.buffer);
      const encode = this.dtype === 'bf16' ? f32ToBf16 : f32ToF16;
      for (let i = 0; i < n; i++) out[i] = encode(dummyValue(key, first + i, t.halfRange, t.offset));
    }
    return bytes;
  }

  async close(): Promise<void> {}
}

function dummyDistribution(config: LlamaConfig, name: string, shape: number[]): { halfRange: number; offset: number } {
  const uniformWithVariance = (v: number) => Math.sqrt(3 * v);
  // The final norm's gain of ~3 spreads the logits (standard deviation near 3).
  if (name === 'model.norm.weight') return { halfRange: 0.3, offset: 3 };
  if (name.endsWith('layernorm.weight')) return { halfRange: 0.1, offset: 1 };
  // Unit-norm rows: small beside the layers' outputs in the residual stream, so a model with a
  // tied lm-head does not simply echo its input token.
  if (name === 'model.embed_tokens.weight') return { halfRange: uniformWithVariance(1 / shape[1]!), offset: 0 };
  const fanIn = shape[1]!;
  const residualScale = name.endsWith('o_proj.weight') || name.endsWith('down_proj.weight') ? 4 / Math.sqrt(2 * config.numLayers) : 1;
  return { halfRange: uniformWithVariance(1 / fanIn) * residualScale, offset: 0 };
}

/** FNV-1a of the tensor name mixed with the seed. */
export function tensorKey(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return hash32((h ^ hash32(seed >>> 0)) >>> 0);
}

/**
 * The value of element `index` (< 2^53) of a tensor with key `key`. The index is hashed before
 * the key is mixed in: with `hash(index ^ key)` two tensors would hold the same values in a
 * permuted order, and the model would be full of hidden correlations.
 */
export function dummyValue(key: number, index: number, halfRange: number, offset: number): number {
  const lo = index >>> 0;
  const hi = Math.floor(index / 4294967296);
  const h = hash32((hash32((hash32(lo) ^ hash32(hi ^ 0x9e3779b9)) >>> 0) + key) >>> 0);
  const u = (h >>> 8) * (1 / 16777216);
  return offset + (2 * u - 1) * halfRange;
}
