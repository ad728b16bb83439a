import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Backend, BackendOptions, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, PromptLogprobsOutput, PromptLogprobsRequest, StepOutput, TokenMaskBatch } from '../../src/engine/backend.js';
import { validateForwardBatch } from '../../src/engine/forward-batch.js';
import { deviceKvCapacity, kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import { BackendError } from '../../src/errors.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { compileGraph, nativeConfig, weightShapeOf, type CompiledGraph } from './compile.js';
import type { CudaAddon, NativeModel, NativeStepOutput, NativeTokenMask } from './native.js';
import { emptyPromptLogprobs, wantedPromptRows, writePromptLogprob } from '../shared/prompt-logprobs.js';

/** Prompt rows per headLogits call: bounds the logits read back at once (64 x 128k vocabulary = 32 MiB). */
const promptRowsPerCall = 64;

const dtypeCode = { f32: 0, bf16: 1, f16: 2 } as const;

/**
 * The CUDA backend: the graph compiled into the addon's kernel sequence, BF16 weights and KV cache
 * on the device, decode steps replayed as CUDA graphs, sampling on the device. Each forward runs
 * on a worker thread of the addon, so the event loop stays free.
 */
export class CudaBackend implements Backend {
  readonly name = 'cuda' as const;
  private model: NativeModel;
  private config: LlamaConfig | null = null;
  private compiled: CompiledGraph | null = null;
  private kvSpec: KvCacheSpec | null = null;
  /** SLUICE_CUDA_MASK_OVERLAP=0 (variants.ts): constrained steps wait for their masks before launching. */
  private readonly masksOverlap = process.env.SLUICE_CUDA_MASK_OVERLAP !== '0';

  /** Prompt log-probs need the addon's headLogits (an addon built before it lacks it). */
  get supportsPromptLogprobs(): boolean {
    return typeof this.model.headLogits === 'function';
  }

  constructor(
    addon: CudaAddon,
    private readonly options: BackendOptions,
  ) {
    this.model = new addon.CudaModel(options.device ?? 0, options.graphCapture ?? true);
  }

  get description(): string {
    return this.model.description();
  }

  /** The native model, for tests that drive single ops through custom graphs. */
  get native(): NativeModel {
    return this.model;
  }

  get compiledGraph(): CompiledGraph | null {
    return this.compiled;
  }

  async load(spec: ModelSpec): Promise<void> {
    const compiled = compileGraph(spec.graph, weightShapeOf(spec.weights), { fuseProjections: process.env.SLUICE_CUDA_FUSE !== '0' });
    this.model.configure(nativeConfig(spec.config, compiled, ropeInverseFrequencies(spec.config)));
    // Weights the source can describe (dummy ones) are generated on the device by the same hash
    // as the host generator: the 8B preset loads in seconds instead of hashing 8e9 elements in JavaScript.
    for (let id = 0; id < compiled.weights.length; id++) {
      const weight = compiled.weights[id]!;
      // A fused weight loads part by part into its rows; a plain one is its own single part.
      let rowOffset = 0;
      for (const part of weight.parts ?? [{ name: weight.name, rows: weight.rows }]) {
        const recipe = spec.weights.deviceRecipe?.(part.name) ?? null;
        // A tensor-parallel rank's slice of a dummy tensor: generated on the device too, window only.
        const window = !recipe && this.model.dummyWeightWindow ? (spec.weights.deviceWindowRecipe?.(part.name) ?? null) : null;
        if (recipe?.kind === 'hash-uniform') {
          this.model.dummyWeight(id, recipe.key, recipe.halfRange, recipe.offset, rowOffset, part.rows);
        } else if (window?.recipe.kind === 'hash-uniform') {
          const { key, halfRange, offset } = window.recipe;
          this.model.dummyWeightWindow!(id, key, halfRange, offset, rowOffset, part.rows, window.sourceCols, window.rowStart, window.colStart);
        } else {
          const info = spec.weights.info(part.name)!;
          this.model.setWeight(id, await spec.weights.read(part.name), dtypeCode[info.dtype], rowOffset);
          await yieldToEventLoop();
        }
        rowOffset += part.rows;
      }
    }
    this.config = spec.config;
    this.compiled = compiled;
  }

  /** BF16 K and V in what memFractionStatic leaves of the device after the weights. */
  kvCapacity(budget: KvBudget): number {
    return deviceKvCapacity(this.model.memory(), kvBytesPerToken(this.requireConfig(), 2), budget);
  }

  async allocateKvCache(spec: KvCacheSpec): Promise<void> {
    this.requireConfig();
    this.model.allocateKv(spec.numPages, spec.pageSize);
    this.kvSpec = spec;
  }

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    const config = this.checkStep(batch);
    const mask = batch.sampling.tokenMask;
    const out = mask ? await this.forwardWhileMasksCompute(batch, mask) : await this.model.forward(batch);
    return {
      ...stepOutputOf(out),
      ...(batch.promptLogprobs ? { promptLogprobs: this.promptLogprobs(batch.promptLogprobs, config.vocabSize) } : {}),
    };
  }

  /**
   * The batch checked and ready for an addon call that reads all of it when the step starts:
   * token masks computed by then (and out of shared memory). Tensor-parallel ranks step through
   * their NcclGroup with what rank 0 prepares (their masks do not overlap the step yet).
   */
  async prepareStep(batch: ForwardBatch): Promise<ForwardBatch> {
    this.checkStep(batch);
    const mask = batch.sampling.tokenMask;
    return mask ? withMasksReady(batch, mask) : batch;
  }

  /**
   * A constrained step: the forward pass is launched at once, while the engine's mask worker is
   * still computing the masks, and the masks are taken only when the step is about to sample
   * (their upload queues behind the forward pass on the device's stream).
   */
  private async forwardWhileMasksCompute(batch: ForwardBatch, mask: TokenMaskBatch): Promise<NativeStepOutput> {
    const { launchForward, sampleLaunched } = this.model;
    // One call otherwise, which reads the whole batch when the step starts (an addon built before the split has no other).
    if (!launchForward || !sampleLaunched || !this.masksOverlap) return this.model.forward(await withMasksReady(batch, mask));
    await launchForward.call(this.model, batch);
    await mask.ready;
    return sampleLaunched.call(this.model, plainMask(mask));
  }

  private checkStep(batch: ForwardBatch): LlamaConfig {
    const config = this.requireConfig();
    if (!this.kvSpec) throw new BackendError(this.name, 'forward() before allocateKvCache()');
    validateForwardBatch(this.name, batch, { vocabSize: config.vocabSize, ...this.kvSpec });
    return config;
  }

  /** Log-probs of the asked prompt rows from the step just run: logits from the device, the rest on the host. */
  private promptLogprobs(request: PromptLogprobsRequest, vocab: number): PromptLogprobsOutput {
    const headLogits = this.model.headLogits;
    if (!headLogits) throw new BackendError(this.name, 'the CUDA addon predates prompt log-probs (headLogits); rebuild it: node scripts/build-native.mjs');
    const out = emptyPromptLogprobs(request);
    const wanted = wantedPromptRows(request);
    for (let start = 0; start < wanted.length; start += promptRowsPerCall) {
      const rows = wanted.subarray(start, start + promptRowsPerCall);
      const logits = headLogits.call(this.model, rows);
      rows.forEach((row, i) => writePromptLogprob(out, request, row, logits.subarray(i * vocab, (i + 1) * vocab)));
    }
    return out;
  }

  async close(): Promise<void> {
    this.model.close();
    this.config = null;
    this.kvSpec = null;
  }

  private requireConfig(): LlamaConfig {
    if (!this.config) throw new BackendError(this.name, 'load() a model first');
    return this.config;
  }
}

/** The addon's step result as the Backend contract's StepOutput. */
export function stepOutputOf(out: NativeStepOutput): StepOutput {
  return {
    tokens: out.tokens,
    logprobs: out.logprobs,
    topLogprobs: out.topK > 0 ? { k: out.topK, ids: out.topIds!, logprobs: out.topLogprobs! } : null,
  };
}

/** The batch once its masks are computed, with them out of shared memory. */
async function withMasksReady(batch: ForwardBatch, mask: TokenMaskBatch): Promise<ForwardBatch> {
  const ready = mask.ready; // read once: the engine times the wait from the read
  await ready;
  return { ...batch, sampling: { ...batch.sampling, tokenMask: { ...plainMask(mask), ready } } };
}

/**
 * The masks, copied out of the mask worker's shared memory when they live there: this addon has
 * not been run on shared memory on a GPU yet, and Dawn (webgpu) crashes on it.
 */
function plainMask(mask: TokenMaskBatch): NativeTokenMask {
  const bits = mask.bits.buffer instanceof SharedArrayBuffer ? mask.bits.slice() : mask.bits;
  return { rowOf: mask.rowOf, words: mask.words, bits };
}
