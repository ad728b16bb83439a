import { closeSync, openSync, readSync } from 'node:fs';
import type { LlamaConfig, WeightDType } from '../config.js';
import type { Tokenizer } from '../tokenizer.js';
import { dequantize } from './dequantize.js';
import { openGgufFile, type GgufModelFile } from './gguf-file.js';
import { ggufConfig } from './gguf-config.js';
import { ggufTokenizer } from './gguf-tokenizer.js';
import { GgufWeights } from './gguf-weights.js';

export interface GgufLoaded {
  config: LlamaConfig;
  tokenizer: Tokenizer;
  weights: GgufWeights;
}

/**
 * Opens a llama-architecture GGUF model (one file or the first shard of a split one).
 * Quantized matrices are read as `dequantizeTo` (default f32).
 */
export async function loadGguf(file: string, options: { dequantizeTo?: WeightDType } = {}): Promise<GgufLoaded> {
  const dequantizeTo = options.dequantizeTo ?? 'f32';
  const model = await openGgufFile(file);
  const config = ggufConfig(model, ropeFactors(model), dequantizeTo);
  const tokenizer = ggufTokenizer(model.metadata, config.vocabSize, file);
  return { config, tokenizer, weights: new GgufWeights(model, config, dequantizeTo) };
}

function ropeFactors(model: GgufModelFile): Float32Array | null {
  const t = model.tensors.get('rope_freqs.weight');
  if (!t) return null;
  const bytes = new Uint8Array(t.bytes);
  const fd = openSync(t.file, 'r');
  try {
    readSync(fd, bytes, 0, t.bytes, t.offset);
  } finally {
    closeSync(fd);
  }
  const out = new Float32Array(t.dims[0]!);
  dequantize(t.type.name, bytes, out);
  return out;
}
