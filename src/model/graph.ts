import type { LlamaConfig } from './config.js';
import { layerPrefix } from './weights.js';

/**
 * The Llama forward pass, written once as data. Backends compile this list at load time (a
 * kernel sequence, a captured CUDA graph, a prebuilt WebGPU command list) and replay it every
 * step; the reference backend interprets it op by op.
 *
 * Activations are named buffers with `rows` either "tokens" (T: every token of the step) or
 * "seqs" (S: one row per sequence, its last token), and a fixed column count. Buffers are
 * reused across layers. Weights are named as in a Hugging Face checkpoint.
 */
export type GraphOp =
  /**
   * out[t] = table[tokenIds[t]]; with vocabStart (a tensor-parallel rank's slice of the table,
   * src/model/shard.ts), out[t] = table[tokenIds[t] - vocabStart], zeros for ids outside the slice
   */
  | { op: 'embedding'; table: string; out: string; vocabStart?: number }
  /** out = rmsnorm(x) * weight */
  | { op: 'rmsnorm'; x: string; weight: string; out: string }
  /** x += residual, then out = rmsnorm(x) * weight (x is updated in place) */
  | { op: 'add_rmsnorm'; x: string; residual: string; weight: string; out: string }
  /** out = x @ weight^T, weight in HF layout [outFeatures, inFeatures] */
  | { op: 'linear'; x: string; weight: string; out: string }
  /** rotary embedding in place on q and k at each token's position (HF "rotate_half" pairing) */
  | { op: 'rope'; q: string; k: string }
  /** writes k, v into the layer's KV cache at each token's slot, then causal GQA attention of q over the sequence's cache */
  | { op: 'attention'; layer: number; q: string; k: string; v: string; out: string }
  /** out = silu(gate) * up */
  | { op: 'silu_mul'; gate: string; up: string; out: string }
  /** x += y */
  | { op: 'add'; x: string; y: string }
  /** out[s] = x[last token of sequence s] */
  | { op: 'gather_last'; x: string; out: string }
  /** tensor parallelism: x = the sum of x over all ranks (in rank order, so every rank holds the same sum) */
  | { op: 'all_reduce'; x: string }
  /** tensor parallelism: out[r] = x[r] of rank 0, then of rank 1, ...; parts[i] is rank i's column count */
  | { op: 'all_gather'; x: string; out: string; parts: number[] }
  /** picks each sequence's next token from its logits row (see backends/shared/host-sampler.ts) */
  | { op: 'sample'; logits: string };

export interface Activation {
  rows: 'tokens' | 'seqs';
  cols: number;
}

export interface LlamaGraph {
  activations: Record<string, Activation>;
  ops: GraphOp[];
  /** The weight that the lm-head linear reads (the embedding table when tied). */
  lmHead: string;
  /**
   * Where each decoder layer's ops begin in `ops` (numLayers + 1 entries; the last is where the
   * ops after the final layer begin), for backends that compile runs of layers separately.
   */
  layerStart: number[];
}

export function buildLlamaGraph(config: LlamaConfig): LlamaGraph {
  const { hiddenSize: h, numHeads, numKvHeads, headDim: hd, intermediateSize: inter, vocabSize } = config;
  const activations: Record<string, Activation> = {
    x: { rows: 'tokens', cols: h },
    h: { rows: 'tokens', cols: h },
    q: { rows: 'tokens', cols: numHeads * hd },
    k: { rows: 'tokens', cols: numKvHeads * hd },
    v: { rows: 'tokens', cols: numKvHeads * hd },
    attn: { rows: 'tokens', cols: numHeads * hd },
    o: { rows: 'tokens', cols: h },
    gate: { rows: 'tokens', cols: inter },
    up: { rows: 'tokens', cols: inter },
    act: { rows: 'tokens', cols: inter },
    mlp: { rows: 'tokens', cols: h },
    last: { rows: 'seqs', cols: h },
    last_norm: { rows: 'seqs', cols: h },
    logits: { rows: 'seqs', cols: vocabSize },
  };
  const lmHead = config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const ops: GraphOp[] = [{ op: 'embedding', table: 'model.embed_tokens.weight', out: 'x' }];
  const layerStart: number[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = layerPrefix(l);
    layerStart.push(ops.length);
    ops.push(
      l === 0
        ? { op: 'rmsnorm', x: 'x', weight: `${p}.input_layernorm.weight`, out: 'h' }
        : { op: 'add_rmsnorm', x: 'x', residual: 'mlp', weight: `${p}.input_layernorm.weight`, out: 'h' },
      { op: 'linear', x: 'h', weight: `${p}.self_attn.q_proj.weight`, out: 'q' },
      { op: 'linear', x: 'h', weight: `${p}.self_attn.k_proj.weight`, out: 'k' },
      { op: 'linear', x: 'h', weight: `${p}.self_attn.v_proj.weight`, out: 'v' },
      { op: 'rope', q: 'q', k: 'k' },
      { op: 'attention', layer: l, q: 'q', k: 'k', v: 'v', out: 'attn' },
      { op: 'linear', x: 'attn', weight: `${p}.self_attn.o_proj.weight`, out: 'o' },
      { op: 'add_rmsnorm', x: 'x', residual: 'o', weight: `${p}.post_attention_layernorm.weight`, out: 'h' },
      { op: 'linear', x: 'h', weight: `${p}.mlp.gate_proj.weight`, out: 'gate' },
      { op: 'linear', x: 'h', weight: `${p}.mlp.up_proj.weight`, out: 'up' },
      { op: 'silu_mul', gate: 'gate', up: 'up', out: 'act' },
      { op: 'linear', x: 'act', weight: `${p}.mlp.down_proj.weight`, out: 'mlp' },
    );
  }
  layerStart.push(ops.length);
  ops.push(
    { op: 'add', x: 'x', y: 'mlp' },
    { op: 'gather_last', x: 'x', out: 'last' },
    { op: 'rmsnorm', x: 'last', weight: 'model.norm.weight', out: 'last_norm' },
    { op: 'linear', x: 'last_norm', weight: lmHead, out: 'logits' },
    { op: 'sample', logits: 'logits' },
  );
  return { activations, ops, lmHead, layerStart };
}
