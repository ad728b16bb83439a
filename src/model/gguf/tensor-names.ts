import { layerPrefix } from '../weights.js';

/** llama.cpp's tensor names of the llama architecture and the Hugging Face names they stand for. */
export function ggufToHfName(name: string): string | null {
  const global: Record<string, string> = {
    'token_embd.weight': 'model.embed_tokens.weight',
    'output_norm.weight': 'model.norm.weight',
    'output.weight': 'lm_head.weight',
  };
  if (name in global) return global[name]!;
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(name);
  if (!m) return null;
  const layer: Record<string, string> = {
    attn_norm: 'input_layernorm',
    attn_q: 'self_attn.q_proj',
    attn_k: 'self_attn.k_proj',
    attn_v: 'self_attn.v_proj',
    attn_output: 'self_attn.o_proj',
    ffn_norm: 'post_attention_layernorm',
    ffn_gate: 'mlp.gate_proj',
    ffn_up: 'mlp.up_proj',
    ffn_down: 'mlp.down_proj',
  };
  const part = layer[m[2]!];
  return part === undefined ? null : `${layerPrefix(Number(m[1]))}.${part}.weight`;
}

/** GGUF tensors that are not weights of the Hugging Face model but settings (read into the config). */
export const ggufSettingTensors = new Set(['rope_freqs.weight']);
