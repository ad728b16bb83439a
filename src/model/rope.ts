import type { LlamaConfig } from './config.js';

/**
 * Rotary inverse frequencies, one per pair of head dimensions (headDim / 2 of them), with the
 * checkpoint's rope_scaling applied. Element i rotates the pair (x[i], x[i + headDim / 2]).
 */
export function ropeInverseFrequencies(config: Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
  const s = config.ropeScaling;
  if (s?.type === 'frequency-factors') {
    if (s.factors.length !== half) throw new Error(`rope frequency factors: ${s.factors.length} given for ${half} frequencies`);
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / s.factors[i]!;
  } else if (s?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / s.factor;
  } else if (s?.type === 'llama3') {
    const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i]!;
      if (wavelen > lowFreqWavelen) inv[i] = inv[i]! / s.factor;
      else if (wavelen >= highFreqWavelen) {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i]! / s.factor) + smooth * inv[i]!;
      }
    }
  }
  return inv;
}
