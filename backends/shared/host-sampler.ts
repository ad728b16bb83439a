import type { LogitBiasBatch, PenaltyBatch, SamplingBatch, StepOutput, TokenMaskBatch } from '../../src/engine/backend.js';

/**
 * The sampling rule every backend implements, applied to one sequence's logits row:
 * 1. the row's logit bias (logit_bias added, min_tokens' banned ids -inf), then penalties (repetition as in CTRL/HF: positive logits divided, negative multiplied;
 *    frequency and presence subtracted as in the OpenAI API), then the token mask of a
 *    constrained row (disallowed ids get -inf);
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

/** Adds row s's sparse bias to its logits (-inf bans a token). */
export function applyLogitBias(logits: Float32Array, bias: LogitBiasBatch, s: number): void {
  for (let i = bias.rowStart[s]!; i < bias.rowStart[s + 1]!; i++) logits[bias.tokenIds[i]!] += bias.bias[i]!;
}

/** Sets the logits of the ids row s's mask disallows to -inf (nothing when s is unconstrained). */
export function applyTokenMask(logits: Float32Array, mask: TokenMaskBatch, s: number): void {
  const r = mask.rowOf[s]!;
  if (r < 0) return;
  const vocab = logits.length;
  const base = r * mask.words;
  const words = Math.min(mask.words, Math.ceil(vocab / 32));
  for (let w = 0; w < words; w++) {
    // Visit only the cleared bits (disallowed ids): masks are mostly all-allowed or mostly all-refused words.
    let refused = ~mask.bits[base + w]!;
    const first = w * 32;
    if (refused === -1) {
      logits.fill(-Infinity, first, Math.min(first + 32, vocab));
      continue;
    }
    while (refused !== 0) {
      const low = refused & -refused;
      const id = first + 31 - Math.clz32(low);
      if (id < vocab) logits[id] = -Infinity;
      refused ^= low;
    }
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
  // Candidates in rule order (descending logit, lower id first) are found by partial selection:
  // only the prefixes the cut-offs need are ordered, never the whole vocabulary.
  const k = sampling.topK[s]! > 0 ? Math.min(sampling.topK[s]!, vocab) : vocab;
  let order: Int32Array;
  if (k <= insertionTopK) {
    // A small top-k in one pass, in rule order: almost every logit is rejected by one comparison
    // (~6x faster than partial selection over a 128k vocabulary). Only order[0, k) is read below.
    order = topK(logits, k).ids;
  } else {
    order = scratchOrder(vocab);
    if (k < vocab) selectPrefix(order, 0, vocab, logits, k - 1);
  }
  const n = k;
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[order[i]!]!);
  const probs = scratchProbs(vocab);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const id = order[i]!;
    probs[id] = Math.exp((logits[id]! - max) / temperature);
    total += probs[id]!;
  }
  let keep = n;
  const topP = sampling.topP[s]!;
  if (topP < 1) keep = findCumulative(order, n, logits, probs, topP * total, true) + 1;
  const minP = sampling.minP[s]!;
  if (minP > 0) {
    // The most likely token has probability exp(0) = 1 and always stays (min_p <= 1).
    let kept = 0;
    for (let i = 0; i < keep; i++) if (probs[order[i]!]! >= minP) order[kept++] = order[i]!;
    keep = kept;
  }
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += probs[order[i]!]!;
  return order[findCumulative(order, keep, logits, probs, sampling.random[s]! * kept, false)]!;
}

/** Up to this top-k, candidates are kept by insertion (topK) instead of partial selection. */
const insertionTopK = 64;

let orderBuffer = new Int32Array(0);
let probsBuffer = new Float64Array(0);

/** 0 .. vocab-1, in a buffer reused from row to row. */
function scratchOrder(vocab: number): Int32Array {
  if (orderBuffer.length < vocab) orderBuffer = new Int32Array(vocab);
  const order = orderBuffer.subarray(0, vocab);
  for (let i = 0; i < vocab; i++) order[i] = i;
  return order;
}

function scratchProbs(vocab: number): Float64Array {
  if (probsBuffer.length < vocab) probsBuffer = new Float64Array(vocab);
  return probsBuffer;
}

/** Token a comes before token b in rule order: higher logit, then lower id. */
function ranksBefore(logits: Float32Array, a: number, b: number): boolean {
  const x = logits[a]!;
  const y = logits[b]!;
  return x > y || (x === y && a < b);
}

/**
 * The position, in rule order, of the first candidate among order[0, n) at which the cumulative
 * probability passes `target` (reaches it when `inclusive`); the last one if rounding keeps it
 * from passing. On return order[0 .. position] holds the candidates ranked up to it.
 */
function findCumulative(order: Int32Array, n: number, logits: Float32Array, probs: Float64Array, target: number, inclusive: boolean): number {
  const passes = (mass: number) => (inclusive ? mass >= target : mass > target);
  let lo = 0;
  let hi = n;
  let before = 0;
  while (hi - lo > 32) {
    const split = partition(order, lo, hi, logits);
    let mass = 0;
    for (let i = lo; i < split; i++) mass += probs[order[i]!]!;
    if (passes(before + mass)) {
      hi = split;
      continue;
    }
    before += mass;
    if (passes(before + probs[order[split]!]!)) return split;
    before += probs[order[split]!]!;
    lo = split + 1;
  }
  sortRange(order, lo, hi, logits);
  for (let i = lo; i < hi; i++) {
    before += probs[order[i]!]!;
    if (passes(before)) return i;
  }
  return Math.max(0, Math.min(hi, n) - 1);
}

/** Partitions order[lo, hi) so that order[lo .. rank] are the candidates ranked up to `rank`, with order[rank] in its place. */
function selectPrefix(order: Int32Array, lo: number, hi: number, logits: Float32Array, rank: number): void {
  while (hi - lo > 32) {
    const split = partition(order, lo, hi, logits);
    if (split === rank) return;
    if (rank < split) hi = split;
    else lo = split + 1;
  }
  sortRange(order, lo, hi, logits);
}

/** Lomuto partition around a median-of-three pivot: returns the pivot's final position. */
function partition(order: Int32Array, lo: number, hi: number, logits: Float32Array): number {
  const mid = lo + ((hi - lo) >> 1);
  const last = hi - 1;
  if (ranksBefore(logits, order[mid]!, order[lo]!)) swap(order, mid, lo);
  if (ranksBefore(logits, order[last]!, order[lo]!)) swap(order, last, lo);
  if (ranksBefore(logits, order[mid]!, order[last]!)) swap(order, mid, last);
  const pivot = order[last]!;
  let store = lo;
  for (let i = lo; i < last; i++) {
    if (ranksBefore(logits, order[i]!, pivot)) swap(order, i, store++);
  }
  swap(order, store, last);
  return store;
}

function sortRange(order: Int32Array, lo: number, hi: number, logits: Float32Array): void {
  for (let i = lo + 1; i < hi; i++) {
    const id = order[i]!;
    let j = i;
    while (j > lo && ranksBefore(logits, id, order[j - 1]!)) {
      order[j] = order[j - 1]!;
      j--;
    }
    order[j] = id;
  }
}

function swap(order: Int32Array, i: number, j: number): void {
  const t = order[i]!;
  order[i] = order[j]!;
  order[j] = t;
}

/**
 * Samples every row of a [S, vocab] logits matrix (modified in place by penalties) and
 * computes the log-probs asked for: the reference that host backends call directly.
 */
export function sampleLogits(logits: Float32Array, vocab: number, sampling: SamplingBatch): StepOutput {
  const out = emptySampleOutput(sampling);
  for (let s = 0; s < out.tokens.length; s++) sampleRow(logits.subarray(s * vocab, (s + 1) * vocab), sampling, s, out);
  return out;
}

/**
 * Samples the sequences `seqs` into `out` (from emptySampleOutput): row j of `logits` holds the
 * logits of sequence seqs[j] (modified in place), so a backend can run its LM head over a few
 * rows at a time. With `turns`, yields to the event loop every `rowsPerTurn` rows: a thousand
 * rows of a 128K vocabulary take seconds on one thread, which the server's other requests must
 * not wait for.
 */
export async function sampleRowsInTurns(
  logits: Float32Array,
  vocab: number,
  sampling: SamplingBatch,
  seqs: Int32Array,
  out: StepOutput,
  turns?: { rowsPerTurn: number; yieldTurn: () => Promise<unknown> },
): Promise<void> {
  for (let j = 0; j < seqs.length; j++) {
    if (turns && j > 0 && j % turns.rowsPerTurn === 0) await turns.yieldTurn();
    sampleRow(logits.subarray(j * vocab, (j + 1) * vocab), sampling, seqs[j]!, out);
  }
}

/** A step's output before any row is sampled: tokens 0, log-prob arrays sized for what the batch asks. */
export function emptySampleOutput(sampling: SamplingBatch): StepOutput {
  const numSeqs = sampling.temperature.length;
  let maxK = -1;
  for (let s = 0; s < numSeqs; s++) maxK = Math.max(maxK, sampling.logprobs[s]!);
  return {
    tokens: new Int32Array(numSeqs),
    logprobs: maxK >= 0 ? new Float32Array(numSeqs) : null,
    topLogprobs: maxK > 0 ? { k: maxK, ids: new Int32Array(numSeqs * maxK), logprobs: new Float32Array(numSeqs * maxK) } : null,
  };
}

/** Samples sequence s from its logits `row` into `out`. */
function sampleRow(row: Float32Array, sampling: SamplingBatch, s: number, out: StepOutput): void {
  if (sampling.logitBias) applyLogitBias(row, sampling.logitBias, s);
  if (sampling.penalties) applyPenalties(row, sampling.penalties, s);
  if (sampling.tokenMask) applyTokenMask(row, sampling.tokenMask, s);
  const token = sampleToken(row, sampling, s);
  out.tokens[s] = token;
  const want = sampling.logprobs[s]!;
  if (want < 0 || !out.logprobs) return;
  const lse = logSumExp(row);
  out.logprobs[s] = row[token]! - lse;
  const top = out.topLogprobs;
  if (want > 0 && top) {
    const best = topK(row, want);
    for (let i = 0; i < want; i++) {
      top.ids[s * top.k + i] = best.ids[i]!;
      top.logprobs[s * top.k + i] = best.values[i]! - lse;
    }
  }
}
