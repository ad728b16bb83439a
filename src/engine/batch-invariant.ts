import { OptionError } from '../errors.js';
import type { Backend, ForwardBatch, LogitBiasBatch, PenaltyBatch, PromptLogprobsOutput, SamplingBatch, StepOutput, TokenMaskBatch } from './backend.js';

/**
 * --enable-deterministic-inference: runs every token of a step as a forward of its own (one
 * sequence, one token, its past from the KV cache), so each token's computation has the same
 * shape whatever else is batched and however its prompt was chunked. Kernels that pick their
 * path, tiling or thread split by the row count (onnxruntime's GEMMs, padded attention) then
 * compute every token the same way, and seeded sampling gives the same text alone or under
 * load. The cost is one backend run per token: decode throughput of a batch falls to that of
 * single sequences, and a prompt prefills one token per run.
 */
export class BatchInvariantBackend implements Backend {
  readonly name: Backend['name'];
  readonly description: string;
  readonly supportsPromptLogprobs: boolean;

  constructor(private readonly inner: Backend) {
    this.name = inner.name;
    this.supportsPromptLogprobs = inner.supportsPromptLogprobs ?? false;
    this.description = `${inner.description}; deterministic inference (one token per run)`;
  }

  load = (model: Parameters<Backend['load']>[0]) => this.inner.load(model);
  kvCapacity = (budget: Parameters<Backend['kvCapacity']>[0]) => this.inner.kvCapacity(budget);
  private pageSize = 1;

  allocateKvCache(spec: Parameters<Backend['allocateKvCache']>[0]): Promise<void> {
    this.pageSize = spec.pageSize;
    return this.inner.allocateKvCache(spec);
  }
  close = () => this.inner.close();

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    const numSeqs = batch.kvLens.length;
    const tokens = new Int32Array(numSeqs);
    const outputs: (StepOutput | null)[] = new Array(numSeqs).fill(null);
    const asked = batch.promptLogprobs ?? null;
    const prompt = asked && emptyRows(batch.tokenIds.length, asked.topK);
    for (let s = 0; s < numSeqs; s++) {
      const start = batch.queryStart[s]!;
      const end = batch.queryStart[s + 1]!;
      for (let t = start; t < end; t++) {
        const single = oneToken(batch, s, t, t === end - 1, this.pageSize);
        const target = asked ? asked.targets[t]! : -1;
        if (target >= 0) single.promptLogprobs = { targets: Int32Array.of(target), topK: asked!.topK };
        const out = await this.inner.forward(single);
        if (target >= 0 && out.promptLogprobs) copyRow(out.promptLogprobs, prompt!, t);
        if (t === end - 1) {
          tokens[s] = out.tokens[0]!;
          outputs[s] = out;
        }
      }
    }
    return { tokens, ...mergeLogprobs(batch.sampling.logprobs, outputs), ...(prompt ? { promptLogprobs: prompt } : {}) };
  }
}

/** The batch of token t of sequence s alone; only the sequence's last token samples as asked. */
function oneToken(batch: ForwardBatch, s: number, t: number, last: boolean, pageSize: number): ForwardBatch {
  const position = batch.positions[t]!;
  const kvLen = position + 1;
  const pages = batch.pageTable.subarray(batch.pageTableStart[s]!, batch.pageTableStart[s + 1]!);
  const numPages = Math.ceil(kvLen / pageSize);
  const sampling: SamplingBatch = last
    ? {
        temperature: batch.sampling.temperature.slice(s, s + 1),
        topP: batch.sampling.topP.slice(s, s + 1),
        topK: batch.sampling.topK.slice(s, s + 1),
        minP: batch.sampling.minP.slice(s, s + 1),
        random: batch.sampling.random.slice(s, s + 1),
        logprobs: batch.sampling.logprobs.slice(s, s + 1),
        penalties: batch.sampling.penalties && penaltiesOf(batch.sampling.penalties, s),
        tokenMask: batch.sampling.tokenMask && maskOf(batch.sampling.tokenMask, s),
        logitBias: batch.sampling.logitBias && logitBiasOf(batch.sampling.logitBias, s),
        ...(batch.sampling.sampled ? { sampled: batch.sampling.sampled.slice(s, s + 1) } : {}),
      }
    : unsampledRow();
  return {
    tokenIds: batch.tokenIds.slice(t, t + 1),
    positions: Int32Array.of(position),
    queryStart: Int32Array.of(0, 1),
    kvLens: Int32Array.of(kvLen),
    pageTable: pages.slice(0, numPages),
    pageTableStart: Int32Array.of(0, numPages),
    slotMapping: batch.slotMapping.slice(t, t + 1),
    sampling,
  };
}

/** A token before the sequence's last: no token is taken from it, so no logits are needed. */
function unsampledRow(): SamplingBatch {
  return {
    temperature: Float32Array.of(0),
    topP: Float32Array.of(1),
    topK: Int32Array.of(0),
    minP: Float32Array.of(0),
    random: Float32Array.of(0),
    logprobs: Int32Array.of(-1),
    penalties: null,
    sampled: Uint8Array.of(0),
  };
}

function penaltiesOf(p: PenaltyBatch, s: number): PenaltyBatch {
  const from = p.tokenStart[s]!;
  const to = p.tokenStart[s + 1]!;
  return {
    repetition: p.repetition.slice(s, s + 1),
    frequency: p.frequency.slice(s, s + 1),
    presence: p.presence.slice(s, s + 1),
    tokenStart: Int32Array.of(0, to - from),
    tokenIds: p.tokenIds.slice(from, to),
    outputCounts: p.outputCounts.slice(from, to),
  };
}

function logitBiasOf(bias: LogitBiasBatch, s: number): LogitBiasBatch {
  const from = bias.rowStart[s]!;
  const to = bias.rowStart[s + 1]!;
  return { rowStart: Int32Array.of(0, to - from), tokenIds: bias.tokenIds.slice(from, to), bias: bias.bias.slice(from, to) };
}

/** Sequence s's grammar mask row, as a view: the engine fills the bits while the backend runs. */
function maskOf(mask: TokenMaskBatch, s: number): TokenMaskBatch | null {
  const row = mask.rowOf[s]!;
  if (row < 0) return null;
  const bits = mask.bits.subarray(row * mask.words, (row + 1) * mask.words);
  return {
    rowOf: Int32Array.of(0),
    words: mask.words,
    bits,
    get ready() {
      return mask.ready; // read when the backend waits, not now (the engine times the wait from the read)
    },
  };
}

function emptyRows(rows: number, k: number): PromptLogprobsOutput {
  return { logprobs: new Float32Array(rows).fill(NaN), ranks: new Int32Array(rows), k, topIds: new Int32Array(rows * k).fill(-1), topLogprobs: new Float32Array(rows * k).fill(NaN) };
}

/** Row 0 of a one-token answer into row `t` of the step's. */
function copyRow(from: PromptLogprobsOutput, to: PromptLogprobsOutput, t: number): void {
  to.logprobs[t] = from.logprobs[0]!;
  to.ranks[t] = from.ranks[0]!;
  to.topIds.set(from.topIds.subarray(0, to.k), t * to.k);
  to.topLogprobs.set(from.topLogprobs.subarray(0, to.k), t * to.k);
}

/** The rows' log-probs side by side, top log-probs padded to the largest k asked. */
function mergeLogprobs(asked: Int32Array, outputs: (StepOutput | null)[]): Pick<StepOutput, 'logprobs' | 'topLogprobs'> {
  const numSeqs = outputs.length;
  const maxK = Math.max(-1, ...asked);
  if (maxK < 0) return { logprobs: null, topLogprobs: null };
  const logprobs = new Float32Array(numSeqs).fill(NaN);
  const k = maxK;
  const ids = new Int32Array(numSeqs * k);
  const top = new Float32Array(numSeqs * k).fill(-Infinity);
  outputs.forEach((out, s) => {
    if (!out) return;
    if (out.logprobs) logprobs[s] = out.logprobs[0]!;
    const table = out.topLogprobs;
    if (!table) return;
    for (let i = 0; i < Math.min(k, table.k); i++) {
      ids[s * k + i] = table.ids[i]!;
      top[s * k + i] = table.logprobs[i]!;
    }
  });
  return { logprobs, topLogprobs: k > 0 ? { k, ids, logprobs: top } : null };
}

/** Backends whose kernels are not verified run-to-run deterministic for a fixed shape refuse the flag. */
const notDeterministic: Record<string, string> = {
  webgpu: 'WGSL kernels on arbitrary adapters are not verified to be run-to-run deterministic',
  cuda: 'the CUDA kernels (cuBLASLt algorithm choice, split-KV attention) are not verified to be run-to-run deterministic',
};

/** The backend wrapped for --enable-deterministic-inference, or an OptionError where its kernels cannot promise it. */
export function batchInvariant(backend: Backend): Backend {
  const why = notDeterministic[backend.name];
  if (why) {
    throw new OptionError(
      'deterministicInference',
      (name) => `${name('deterministicInference')} is not supported on the ${backend.name} backend: ${why}; use --backend ref or cpu`,
    );
  }
  return new BatchInvariantBackend(backend);
}
