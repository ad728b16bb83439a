import { describe, expect, it } from 'vitest';
import { parameterCount, parseHfConfig, toHfConfig } from '../../src/model/config.js';
import { presets } from '../../src/model/presets.js';
import { UserError } from '../../src/errors.js';

// The config.json files of the released checkpoints (fields that do not matter to sluice omitted).
const llama2_7b = {
  architectures: ['LlamaForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: 'float16',
  transformers_version: '4.31.0.dev0',
  use_cache: true,
  vocab_size: 32000,
};
const llama3_8b = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: 128001,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 8192,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 128256,
};
const llama31_8b_instruct = {
  ...llama3_8b,
  eos_token_id: [128001, 128008, 128009],
  max_position_embeddings: 131072,
  mlp_bias: false,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
};
const llama32_1b = {
  ...llama31_8b_instruct,
  head_dim: 64,
  hidden_size: 2048,
  intermediate_size: 8192,
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rope_scaling: { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  tie_word_embeddings: true,
};

describe('parseHfConfig', () => {
  it('reads Llama 2: no rope_scaling, default rope_theta, eos as one integer, multi-head attention', () => {
    const c = parseHfConfig(llama2_7b, 'config.json');
    expect(c).toMatchObject({
      vocabSize: 32000,
      hiddenSize: 4096,
      intermediateSize: 11008,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 32,
      headDim: 128,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: 4096,
      tieWordEmbeddings: false,
      bosTokenId: 1,
      eosTokenIds: [2],
      dtype: 'f16',
    });
  });

  it('reads Llama 3: grouped-query attention and rope_theta', () => {
    const c = parseHfConfig(llama3_8b, 'config.json');
    expect(c).toMatchObject({ numHeads: 32, numKvHeads: 8, headDim: 128, ropeTheta: 500000, ropeScaling: null, eosTokenIds: [128001], dtype: 'bf16' });
  });

  it('reads Llama 3.1: llama3 rope scaling and eos as a list', () => {
    const c = parseHfConfig(llama31_8b_instruct, 'config.json');
    expect(c.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(c.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(c.maxPositionEmbeddings).toBe(131072);
  });

  it('reads Llama 3.2: tied embeddings and an explicit head_dim', () => {
    const c = parseHfConfig(llama32_1b, 'config.json');
    expect(c).toMatchObject({ hiddenSize: 2048, numHeads: 32, numKvHeads: 8, headDim: 64, tieWordEmbeddings: true });
    expect(c.ropeScaling).toMatchObject({ type: 'llama3', factor: 32 });
    // head_dim wins over hidden_size / num_attention_heads when they differ.
    expect(parseHfConfig({ ...llama32_1b, head_dim: 128 }, 'config.json').headDim).toBe(128);
  });

  it('round-trips through toHfConfig', () => {
    for (const json of [llama2_7b, llama3_8b, llama31_8b_instruct, llama32_1b]) {
      const c = parseHfConfig(json, 'a/config.json');
      expect(parseHfConfig(toHfConfig(c), 'b/config.json')).toEqual(c);
    }
  });

  it.each([
    ['hidden_size'],
    ['num_hidden_layers'],
    ['intermediate_size'],
    ['vocab_size'],
    ['num_attention_heads'],
  ])('names the file and the missing field %s', (field) => {
    const json: Record<string, unknown> = { ...llama3_8b };
    delete json[field];
    expect(() => parseHfConfig(json, '/models/x/config.json')).toThrow(UserError);
    expect(() => parseHfConfig(json, '/models/x/config.json')).toThrow(`/models/x/config.json: missing field "${field}"`);
  });

  it('rejects other architectures, malformed eos and rope scaling with the field named', () => {
    expect(() => parseHfConfig({ ...llama3_8b, architectures: ['MistralForCausalLM'] }, 'c.json')).toThrow(/c\.json: unsupported architecture "MistralForCausalLM"/);
    expect(() => parseHfConfig({ ...llama3_8b, eos_token_id: 'x' }, 'c.json')).toThrow(/"eos_token_id"/);
    expect(() => parseHfConfig({ ...llama3_8b, num_key_value_heads: 5 }, 'c.json')).toThrow(/num_key_value_heads 5/);
    expect(() => parseHfConfig({ ...llama31_8b_instruct, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'c.json')).toThrow(
      /rope_scaling\.low_freq_factor/,
    );
    expect(() => parseHfConfig({ ...llama3_8b, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'c.json')).toThrow(/"yarn"/);
    expect(() => parseHfConfig([], 'c.json')).toThrow(/c\.json: expected a JSON object/);
  });
});

describe('parameterCount', () => {
  it('matches the published sizes of Llama 3.2 1B (tied embeddings) and Llama 3.1 8B', () => {
    expect(parameterCount(presets['llama-3.2-1b']!)).toBe(1_235_814_400);
    expect(parameterCount(presets['llama-3.1-8b']!)).toBe(8_030_261_248);
  });
});
