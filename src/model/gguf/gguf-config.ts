import type { LlamaConfig, RopeScaling, WeightDType } from '../config.js';
import { UserError } from '../../errors.js';
import type { GgufMetadata, GgufModelFile } from './gguf-file.js';

/**
 * The LlamaConfig a llama-architecture GGUF implies. `ropeFactors` are the values of its
 * rope_freqs.weight tensor when it has one (llama3 scaling as llama.cpp stores it);
 * `dequantizedDType` is the dtype quantized matrices are read as.
 */
export function ggufConfig(model: GgufModelFile, ropeFactors: Float32Array | null, dequantizedDType: WeightDType): LlamaConfig {
  const m = model.metadata;
  const file = model.path;
  const arch = m['general.architecture'];
  if (arch !== 'llama') {
    throw new UserError(`${file}: unsupported architecture ${JSON.stringify(arch ?? null)} (sluice serves GGUF files of the "llama" architecture)`);
  }
  const read = (key: string): number | undefined => {
    const v = m[`llama.${key}`];
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new UserError(`${file}: llama.${key} must be a positive number, got ${String(v)}`);
    return n;
  };
  const need = (key: string): number => {
    const v = read(key);
    if (v === undefined) throw new UserError(`${file}: metadata llama.${key} is missing`);
    return v;
  };
  const embedding = model.tensors.get('token_embd.weight');
  if (!embedding) throw new UserError(`${file}: tensor "token_embd.weight" is missing`);
  const hiddenSize = need('embedding_length');
  const numHeads = need('attention.head_count');
  const numKvHeads = read('attention.head_count_kv') ?? numHeads;
  const headDim = read('attention.key_length') ?? hiddenSize / numHeads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new UserError(`${file}: head size ${headDim} must be an even integer`);
  const valueLength = read('attention.value_length') ?? headDim;
  if (valueLength !== headDim) throw new UserError(`${file}: key length ${headDim} and value length ${valueLength} differ (not supported)`);
  const ropeDims = read('rope.dimension_count') ?? headDim;
  if (ropeDims !== headDim) throw new UserError(`${file}: partial rotary embeddings (${ropeDims} of ${headDim} dims) are not supported`);
  if (numHeads % numKvHeads !== 0) throw new UserError(`${file}: ${numHeads} attention heads is not a multiple of ${numKvHeads} KV heads`);
  const ids = ['eos_token_id', 'eot_token_id', 'eom_token_id']
    .map((k) => m[`tokenizer.ggml.${k}`])
    .filter((v) => v !== undefined)
    .map(Number);
  const bos = m['tokenizer.ggml.bos_token_id'];
  return {
    vocabSize: embedding.dims[1]!,
    hiddenSize,
    intermediateSize: need('feed_forward_length'),
    numLayers: need('block_count'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: read('attention.layer_norm_rms_epsilon') ?? 1e-5,
    ropeTheta: read('rope.freq_base') ?? 10000,
    ropeScaling: ropeScaling(m, ropeFactors, headDim, file),
    maxPositionEmbeddings: read('context_length') ?? 2048,
    tieWordEmbeddings: !model.tensors.has('output.weight'),
    bosTokenId: bos === undefined ? null : Number(bos),
    eosTokenIds: [...new Set(ids)],
    dtype: matrixDType(model, dequantizedDType),
  };
}

function ropeScaling(m: GgufMetadata, factors: Float32Array | null, headDim: number, file: string): RopeScaling | null {
  const type = m['llama.rope.scaling.type'];
  if (factors !== null) {
    if (factors.length !== headDim / 2) throw new UserError(`${file}: rope_freqs.weight has ${factors.length} values, not ${headDim / 2}`);
    return { type: 'frequency-factors', factors: Array.from(factors) };
  }
  if (type === undefined || type === 'none') return null;
  if (type === 'linear') {
    const factor = Number(m['llama.rope.scaling.factor']);
    if (!(factor > 0)) throw new UserError(`${file}: llama.rope.scaling.factor must be a positive number`);
    return factor === 1 ? null : { type: 'linear', factor };
  }
  throw new UserError(`${file}: rope scaling ${JSON.stringify(type)} is not supported (linear, or llama3 as rope_freqs.weight)`);
}

/** The dtype the matrices come in: their float type when they all share one, else the dequantized dtype. */
function matrixDType(model: GgufModelFile, dequantized: WeightDType): WeightDType {
  const types = new Set([...model.tensors.values()].filter((t) => t.dims.length === 2).map((t) => t.type.name));
  if (types.size === 1) {
    const only = [...types][0];
    if (only === 'F32') return 'f32';
    if (only === 'F16') return 'f16';
    if (only === 'BF16') return 'bf16';
  }
  return dequantized;
}
