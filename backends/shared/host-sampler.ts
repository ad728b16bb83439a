import type { PenaltyBatch, SamplingBatch, StepOutput } from '../../src/engine/backend.js';

/**
 * The sampling rule every backend implements, applied to one sequence's logits row:
 * 1. penalties (repetition as in CTRL/HF: positive logits divided, negative multiplied;
 *    frequency and presence subtracted as in the OpenAI API);
 * 2. log-probs, when asked, are log_softmax of these logits (before temperature);
 * 3. temperature 0: argmax, the lowest id on ties;
 * 4. otherwise: logits / temperature, keep the top k, softmax, keep the smallest prefix of the
 *    sorted tokens whose probability reaches top_p, drop tokens below min_p * max prob,
 *    renormalize and take the token where the cumulative probability (tokens in descending
 *    probability, lower id first on ties) first exceeds random * total.
 */
export function applyPenalties(logits: Float32Array, penalties: PenaltyBatch, s: number): void {
  const rep = penalties.repetition[s]!;
  const freq = penalties.frequency[s]!;
  const pres = penalties.presence[s]!;
  for (let i = penalties.tokenStart[s]!; i < penalties.tokenStart[s + 1]!; i++) {
    const id = penalties.tokenIds[i]!;
    let x = logits[id]!;
    if (rep !== 1) x = x > 0 ? x / rep : x * rep;
    const count = penalties.outputCounts[i]!;
    if (count > 0) x -= freq * count + pres;
    logits[id] = x;
  }
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i]! > bestValue) {
      bestValue = logits[i]!;
      best = i;
    }
  }
  return best;
}

export function logSumExp(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum);
}

/** The k largest logits, descending, lower id first on ties. */
export function topK(logits: Float32Array, k: number): { ids: Int32Array; values: Float32Array } {
  k = Math.min(k, logits.length);
  const ids = new Int32Array(k);
  const values = new Float32Array(k).fill(-Infinity);
  let count = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    if (count === k && x <= values[k - 1]!) continue;
    let j = count < k ? count++ : k - 1;
    while (j > 0 && values[j - 1]! < x) {
      values[j] = values[j - 1]!;
      ids[j] = ids[j - 1]!;
      j--;
    }
    values[j] = x;
    ids[j] = i;
  }
  return { ids, values };
}

export function sampleToken(logits: Float32Array, sampling: SamplingBatch, s: number): number {
  const temperature = sampling.temperature[s]!;
  if (temperature <= 0) return argmax(logits);
  const vocab = logits.length;
  const k = sampling.topK[s]! > 0 ? Math.min(sampling.topK[s]!, vocab) : vocab;
  let candidates: { ids: Int32Array; values: Float32Array };
  if (k < vocab) {
    candidates = topK(logits, k);
  } else {
    const order = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
    candidates = { ids: Int32Array.from(order), values: Float32Array.from(order, (i) => logits[i]!) };
  }
  const n = candidates.ids.length;
  const max = candidates.values[0]!;
  const probs = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    probs[i] = Math.exp((candidates.values[i]! - max) / temperature);
    total += probs[i]!;
  }
  let keep = n;
  const topP = sampling.topP[s]!;
  if (topP < 1) {
    let cumulative = 0;
    for (let i = 0; i < n; i++) {
      cumulative += probs[i]! / total;
      if (cumulative >= topP) {
        keep = i + 1;
        break;
      }
    }
  }
  const minP = sampling.minP[s]!;
  if (minP > 0) {
    const threshold = (minP * probs[0]!) / total;
    while (keep > 1 && probs[keep - 1]! / total < threshold) keep--;
  }
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += probs[i]!;
  const target = sampling.random[s]! * kept;
  let cumulative = 0;
  for (let i = 0; i < keep; i++) {
    cumulative += probs[i]!;
    if (cumulative > target) return candidates.ids[i]!;
  }
  return candidates.ids[keep - 1]!;
}

/**
 * Samples every row of a [S, vocab] logits matrix (modified in place by penalties) and
 * computes the log-probs asked for: the reference that host backends call directly.
 */
export function sampleLogits(logits: Float32Array, vocab: number, sampling: SamplingBatch): StepOutput {
  const numSeqs = sampling.temperature.length;
  const tokens = new Int32Array(numSeqs);
  let maxK = -1;
  for (let s = 0; s < numSeqs; s++) maxK = Math.max(maxK, sampling.logprobs[s]!);
  const logprobs = maxK >= 0 ? new Float32Array(numSeqs) : null;
  const top = maxK > 0 ? { k: maxK, ids: new Int32Array(numSeqs * maxK), logprobs: new Float32Array(numSeqs * maxK) } : null;
  for (let s = 0; s < numSeqs; s++) {
    const row = logits.subarray(s * vocab, (s + 1) * vocab);
    if (sampling.penalties) applyPenalties(row, sampling.penalties, s);
    tokens[s] = sampleToken(row, sampling, s);
    const want = sampling.logprobs[s]!;
    if (want >= 0 && logprobs) {
      const lse = logSumExp(row);
      logprobs[s] = row[tokens[s]!]! - lse;
      if (want > 0 && top) {
        const best = topK(row, want);
        for (let i = 0; i < want; i++) {
          top.ids[s * maxK + i] = best.ids[i]!;
          top.logprobs[s * maxK + i] = best.values[i]! - lse;
        }
      }
    }
  }
  return { tokens, logprobs, topLogprobs: top };
}
