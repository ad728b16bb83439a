import { performance } from 'node:perf_hooks';
import { GrammarCompiler } from '../grammar/grammar-compiler.js';
import { continuationOf, forcedTokens } from '../grammar/jump-forward.js';
import { MaskWorker } from '../grammar/mask-worker.js';
import type { FillRow } from '../grammar/mask-protocol.js';
import { grammarVocabulary } from '../grammar/tokenizer-info.js';
import type { TokenMatcher } from '../grammar/token-matcher.js';
import type { LoadedModel } from '../model/load.js';
import type { TokenMaskBatch } from './backend.js';
import { producesToken } from './batch-builder.js';
import type { EngineLogger } from './options.js';
import type { StepPlan } from './scheduler.js';
import type { Request, Sequence } from './sequence.js';

/** The masks of one step, and the call that computes them (started once the backend runs the step). */
export interface StepMasks {
  batch: TokenMaskBatch;
  fill(): Promise<void>;
}

/** Mask work since start, for the structured-output benchmark. */
export interface MaskStats {
  steps: number;
  rows: number;
  /** Time spent computing masks (on the worker when it runs them). */
  fillMs: number;
  /** Time backends waited for masks they asked for (the mask work not hidden behind the step). */
  exposedMs: number;
  /** Tokens appended by jump-forward (no decode step of their own). */
  forcedTokens: number;
}

export interface ConstrainedDecodingOptions {
  /** Compute masks on a worker thread (EngineOptions.maskWorker). */
  maskWorker: boolean;
  logger: EngineLogger;
}

/**
 * Structured output in the engine: compiles a request's grammar (the compiler is created on the
 * first constrained request, so unconstrained serving never loads xgrammar), gives each sample
 * its matcher, and builds each step's allowed-token masks for the rows that sample a token.
 * The matchers live on this thread (accepting tokens, jump-forward, rollback are cheap); the masks,
 * the costly part, are computed by the mask worker's copies of them while the backend runs.
 */
export class ConstrainedDecoding {
  private runtime: Promise<{ compiler: GrammarCompiler; worker: MaskWorker | null }> | null = null;
  private worker: MaskWorker | null = null;
  /** The worker's name for each matcher. */
  private readonly mirrorIds = new WeakMap<TokenMatcher, number>();
  private nextMirrorId = 1;
  /** Mask memory reused across steps when masks are computed on this thread. */
  private localBits = new Int32Array(0);
  readonly stats: MaskStats = { steps: 0, rows: 0, fillMs: 0, exposedMs: 0, forcedTokens: 0 };

  constructor(
    private readonly model: LoadedModel,
    private readonly options: ConstrainedDecodingOptions,
  ) {}

  /** Compiles the request's grammar and gives every sample a matcher; rejects with InvalidRequestError. */
  async prepare(req: Request): Promise<void> {
    const spec = req.params.grammar!;
    const { compiler, worker } = await this.grammarRuntime();
    const stops = req.stopTokenIds.size > 0 ? [...req.stopTokenIds] : this.model.stopTokenIds;
    const ids = req.sequences.map(() => this.nextMirrorId++);
    // The worker compiles its copy at the same time as this thread.
    const mirrored = worker ? Promise.all(ids.map((id) => worker.add(id, spec, stops))) : null;
    mirrored?.catch(() => {});
    const compiled = await compiler.compile(spec);
    for (const [i, seq] of req.sequences.entries()) {
      const id = ids[i]!;
      seq.matcher = await compiler.matcher(compiled, stops, () => this.worker?.drop(id));
      this.mirrorIds.set(seq.matcher, id);
    }
    if (mirrored) await mirrored.catch((e: Error) => this.workerFailed(e));
  }

  /** Null when no row of the step samples under a grammar. */
  masksFor(plan: StepPlan): StepMasks | null {
    const { sequences, numTokens } = plan;
    if (!sequences.some((seq) => seq.matcher)) return null; // unconstrained steps allocate nothing
    let rows = 0;
    const rowOf = new Int32Array(sequences.length).fill(-1);
    for (let s = 0; s < sequences.length; s++) {
      const seq = sequences[s]!;
      if (seq.matcher && !seq.matcher.terminated && producesToken(seq, numTokens[s]!)) rowOf[s] = rows++;
    }
    if (rows === 0) return null;
    const words = sequences.find((seq) => seq.matcher)!.matcher!.maskWords;
    const worker = this.worker;
    const bits = worker ? worker.maskWords(rows * words) : this.localMaskWords(rows * words);
    const batch = new PendingMasks(rowOf, words, bits, (ms) => (this.stats.exposedMs += ms));
    const fill = async () => {
      const start = performance.now();
      let computeMs: number | null = null;
      try {
        if (worker) computeMs = await this.fillOnWorker(worker, sequences, rowOf, words).catch((e: Error) => this.workerFailed(e));
        if (computeMs === null) {
          for (let s = 0; s < sequences.length; s++) {
            if (rowOf[s]! >= 0) await sequences[s]!.matcher!.fillMask(bits, rowOf[s]! * words);
          }
        }
      } catch {
        bits.fill(-1); // a mask that cannot be computed constrains nothing rather than stalling the step
      } finally {
        this.stats.steps++;
        this.stats.rows += rows;
        this.stats.fillMs += computeMs ?? performance.now() - start;
        batch.resolve();
      }
    };
    return { batch, fill };
  }

  /** Jump-forward: the tokens the grammar forces next, already accepted by the sample's matcher, at most `limit` (src/grammar/jump-forward.ts). */
  forcedTokens(seq: Sequence, limit: number): number[] {
    if (!seq.matcher) return [];
    const tokens = forcedTokens(seq.matcher, this.model.tokenizer, limit);
    this.stats.forcedTokens += tokens.length;
    return tokens;
  }

  /**
   * Jump-forward after a sampled token its matcher has accepted: the tokens to append, the
   * sampled one first or, where it and the forced text tokenize together differently, their
   * joint tokens (the matcher rolled back and advanced to match); at most `limit`.
   */
  continuation(seq: Sequence, sampled: number, limit: number): number[] {
    if (!seq.matcher) return [sampled];
    const tokens = continuationOf(seq.matcher, this.model.tokenizer, sampled, limit);
    this.stats.forcedTokens += tokens.length - 1;
    return tokens;
  }

  private fillOnWorker(worker: MaskWorker, sequences: readonly Sequence[], rowOf: Int32Array, words: number): Promise<number> {
    const rows: FillRow[] = [];
    for (let s = 0; s < sequences.length; s++) {
      if (rowOf[s]! < 0) continue;
      const matcher = sequences[s]!.matcher!;
      rows.push({ id: this.mirrorIds.get(matcher)!, journal: matcher.takeJournal(), row: rowOf[s]! });
    }
    return worker.fill(rows, words);
  }

  private localMaskWords(length: number): Int32Array {
    if (this.localBits.length < length) this.localBits = new Int32Array(Math.max(length, this.localBits.length * 2));
    return this.localBits.subarray(0, length);
  }

  /** From now on masks are computed on this thread (whose matchers are always right). */
  private workerFailed(e: Error): null {
    if (this.worker) {
      this.options.logger.warn(`structured output: the mask worker failed (${e.message}); token masks are computed on the engine's thread from now on`);
      void this.worker.close();
      this.worker = null;
    }
    return null;
  }

  private grammarRuntime(): Promise<{ compiler: GrammarCompiler; worker: MaskWorker | null }> {
    if (!this.runtime) {
      const vocab = grammarVocabulary(this.model.tokenizer, this.model.config.vocabSize);
      const stops = this.model.stopTokenIds;
      const worker = this.options.maskWorker ? MaskWorker.start(vocab, stops).catch((e: Error) => this.workerFailed(e)) : Promise.resolve(null);
      this.runtime = Promise.all([GrammarCompiler.fromVocabulary(vocab, stops), worker]).then(([compiler, started]) => {
        this.worker = started;
        return { compiler, worker: started };
      });
      this.runtime.catch(() => (this.runtime = null));
    }
    return this.runtime;
  }

  async close(): Promise<void> {
    const runtime = this.runtime;
    this.runtime = null;
    const loaded = await runtime?.catch(() => null);
    loaded?.compiler.dispose();
    await this.worker?.close();
    this.worker = null;
  }
}

/**
 * A step's masks while they are computed. `ready` is read by the backend when it is about to
 * wait for them, so the time from that read to the masks being done is the mask work the step
 * did not hide.
 */
class PendingMasks implements TokenMaskBatch {
  private readonly done: Promise<void>;
  private markDone!: () => void;
  private awaitedAt: number | null = null;
  private finished = false;

  constructor(
    readonly rowOf: Int32Array,
    readonly words: number,
    readonly bits: Int32Array,
    private readonly onExposed: (ms: number) => void,
  ) {
    this.done = new Promise((resolve) => (this.markDone = resolve));
  }

  get ready(): Promise<void> {
    if (!this.finished) this.awaitedAt ??= performance.now();
    return this.done;
  }

  resolve(): void {
    this.finished = true;
    if (this.awaitedAt !== null) this.onExposed(performance.now() - this.awaitedAt);
    this.markDone();
  }
}
