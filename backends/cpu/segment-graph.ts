import type { LlamaConfig } from '../../src/model/config.js';
import { toFloat32 } from '../../src/model/dtype.js';
import { layerPrefix, type WeightSource } from '../../src/model/weights.js';
import { addLinear, stackRows, type RawMatrix, type WeightFormat } from './linear-weights.js';
import { DataType, OnnxGraphBuilder } from './onnx-builder.js';

/** Consecutive decoder layers compiled into one ORT session; the last segment also holds the lm-head. */
export interface Segment {
  firstLayer: number;
  endLayer: number;
  withHead: boolean;
}

/**
 * The step's inputs that every segment shares. Attention runs in two groups so that a long
 * prefill chunk does not pad every decode sequence to its length: group `d` holds the sequences
 * with one new token, group `p` the others (see attention-plan.ts for their layout).
 */
export const stepInputs = {
  x: 'x',
  cos: 'rope_cos',
  sin: 'rope_sin',
  outIndex: 'attn_out_index',
  lastIndex: 'last_index',
  group: (g: AttentionGroupName) => ({
    queryIndex: `${g}_query_index`,
    pastIndex: `${g}_past_index`,
    mask: `${g}_mask`,
    keySplit: `${g}_key_split`,
  }),
  kCache: (layer: number) => `k_cache_${layer}`,
  vCache: (layer: number) => `v_cache_${layer}`,
} as const;

export const stepOutputs = {
  x: 'x_out',
  logits: 'logits',
  /** Argmax of each logits row (lowest id on ties): all a greedy step without log-probs needs. */
  greedy: 'greedy_tokens',
  k: (layer: number) => `k_new_${layer}`,
  v: (layer: number) => `v_new_${layer}`,
} as const;

export type AttentionGroupName = 'd' | 'p';
export const attentionGroups: AttentionGroupName[] = ['d', 'p'];

/** Builds one segment as a serialized ONNX model, reading its weights one matrix at a time. */
export async function buildSegmentModel(
  config: LlamaConfig,
  weights: WeightSource,
  segment: Segment,
  format: WeightFormat,
  lmHead: string,
): Promise<Uint8Array> {
  const { hiddenSize: h, numHeads, numKvHeads, headDim: hd, intermediateSize: inter } = config;
  const kvCols = numKvHeads * hd;
  const b = new OnnxGraphBuilder();
  const matrix = async (name: string): Promise<RawMatrix> => {
    const info = weights.info(name);
    if (!info) throw new Error(`${weights.description}: tensor "${name}" is missing`);
    return { bytes: await weights.read(name), dtype: info.dtype, rows: info.shape[0]!, cols: info.shape[1]! };
  };
  const vector = async (name: string): Promise<string> => {
    const info = weights.info(name)!;
    return b.initializer(name, DataType.FLOAT, [h], toFloat32(await weights.read(name), info.dtype));
  };
  const eps = { float: config.rmsNormEps };
  const norm = (x: string, w: string) => b.op('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: eps, stash_type: 1 });
  /** x + residual and its rmsnorm: returns [normed, sum]. */
  const addNorm = (x: string, residual: string, w: string): [string, string] => {
    const [normed, , , sum] = b.node('SkipSimplifiedLayerNormalization', [x, residual, w], { epsilon: eps }, 4, 'com.microsoft');
    return [normed!, sum!];
  };

  let x = b.input(stepInputs.x, DataType.FLOAT, ['T', h]);
  const cos = b.input(stepInputs.cos, DataType.FLOAT, ['T', hd / 2]);
  const sin = b.input(stepInputs.sin, DataType.FLOAT, ['T', hd / 2]);
  const outIndex = b.input(stepInputs.outIndex, DataType.INT32, ['T']);
  const groups = attentionGroups.map((g) => {
    const names = stepInputs.group(g);
    return {
      queryIndex: b.input(names.queryIndex, DataType.INT32, [`S${g}`, `Q${g}`]),
      pastIndex: b.input(names.pastIndex, DataType.INT32, [`S${g}`, `P${g}`]),
      mask: b.input(names.mask, DataType.FLOAT, [1, `S${g}`, `GQ${g}`, `L${g}`]),
      keySplit: b.input(names.keySplit, DataType.INT64, [2]),
    };
  });
  const cosUnsqueezed = b.op('Unsqueeze', [cos, b.int64s([1])]);
  const sinUnsqueezed = b.op('Unsqueeze', [sin, b.int64s([1])]);
  const halves = b.int64s([hd / 2, hd / 2]);
  const rope = (t: string, heads: number): string => {
    const perHead = b.op('Reshape', [t, b.int64s([0, heads, hd])]);
    const [a, c] = b.node('Split', [perHead, halves], { axis: 2 }, 2);
    const rotatedA = b.op('Sub', [b.op('Mul', [a!, cosUnsqueezed]), b.op('Mul', [c!, sinUnsqueezed])]);
    const rotatedC = b.op('Add', [b.op('Mul', [c!, cosUnsqueezed]), b.op('Mul', [a!, sinUnsqueezed])]);
    return b.op('Reshape', [b.op('Concat', [rotatedA, rotatedC], { axis: 2 }), b.int64s([0, heads * hd])]);
  };

  const group = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(hd);
  /** [T, kvH*hd] -> [kvH, T, hd]: the layout of the cache, so keys need no transpose after gathering. */
  const headMajor = (t: string) => b.op('Transpose', [b.op('Reshape', [t, b.int64s([0, numKvHeads, hd])])], { perm: [1, 0, 2] });
  const attentionInGroup = (g: (typeof groups)[number], q: string, kHeads: string, vHeads: string, kCache: string, vCache: string) => {
    let qg = b.op('Gather', [q, g.queryIndex], { axis: 0 }); // [S, Q, H*hd]
    qg = b.op('Reshape', [qg, b.int64s([0, 0, numKvHeads, group, hd])]);
    qg = b.op('Transpose', [qg], { perm: [2, 0, 3, 1, 4] }); // [kvH, S, G, Q, hd]
    qg = b.op('Reshape', [qg, b.int64s([0, 0, -1, hd])]); // [kvH, S, G*Q, hd]
    const kPast = b.op('Gather', [kCache, g.pastIndex], { axis: 1 }); // [kvH, S, P, hd]
    const vPast = b.op('Gather', [vCache, g.pastIndex], { axis: 1 });
    const kNew = b.op('Gather', [kHeads, g.queryIndex], { axis: 1 }); // [kvH, S, Q, hd]
    const vNew = b.op('Gather', [vHeads, g.queryIndex], { axis: 1 });
    // Scores against past and new keys side by side (small), rather than concatenating the keys (large).
    const scoresOf = (keys: string) => b.op('FusedMatMul', [qg, keys], { transB: 1, alpha: { float: scale } }, 'com.microsoft');
    const scores = b.op('Add', [b.op('Concat', [scoresOf(kPast), scoresOf(kNew)], { axis: 3 }), g.mask]); // [kvH, S, G*Q, P+Q]
    const [pPast, pNew] = b.node('Split', [b.op('Softmax', [scores], { axis: -1 }), g.keySplit], { axis: 3 }, 2);
    let o = b.op('Add', [b.op('MatMul', [pPast!, vPast]), b.op('MatMul', [pNew!, vNew])]); // [kvH, S, G*Q, hd]
    o = b.op('Reshape', [o, b.int64s([0, 0, group, -1, hd])]);
    o = b.op('Transpose', [o], { perm: [1, 3, 0, 2, 4] }); // [S, Q, kvH, G, hd]
    return b.op('Reshape', [o, b.int64s([-1, numHeads * hd])]);
  };

  let pending: string | null = null;
  for (let layer = segment.firstLayer; layer < segment.endLayer; layer++) {
    const p = layerPrefix(layer);
    const inputNorm = await vector(`${p}.input_layernorm.weight`);
    let normed: string;
    if (pending) [normed, x] = addNorm(x, pending, inputNorm);
    else normed = norm(x, inputNorm);

    const qkvMatrix = stackRows([
      await matrix(`${p}.self_attn.q_proj.weight`),
      await matrix(`${p}.self_attn.k_proj.weight`),
      await matrix(`${p}.self_attn.v_proj.weight`),
    ]);
    const qkv = addLinear(b, normed, qkvMatrix, format, `${p}.qkv`);
    const [qRaw, kRaw, v] = b.node('Split', [qkv, b.int64s([numHeads * hd, kvCols, kvCols])], { axis: 1 }, 3);
    const q = rope(qRaw!, numHeads);
    const k = rope(kRaw!, numKvHeads);
    b.node('Identity', [k], {}, [stepOutputs.k(layer)]);
    b.node('Identity', [v!], {}, [stepOutputs.v(layer)]);
    b.output(stepOutputs.k(layer), DataType.FLOAT, ['T', kvCols]);
    b.output(stepOutputs.v(layer), DataType.FLOAT, ['T', kvCols]);
    const kCache = b.input(stepInputs.kCache(layer), DataType.FLOAT, [numKvHeads, 'N', hd]);
    const vCache = b.input(stepInputs.vCache(layer), DataType.FLOAT, [numKvHeads, 'N', hd]);
    const kHeads = headMajor(k);
    const vHeads = headMajor(v!);
    const perGroup = groups.map((g) => attentionInGroup(g, q, kHeads, vHeads, kCache, vCache));
    const attn = b.op('Gather', [b.op('Concat', perGroup, { axis: 0 }), outIndex], { axis: 0 });

    const o = addLinear(b, attn, await matrix(`${p}.self_attn.o_proj.weight`), format, `${p}.o_proj`);
    const postNorm = await vector(`${p}.post_attention_layernorm.weight`);
    let mlpIn: string;
    [mlpIn, x] = addNorm(x, o, postNorm);
    const gateUpMatrix = stackRows([await matrix(`${p}.mlp.gate_proj.weight`), await matrix(`${p}.mlp.up_proj.weight`)]);
    const gateUp = addLinear(b, mlpIn, gateUpMatrix, format, `${p}.gate_up`);
    const [gate, up] = b.node('Split', [gateUp, b.int64s([inter, inter])], { axis: 1 }, 2);
    const act = b.op('Mul', [b.op('Mul', [gate!, b.op('Sigmoid', [gate!])]), up!]);
    pending = addLinear(b, act, await matrix(`${p}.mlp.down_proj.weight`), format, `${p}.down_proj`);
  }
  if (pending) x = b.op('Add', [x, pending]);

  if (segment.withHead) {
    const lastIndex = b.input(stepInputs.lastIndex, DataType.INT32, ['S']);
    const last = b.op('Gather', [x, lastIndex], { axis: 0 });
    const normed = norm(last, await vector('model.norm.weight'));
    const logits = addLinear(b, normed, await matrix(lmHead), format, 'lm_head');
    b.node('Identity', [logits], {}, [stepOutputs.logits]);
    b.output(stepOutputs.logits, DataType.FLOAT, ['S', config.vocabSize]);
    b.node('ArgMax', [logits], { axis: 1, keepdims: 0, select_last_index: 0 }, [stepOutputs.greedy]);
    b.output(stepOutputs.greedy, DataType.INT64, ['S']);
  } else {
    b.node('Identity', [x], {}, [stepOutputs.x]);
    b.output(stepOutputs.x, DataType.FLOAT, ['T', h]);
  }
  return b.encode();
}
