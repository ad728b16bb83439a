import { randomUUID } from 'node:crypto';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Backend, StepOutput } from './backend.js';
import type { LoadedModel } from '../model/load.js';
import { BatchBuilder, producesToken } from './batch-builder.js';
import { ConstrainedDecoding } from './constrained-decoding.js';
import { DeltaStream, finishedAtOnce } from './delta-stream.js';
import { EngineDeadError, EngineDrainingError, InvalidRequestError } from './errors.js';
import { KvPool } from './kv-pool.js';
import { checkContextLength, checkEngineOptions, defaultEngineOptions, type EngineLogger, type EngineOptions } from './options.js';
import { resolveRequest } from './params.js';
import { KvBlockTracker } from './kv-events.js';
import { NoPrefixCache, RadixCache, type PrefixCache } from './prefix-cache.js';
import { Scheduler, type StepPlan } from './scheduler.js';
import { epochMs, Request, Sequence } from './sequence.js';
import type { Engine, EngineSettings, EngineStats, GenerateDelta, GenerateRequest, SamplingParams } from './types.js';
import { batchInvariant } from './batch-invariant.js';
import { LaunchedStep } from './launched-step.js';
import { checkQueueRoom, queuedLoad } from './queue-room.js';
import { collectPromptLogprobs, tokenLogprob } from './step-logprobs.js';

// lpm lets at most this many admissions of later arrivals pass a waiting request.
const lpmMaxPassOvers = 32;
// One retraction warning per this interval at most; the count is in the metrics.
const retractionWarningIntervalMs = 10_000;

// The device backends (webgpu, cuda) materialize (sequences x vocabulary) f32 logits per step (ref
// and cpu a bounded number of rows at a time): by default no more sequences run than fit this
// budget (1046 at Llama 3's 128256-token vocabulary); --max-running-requests overrides it.
const logitsBudgetBytes = 512 * 1024 * 1024;

/**
 * The engine: requests in, streams of deltas out. Each step the scheduler plans a batch, the
 * backend runs it (asynchronously: the event loop stays free), and the sampled tokens go through
 * the stop rules to the request streams.
 */
export class LlmEngine implements Engine {
  /** Prompt plus completion tokens a request may use: the model's (or --context-length), at most the KV pool. */
  readonly contextLength: number;
  readonly settings: EngineSettings;
  private readonly pool: KvPool;
  private readonly cache: PrefixCache;
  private readonly scheduler: Scheduler;
  private readonly batchBuilder: BatchBuilder;
  /** Grammars, matchers and token masks of structured-output requests. */
  readonly constraints: ConstrainedDecoding;
  private readonly requests = new Map<string, Request>();
  private readonly loopDone: Promise<void>;
  private wakeLoop: (() => void) | null = null;
  private drainWaiters: (() => void)[] = [];
  private accepting = true;
  private closed = false;
  private error: string | null = null;
  private arrivals = 0;
  private promptTokensTotal = 0;
  private generatedTokensTotal = 0;
  private lastStepAt = Date.now();
  private steps = 0;
  /** Whether the next step is planned and launched while one runs (the backend can take in-flight token ids). */
  private readonly overlap: boolean;
  /** The step launched last whose output is not taken yet; while it runs, the next one may be launched. */
  private inFlight: LaunchedStep | null = null;
  private readonly launchSlots = [new LaunchedStep(), new LaunchedStep()];
  private launches = 0;

  private constructor(
    readonly model: LoadedModel,
    private readonly backend: Backend,
    private readonly options: EngineOptions,
    numPages: number,
  ) {
    const log: EngineLogger = options.logger ?? console;
    this.pool = new KvPool(numPages, options.pageSize);
    const kvEvents = options.kvEvents ? new KvBlockTracker(options.kvEvents.blockSize, options.kvEvents.sink, options.kvEvents.hashSeed) : null;
    this.cache = options.disableRadixCache ? new NoPrefixCache() : new RadixCache(this.pool, kvEvents);
    const poolSize = this.pool.numPages * options.pageSize;
    const wanted = options.contextLength ?? model.config.maxPositionEmbeddings;
    this.contextLength = Math.min(wanted, poolSize);
    if (this.contextLength < wanted) log.warn(`context length clipped from ${wanted} to the KV pool size, ${poolSize} tokens`);
    const schedulerConfig = {
      pageSize: options.pageSize,
      chunkedPrefillSize: options.chunkedPrefillSize,
      maxPrefillTokens: options.maxPrefillTokens,
      maxRunningRequests: options.maxRunningRequests ?? Math.min(Math.floor(poolSize / 2), 4096, Math.max(1, Math.floor(logitsBudgetBytes / (4 * model.config.vocabSize)))),
      policy: options.disableRadixCache ? ('fcfs' as const) : options.schedulePolicy,
      scheduleConservativeness: options.scheduleConservativeness,
      lpmMaxPassOvers,
      retractionWarningIntervalMs,
    };
    this.scheduler = new Scheduler(this.pool, this.cache, schedulerConfig, (message) => log.warn(message));
    this.settings = {
      pageSize: options.pageSize,
      maxTotalTokens: poolSize,
      maxRunningRequests: schedulerConfig.maxRunningRequests,
      maxPrefillTokens: options.maxPrefillTokens,
      chunkedPrefillSize: options.chunkedPrefillSize,
      maxQueuedRequests: options.maxQueuedRequests,
      schedulePolicy: schedulerConfig.policy,
      disableRadixCache: options.disableRadixCache,
    };
    this.batchBuilder = new BatchBuilder(options.pageSize);
    this.overlap = backend.overlapsSteps === true && !options.disableOverlapSchedule;
    this.constraints = new ConstrainedDecoding(model, { maskWorker: this.options.maskWorker, logger: this.options.logger ?? console });
    this.loopDone = this.runLoop();
  }

  /** Loads the weights into `backend` (created, not loaded), sizes and allocates the KV pool, starts the loop. */
  static async create(model: LoadedModel, created: Backend, options: Partial<EngineOptions> = {}): Promise<LlmEngine> {
    const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
    const resolved: EngineOptions = { ...defaultEngineOptions, ...given };
    checkEngineOptions(resolved);
    checkContextLength(model, resolved);
    const backend = resolved.deterministicInference ? batchInvariant(created) : created;
    await backend.load(model);
    const { memFractionStatic, maxTotalTokens, pageSize } = resolved;
    const poolTokens = backend.kvCapacity({ memFractionStatic, maxTotalTokens, minTokens: pageSize });
    const numPages = Math.max(1, Math.floor(poolTokens / pageSize));
    await backend.allocateKvCache({ numPages, pageSize: resolved.pageSize });
    return new LlmEngine(model, backend, resolved, numPages);
  }

  /**
   * Validates and queues a request. Throws at once (no stream): InvalidRequestError,
   * ContextLengthError, EngineOverloadedError, EngineDrainingError, EngineDeadError. The stream
   * throws EngineDeadError if the backend fails later; leaving it early aborts the request.
   */
  generate(request: GenerateRequest): AsyncIterable<GenerateDelta> {
    return this.generateMany([request])[0]!;
  }

  /**
   * Queues every request or none: each is validated, and the queue must have room for all of
   * them (sequences and prompt tokens, n > 1 samples counted), before the first is queued. An
   * InvalidRequestError about one of the requests carries its index (requestIndex).
   */
  generateMany(requests: GenerateRequest[]): AsyncIterable<GenerateDelta>[] {
    if (this.error !== null) throw new EngineDeadError(`the engine stopped after a backend error: ${this.error}`);
    if (!this.accepting) throw new EngineDrainingError('the engine is shutting down and accepts no new requests');
    const resolved = requests.map((request, i) => {
      try {
        return resolveRequest(request, this.model.config.vocabSize, this.contextLength, this.model.samplingDefaults);
      } catch (e) {
        if (e instanceof InvalidRequestError) e.requestIndex = i;
        throw e;
      }
    });
    if (!this.backend.supportsPromptLogprobs) {
      const asking = resolved.findIndex((params) => params.promptLogprobs !== null);
      if (asking >= 0) throw new InvalidRequestError(`prompt log-probs (prompt_logprobs, echo with logprobs, logprob_start_len) are not supported by the ${this.backend.name} backend`, 'prompt_logprobs');
    }
    const ids = requests.map((request) => request.id ?? randomUUID());
    const seen = new Set<string>();
    for (const id of ids) {
      if (this.requests.has(id) || seen.has(id)) throw new InvalidRequestError(`request id ${id} is already in use`, 'id');
      seen.add(id);
    }
    checkQueueRoom(requests, resolved, () => queuedLoad(this.scheduler.waiting, this.requests.values()), this.options);
    return requests.map((request, i) => this.queue(ids[i]!, request, resolved[i]!));
  }

  private queue(id: string, request: GenerateRequest, params: SamplingParams): AsyncIterable<GenerateDelta> {
    if (params.maxNewTokens === 0 && params.promptLogprobs === null) return finishedAtOnce(id, request.promptTokenIds.length, params.n, params.logprobs !== null);
    const stopTokenIds = new Set(params.ignoreEos ? params.stopTokenIds : [...this.model.stopTokenIds, ...params.stopTokenIds]);
    const stream = new DeltaStream(() => this.abort(id));
    const req = new Request(id, request.promptTokenIds.slice(), params, stopTokenIds, stream, ++this.arrivals);
    for (let i = 0; i < params.n; i++) {
      req.sequences.push(new Sequence(req, i, this.model.tokenizer.newDetokenizer(params.skipSpecialTokens)));
    }
    this.requests.set(id, req);
    this.promptTokensTotal += req.promptIds.length;
    if (params.grammar === null) this.start(req);
    else {
      // An invalid grammar fails the stream before its first delta: the server answers 400.
      this.constraints.prepare(req).then(
        () => this.start(req),
        (e: Error) => {
          if (this.requests.get(id) !== req) return;
          req.stream.fail(e);
          this.endRequest(req);
        },
      );
    }
    return stream;
  }

  private start(req: Request): void {
    if (this.requests.get(req.id) !== req || this.closed) {
      for (const seq of req.sequences) seq.matcher?.dispose(); // aborted while its grammar compiled
      return;
    }
    this.jumpForwardAtStart(req.sequences[0]!);
    this.scheduler.enqueue(req.sequences[0]!);
    this.wake();
  }

  abort(requestId: string): void {
    const req = this.requests.get(requestId);
    if (!req) return;
    for (const seq of req.sequences) {
      if (seq.status === 'finished') continue;
      this.scheduler.abort(seq);
      req.stream.push({ ...seq.abortDelta(), timing: { ...req.timing } });
    }
    this.endRequest(req);
  }

  stats(): EngineStats {
    let held = 0;
    for (const r of this.requests.values()) if (!r.samplesStarted) held += r.params.n - 1;
    const cachedPages = Math.ceil(this.cache.evictableTokens / this.pool.pageSize);
    return {
      runningRequests: this.scheduler.running.length,
      waitingRequests: this.scheduler.waiting.length + held,
      kvPagesTotal: this.pool.numPages,
      kvPagesUsed: Math.max(0, this.pool.numPages - this.pool.freePages - cachedPages),
      kvPagesCached: cachedPages,
      kvPagesFree: this.pool.freePages,
      pageSize: this.pool.pageSize,
      prefixCacheTokens: this.cache.evictableTokens,
      prefixCacheHitTokens: this.scheduler.prefixHitTokens,
      prefixCacheQueryTokens: this.scheduler.prefixQueryTokens,
      promptTokensTotal: this.promptTokensTotal,
      generatedTokensTotal: this.generatedTokensTotal,
      retractions: this.scheduler.retractions,
      lastStepAt: this.lastStepAt,
      stepsTotal: this.steps,
      error: this.error,
    };
  }

  flushCache(): boolean {
    if (this.requests.size > 0) return false;
    this.cache.clear();
    return true;
  }

  /** The token sequences the prefix cache holds, one per leaf (for tests and debugging). */
  cachedPaths(): number[][] {
    return this.cache.paths();
  }

  drain(): Promise<void> {
    this.accepting = false;
    if (this.requests.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.accepting = false;
    for (const id of [...this.requests.keys()]) this.abort(id);
    this.closed = true;
    this.wake();
    await this.loopDone;
    await this.constraints.close();
    await this.backend.close();
  }

  /**
   * Plan, launch, take the output, again. With overlap (a backend with `overlapsSteps`, unless
   * disableOverlapSchedule), step N+1 is planned and launched while step N runs, its rows that
   * continue a sequence of step N taking their input token from N's output on the device
   * (`ForwardBatch.previousRow`); then N's output is taken. A sequence that step N ends (a stop
   * token or string) was already given a row in N+1: that token is discarded when it arrives.
   * Steps whose sampled tokens the host needs before the next step (grammar masks and
   * jump-forward, penalties) and KV pressure (planning would retract a sequence in flight) take
   * their output first, as without overlap.
   */
  private async runLoop(): Promise<void> {
    while (!this.closed && this.error === null) {
      try {
        const held = this.options.beforeStep?.();
        if (held) {
          await this.completeInFlight(); // its tokens go out before the wait
          await held;
          if (this.closed) break;
        }
        if (this.inFlight && !this.mayPlanAhead(this.inFlight)) await this.completeInFlight();
        const plan = this.scheduler.schedule();
        if (!plan) {
          if (this.inFlight) await this.completeInFlight();
          else await new Promise<void>((resolve) => (this.wakeLoop = resolve));
          continue;
        }
        const previous = this.inFlight;
        this.inFlight = this.launch(plan, previous);
        // Host work while the backend computes: the next admission, the previous step's output.
        this.scheduler.prepareAdmission();
        if (previous) await this.complete(previous);
        if (!this.overlap) await this.completeInFlight();
      } catch (e) {
        this.inFlight = null; // a failed or hung backend: nothing more is awaited from it
        this.die(e);
        return;
      }
      await yieldToEventLoop();
    }
    // A step still out finishes before the backend is closed (its output is not wanted).
    const left = this.inFlight;
    this.inFlight = null;
    if (left) await Promise.all([left.output, left.masks]).catch(() => {});
  }

  private mayPlanAhead(step: LaunchedStep): boolean {
    return this.overlap && step.hostFree && this.scheduler.hasRoomForRunning();
  }

  /** Builds the plan's batch, marks its sequences in flight and hands it to the backend. */
  private launch(plan: StepPlan, previous: LaunchedStep | null): LaunchedStep {
    markScheduled(plan);
    const batch = this.batchBuilder.build(plan, previous?.id ?? -1);
    const masks = this.constraints.masksFor(plan);
    if (masks) batch.sampling.tokenMask = masks.batch;
    const step = this.launchSlots[this.launches % 2]!;
    step.reset(plan, ++this.launches);
    for (let s = 0; s < plan.sequences.length; s++) {
      const seq = plan.sequences[s]!;
      const n = plan.numTokens[s]!;
      const sampled = producesToken(seq, n);
      step.start[s] = seq.kvLen;
      step.sampled[s] = sampled ? 1 : 0;
      seq.kvLen += n;
      seq.stepsInFlight++;
      if (!sampled) continue;
      seq.tokensInFlight++;
      seq.launchedRow = s;
      seq.launchedStep = step.id;
      if (seq.matcher || seq.penaltyCounts) step.hostFree = false;
    }
    step.output = this.backend.forward(batch);
    step.output.catch(() => {}); // awaited in complete(); a failure must not count as unhandled meanwhile
    // The token masks are computed while the backend runs the model.
    step.masks = masks ? masks.fill() : null;
    return step;
  }

  private async completeInFlight(): Promise<void> {
    const step = this.inFlight;
    if (!step) return;
    this.inFlight = null;
    await this.complete(step);
  }

  /** Waits for a launched step and hands its tokens to the sequences. */
  private async complete(step: LaunchedStep): Promise<void> {
    if (step.masks) await step.masks;
    this.processOutput(step, await this.withinStepTimeout(step.output));
    this.lastStepAt = Date.now();
    this.steps++;
  }

  /** The step's output, or an error once it has taken longer than stepTimeoutMs (a hung backend). */
  private withinStepTimeout(step: Promise<StepOutput>): Promise<StepOutput> {
    const limit = this.options.stepTimeoutMs;
    if (limit === null) return step;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`a backend step did not return within ${limit / 1000} s (hung)`)), limit);
    });
    return Promise.race([step, timeout]).finally(() => clearTimeout(timer));
  }

  private processOutput(step: LaunchedStep, output: StepOutput): void {
    const plan = step.plan;
    let row = 0;
    for (let s = 0; s < plan.sequences.length; s++) {
      const seq = plan.sequences[s]!;
      const firstRow = row;
      row += plan.numTokens[s]!;
      const sampled = step.sampled[s] === 1;
      seq.stepsInFlight--;
      if (sampled) seq.tokensInFlight--;
      // Aborted while the backend computed, or ended by the step before (a token run ahead): discarded.
      if (seq.status !== 'running') continue;
      if (seq.promptLogprobs !== null && output.promptLogprobs) collectPromptLogprobs(seq, plan.numTokens[s]!, step.start[s]!, firstRow, output.promptLogprobs);
      if (!sampled) continue;
      const req = seq.request;
      if (!req.samplesStarted) {
        req.samplesStarted = true;
        this.scheduler.cachePrompt(seq);
        for (const sibling of req.sequences) {
          if (sibling.status !== 'held') continue;
          this.jumpForwardAtStart(sibling);
          this.scheduler.enqueue(sibling);
        }
      }
      const token = output.tokens[s]!;
      // The sampled token and the tokens jump-forward appends after it (possibly one joint tokenization).
      let tokens = [token];
      if (seq.matcher && !seq.matcher.terminated) {
        if (!seq.matcher.accept(token)) {
          (this.options.logger ?? console).warn(`request ${req.id}: the backend sampled token ${token}, which its grammar does not allow here`);
        } else if (!this.options.disableRegexJumpForward && req.params.logprobs === null && req.params.maxNewTokens > 0) {
          tokens = this.constraints.continuation(seq, token, seq.remainingNewTokens);
        }
      }
      const delta = req.params.maxNewTokens === 0 ? seq.promptOnlyDelta() : seq.append(tokens[0]!, tokenLogprob(output, s, req.params.logprobs));
      if (seq.numOutputTokens <= 1 && req.params.promptLogprobs !== null) delta.promptLogprobs = req.sequences[0]!.promptLogprobs;
      if (delta.finishReason === null) this.appendForced(seq, delta, tokens.slice(1));
      else seq.matcher?.rollback(tokens.length - 1); // the first token ended the sample (a stop string)
      req.timing.firstToken ??= epochMs();
      if (delta.finishReason !== null) delta.timing = { ...req.timing };
      this.generatedTokensTotal += delta.tokenIds.length;
      req.stream.push(delta);
      if (delta.finishReason !== null) {
        this.scheduler.finish(seq);
        if (--req.unfinished === 0) this.endRequest(req);
      }
    }
  }

  /**
   * Jump-forward before the first sampled token: the text the grammar forces at its start (a
   * JSON object's `{"`) is the sample's first output, streamed at once; its KV is computed with
   * the prompt's. The model is left at least one token to sample, and a matcher never forces a
   * stop token (they are not text to xgrammar), so the sample cannot end here. Off with log-probs
   * (forced tokens have none), prompt log-probs and stop strings.
   */
  private jumpForwardAtStart(seq: Sequence): void {
    const req = seq.request;
    const p = req.params;
    if (!seq.matcher || this.options.disableRegexJumpForward || p.logprobs !== null || p.promptLogprobs !== null || p.stop.length > 0) return;
    const forced = this.constraints.forcedTokens(seq, seq.remainingNewTokens - 1);
    if (forced.length === 0) return;
    const delta = seq.append(forced[0]!, null);
    this.appendForced(seq, delta, forced.slice(1));
    this.generatedTokensTotal += delta.tokenIds.length;
    req.timing.firstToken ??= epochMs();
    req.stream.push(delta);
  }

  /**
   * Appends jump-forward tokens (already accepted by the matcher) to the sample and to `delta`;
   * their KV is computed with the next step's (as a prefill chunk: no decode step of their own).
   */
  private appendForced(seq: Sequence, delta: GenerateDelta, tokens: readonly number[]): void {
    for (const [i, forced] of tokens.entries()) {
      const next = seq.append(forced, null);
      delta.text += next.text;
      delta.tokenIds.push(forced);
      delta.finishReason = next.finishReason;
      delta.matchedStop = next.matchedStop;
      delta.usage = next.usage;
      if (next.finishReason !== null) {
        seq.matcher!.rollback(tokens.length - i - 1); // a stop string ended the sample: the matcher holds its tokens only
        break;
      }
    }
  }

  private endRequest(req: Request): void {
    for (const seq of req.sequences) seq.matcher?.dispose();
    this.requests.delete(req.id);
    req.stream.end();
    if (this.requests.size === 0 && !this.accepting) {
      for (const resolve of this.drainWaiters.splice(0)) resolve();
    }
  }

  /** A backend failure: every request ends with the error, their KV is released, and the engine takes nothing more. */
  private die(e: unknown): void {
    this.error = e instanceof Error ? e.message : String(e);
    this.accepting = false;
    for (const req of this.requests.values()) {
      for (const seq of req.sequences) this.scheduler.abort(seq);
      req.stream.fail(new EngineDeadError(`the backend failed: ${this.error}`));
    }
    this.requests.clear();
    for (const resolve of this.drainWaiters.splice(0)) resolve();
    if (this.options.onFatal) this.options.onFatal(this.error);
    else (this.options.logger ?? console).warn(`engine stopped: ${this.error}`);
  }

  private wake(): void {
    const wake = this.wakeLoop;
    this.wakeLoop = null;
    wake?.();
  }
}

/** Stamps the requests this step runs for the first time. */
function markScheduled(plan: StepPlan): void {
  let now: number | undefined;
  for (const seq of plan.sequences) {
    const timing = seq.request.timing;
    if (timing.scheduled === null) timing.scheduled = now ??= epochMs();
  }
}

