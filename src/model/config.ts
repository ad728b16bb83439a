import { UserError } from '../errors.js';

/** rope_scaling of type "llama3" (Llama 3.1 and later). */
export interface Llama3RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** rope_scaling of type "linear" (position interpolation, seen in Llama 2 fine-tunes). */
export interface LinearRopeScaling {
  type: 'linear';
  factor: number;
}

/**
 * Per-frequency divisors of the rotary angle, one per pair of head dimensions: how llama.cpp's
 * GGUF files carry llama3 scaling (the `rope_freqs.weight` tensor).
 */
export interface FrequencyFactorsRopeScaling {
  type: 'frequency-factors';
  factors: number[];
}

export type RopeScaling = Llama3RopeScaling | LinearRopeScaling | FrequencyFactorsRopeScaling;

export type WeightDType = 'bf16' | 'f16' | 'f32';

/** The shape and numerics of a Llama model, independent of where its weights come from. */
export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  dtype: WeightDType;
}

type Json = Record<string, unknown>;

/** Parses a Hugging Face config.json of a LlamaForCausalLM; `file` names it in errors. */
export function parseHfConfig(json: unknown, file: string): LlamaConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new UserError(`${file}: expected a JSON object`);
  }
  const c = json as Json;
  const architectures = c.architectures;
  const arch = Array.isArray(architectures) ? architectures[0] : undefined;
  if (arch !== 'LlamaForCausalLM' && !(arch === undefined && c.model_type === 'llama')) {
    throw new UserError(
      `${file}: unsupported architecture ${JSON.stringify(arch ?? c.model_type ?? null)}; sluice serves LlamaForCausalLM`,
    );
  }
  const int = (field: string, fallback?: number): number => {
    const v = c[field] ?? fallback;
    if (v === undefined) throw new UserError(`${file}: missing field "${field}"`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new UserError(`${file}: field "${field}" must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const num = (field: string, fallback?: number): number => {
    const v = c[field] ?? fallback;
    if (v === undefined) throw new UserError(`${file}: missing field "${field}"`);
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new UserError(`${file}: field "${field}" must be a positive number, got ${JSON.stringify(v)}`);
    }
    return v;
  };

  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  const headDim = c.head_dim == null ? hiddenSize / numHeads : int('head_dim');
  if (!Number.isInteger(headDim)) {
    throw new UserError(`${file}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  }
  if (numHeads % numKvHeads !== 0) {
    throw new UserError(
      `${file}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  }
  if (headDim % 2 !== 0) throw new UserError(`${file}: head_dim ${headDim} must be even for rotary embeddings`);

  const eos = c.eos_token_id;
  let eosTokenIds: number[];
  if (eos == null) eosTokenIds = [];
  else if (typeof eos === 'number') eosTokenIds = [eos];
  else if (Array.isArray(eos) && eos.every((e) => typeof e === 'number')) eosTokenIds = eos as number[];
  else throw new UserError(`${file}: field "eos_token_id" must be an integer or a list of integers`);
  const bos = c.bos_token_id;
  if (bos != null && typeof bos !== 'number') {
    throw new UserError(`${file}: field "bos_token_id" must be an integer`);
  }

  return {
    vocabSize: int('vocab_size'),
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(c.rope_scaling, file),
    maxPositionEmbeddings: int('max_position_embeddings', 2048),
    tieWordEmbeddings: c.tie_word_embeddings === true,
    bosTokenId: (bos as number | undefined) ?? null,
    eosTokenIds,
    dtype: parseDtype(c.torch_dtype ?? c.dtype, file),
  };
}

function parseDtype(v: unknown, file: string): WeightDType {
  if (v == null || v === 'bfloat16') return 'bf16';
  if (v === 'float16') return 'f16';
  if (v === 'float32') return 'f32';
  throw new UserError(`${file}: unsupported torch_dtype ${JSON.stringify(v)} (bfloat16, float16 or float32)`);
}

function parseRopeScaling(v: unknown, file: string): RopeScaling | null {
  if (v == null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new UserError(`${file}: field "rope_scaling" must be an object`);
  const s = v as Json;
  const type = s.rope_type ?? s.type;
  const need = (field: string): number => {
    const x = s[field];
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) {
      throw new UserError(`${file}: field "rope_scaling.${field}" must be a positive number`);
    }
    return x;
  };
  if (type === 'llama3') {
    return {
      type: 'llama3',
      factor: need('factor'),
      lowFreqFactor: need('low_freq_factor'),
      highFreqFactor: need('high_freq_factor'),
      originalMaxPositionEmbeddings: need('original_max_position_embeddings'),
    };
  }
  if (type === 'linear') return { type: 'linear', factor: need('factor') };
  if (type === 'default') return null;
  throw new UserError(`${file}: unsupported rope_scaling type ${JSON.stringify(type)} (llama3 or linear)`);
}

/** Writes a config back in Hugging Face's config.json form (used to save checkpoints). */
export function toHfConfig(config: LlamaConfig): Json {
  const torchDtype = { bf16: 'bfloat16', f16: 'float16', f32: 'float32' }[config.dtype];
  const s = config.ropeScaling;
  if (s?.type === 'frequency-factors') throw new UserError('rope scaling given as per-frequency factors (from a GGUF file) has no config.json form');
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling:
      s === null
        ? null
        : s.type === 'llama3'
          ? {
              rope_type: 'llama3',
              factor: s.factor,
              low_freq_factor: s.lowFreqFactor,
              high_freq_factor: s.highFreqFactor,
              original_max_position_embeddings: s.originalMaxPositionEmbeddings,
            }
          : { rope_type: 'linear', factor: s.factor },
    max_position_embeddings: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds,
    torch_dtype: torchDtype,
  };
}

/** Number of parameters, for logs and memory estimates. */
export function parameterCount(config: LlamaConfig): number {
  const { hiddenSize: h, intermediateSize: i, numHeads, numKvHeads, headDim, vocabSize: v } = config;
  const attention = h * numHeads * headDim * 2 + h * numKvHeads * headDim * 2;
  const perLayer = attention + 3 * h * i + 2 * h;
  return v * h * (config.tieWordEmbeddings ? 1 : 2) + config.numLayers * perLayer + h;
}
