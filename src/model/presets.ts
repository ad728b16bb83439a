import type { LlamaConfig } from './config.js';

const llama3Tokens = { vocabSize: 128256, bosTokenId: 128000 } as const;
const llama31Rope = {
  ropeTheta: 500000,
  ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
} as const;
// Base models stop at <|end_of_text|>; instruct models also at <|eot_id|> and <|eom_id|>.
const llama31Eos = [128001, 128008, 128009];

/** Real Llama shapes with random weights, for benchmarking and tests. */
export const presets: Record<string, LlamaConfig> = {
  'llama-3.1-8b': {
    ...llama3Tokens,
    ...llama31Rope,
    hiddenSize: 4096,
    intermediateSize: 14336,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 131072,
    tieWordEmbeddings: false,
    eosTokenIds: llama31Eos,
    dtype: 'bf16',
  },
  'llama-3.1-70b': {
    ...llama3Tokens,
    ...llama31Rope,
    hiddenSize: 8192,
    intermediateSize: 28672,
    numLayers: 80,
    numHeads: 64,
    numKvHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 131072,
    tieWordEmbeddings: false,
    eosTokenIds: llama31Eos,
    dtype: 'bf16',
  },
  'llama-3.2-1b': {
    ...llama3Tokens,
    ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    hiddenSize: 2048,
    intermediateSize: 8192,
    numLayers: 16,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 64,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 131072,
    tieWordEmbeddings: true,
    eosTokenIds: llama31Eos,
    dtype: 'bf16',
  },
  'llama-3.2-3b': {
    ...llama3Tokens,
    ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    hiddenSize: 3072,
    intermediateSize: 8192,
    numLayers: 28,
    numHeads: 24,
    numKvHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 131072,
    tieWordEmbeddings: true,
    eosTokenIds: llama31Eos,
    dtype: 'bf16',
  },
  /** ~75M parameters (most in the embedding): answers quickly on any backend. */
  small: {
    ...llama3Tokens,
    ...llama31Rope,
    hiddenSize: 512,
    intermediateSize: 1536,
    numLayers: 8,
    numHeads: 8,
    numKvHeads: 2,
    headDim: 64,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 8192,
    tieWordEmbeddings: true,
    eosTokenIds: llama31Eos,
    dtype: 'bf16',
  },
  /** For tests: the real tokenizer, GQA and llama3 rope scaling, a few milliseconds per step. */
  tiny: {
    ...llama3Tokens,
    ...llama31Rope,
    hiddenSize: 64,
    intermediateSize: 160,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: true,
    eosTokenIds: llama31Eos,
    dtype: 'f32',
  },
};

/** Served when no --model-path is given: small enough to answer quickly on a laptop CPU. */
export const defaultPreset = 'small';

export function presetNames(): string[] {
  return Object.keys(presets);
}
