import type { LlamaConfig, WeightDType } from './config.js';
import { UserError } from '../errors.js';

export interface TensorInfo {
  name: string;
  dtype: WeightDType;
  shape: number[];
}

/**
 * Where a model's tensors come from, one tensor at a time, so a backend converts and uploads
 * each before the next is read and no second full copy of the model is ever held.
 */
export interface WeightSource {
  /** For logs and errors: the folder, file or "dummy weights (seed N)". */
  readonly description: string;
  /** True when the weights are random (dummy): logs say so. */
  readonly random: boolean;
  info(name: string): TensorInfo | undefined;
  /** The file that holds a tensor, for errors; sources without files leave it out. */
  locate?(name: string): string | undefined;
  /**
   * How a device can generate this tensor itself instead of receiving its bytes, when the source
   * can say (dummy weights); absent or null: read() it.
   */
  deviceRecipe?(name: string): DeviceWeightRecipe | null;
  /**
   * A tensor-parallel rank's slice of a tensor the device could generate (sharded-weights.ts):
   * the whole tensor's recipe and where the slice lies in it. Absent or null: read() it.
   */
  deviceWindowRecipe?(name: string): DeviceWindowRecipe | null;
  /** Raw little-endian bytes of one tensor in its stored dtype. */
  read(name: string): Promise<Uint8Array>;
  /**
   * Quantized sources (GGUF): a matrix's GGML blocks as stored, for backends that run those
   * blocks as they are; null for a tensor stored as floats. Absent: the source has no blocks.
   */
  storedBlocks?(name: string): Promise<StoredBlocks | null>;
  /** Quantized sources: the GGML type a tensor is stored in ("Q8_0", "Q4_0", "F32", ...). */
  storedType?(name: string): string | undefined;
  /**
   * Bytes [byteOffset, byteOffset + byteLength) of read(name), without reading the rest: what a
   * tensor-parallel rank's slice needs (src/model/sharded-weights.ts). Absent: read() and cut.
   */
  readRange?(name: string, byteOffset: number, byteLength: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** A matrix's GGML blocks: [rows, cols] (HF layout), each row cols / blockSize blocks in the file's byte layout. */
export interface StoredBlocks {
  /** The GGML type name: Q8_0, Q4_0, Q4_K, Q6_K. */
  type: string;
  shape: [number, number];
  bytes: Uint8Array;
}

/**
 * Element i of the tensor is offset + halfRange * (2 * u - 1), u the uniform draw that
 * src/model/dummy-weights.ts's dummyValue derives from hash32(key, i).
 */
export interface DeviceWeightRecipe {
  kind: 'hash-uniform';
  key: number;
  halfRange: number;
  offset: number;
}

/** Rows and columns of a 2-D tensor the device generates from the whole tensor's recipe: element (r, c) is the whole's (rowStart + r, colStart + c). */
export interface DeviceWindowRecipe {
  recipe: DeviceWeightRecipe;
  sourceCols: number;
  rowStart: number;
  colStart: number;
}

/** A tensor the Llama graph needs, with the shape the config implies (HF layout: [out, in]). */
export interface ExpectedTensor {
  name: string;
  shape: number[];
}

export function layerPrefix(layer: number): string {
  return `model.layers.${layer}`;
}

/** Every tensor of a LlamaForCausalLM checkpoint, in Hugging Face names and shapes. */
export function expectedTensors(config: LlamaConfig): ExpectedTensor[] {
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim: hd, vocabSize: v } = config;
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [v, h] }];
  for (let l = 0; l < config.numLayers; l++) {
    const p = layerPrefix(l);
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [h] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [numHeads * hd, h] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [numKvHeads * hd, h] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [numKvHeads * hd, h] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, numHeads * hd] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [inter, h] },
      { name: `${p}.mlp.up_proj.weight`, shape: [inter, h] },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, inter] },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [h] });
  if (!config.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [v, h] });
  return out;
}

/** Checks that a source holds every tensor the config needs, with the right shapes and a supported dtype. */
export function validateWeights(config: LlamaConfig, source: WeightSource): void {
  for (const t of expectedTensors(config)) {
    const info = source.info(t.name);
    if (!info) throw new UserError(`${source.description}: tensor "${t.name}" is missing`);
    if (info.shape.length !== t.shape.length || info.shape.some((d, i) => d !== t.shape[i])) {
      throw new UserError(
        `${source.locate?.(t.name) ?? source.description}: tensor "${t.name}" has shape [${info.shape}] but the config implies [${t.shape}]`,
      );
    }
  }
}
