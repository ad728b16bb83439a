import { GrammarCompiler } from '../grammar/grammar-compiler.js';
import type { LoadedModel } from '../model/load.js';
import type { TokenMaskBatch } from './backend.js';
import { producesToken } from './batch-builder.js';
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
  fillMs: number;
  /** Tokens appended by jump-forward (no decode step of their own). */
  forcedTokens: number;
}

/**
 * Structured output in the engine: compiles a request's grammar (the compiler is created on the
 * first constrained request, so unconstrained serving never loads xgrammar), gives each sample
 * its matcher, and builds each step's allowed-token masks for the rows that sample a token.
 */
export class ConstrainedDecoding {
  private compiler: Promise<GrammarCompiler> | null = null;
  readonly stats: MaskStats = { steps: 0, rows: 0, fillMs: 0, forcedTokens: 0 };

  constructor(private readonly model: LoadedModel) {}

  /** Compiles the request's grammar and gives every sample a matcher; rejects with InvalidRequestError. */
  async prepare(req: Request): Promise<void> {
    const spec = req.params.grammar!;
    const compiler = await this.grammarCompiler();
    const compiled = await compiler.compile(spec);
    const stops = [...req.stopTokenIds];
    for (const seq of req.sequences) seq.matcher = await compiler.matcher(compiled, stops.length > 0 ? stops : this.model.stopTokenIds);
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
    const bits = new Int32Array(rows * words);
    let resolve!: () => void;
    const ready = new Promise<void>((r) => (resolve = r));
    const fill = async () => {
      const start = performance.now();
      try {
        for (let s = 0; s < sequences.length; s++) {
          if (rowOf[s]! >= 0) await sequences[s]!.matcher!.fillMask(bits, rowOf[s]! * words);
        }
      } catch {
        bits.fill(-1); // a mask that cannot be computed constrains nothing rather than stalling the step
      } finally {
        this.stats.steps++;
        this.stats.rows += rows;
        this.stats.fillMs += performance.now() - start;
        resolve();
      }
    };
    return { batch: { rowOf, words, bits, ready }, fill };
  }

  /**
   * Jump-forward: the tokens of the text the grammar forces next (every continuation starts with
   * it), already accepted by the sequence's matcher, at most `limit`. The text is tokenized on its
   * own; tokens the matcher refuses (a token boundary the grammar does not allow) end the run.
   */
  forcedTokens(seq: Sequence, limit: number): number[] {
    const matcher = seq.matcher;
    if (!matcher || matcher.terminated || limit <= 0) return [];
    const text = matcher.forcedText();
    if (text === '') return [];
    const accepted: number[] = [];
    for (const id of this.model.tokenizer.encode(text, false)) {
      if (accepted.length >= limit || !matcher.accept(id)) break;
      accepted.push(id);
    }
    this.stats.forcedTokens += accepted.length;
    return accepted;
  }

  private grammarCompiler(): Promise<GrammarCompiler> {
    if (!this.compiler) {
      this.compiler = GrammarCompiler.create(this.model.tokenizer, this.model.config.vocabSize, this.model.stopTokenIds);
      this.compiler.catch(() => (this.compiler = null));
    }
    return this.compiler;
  }

  async close(): Promise<void> {
    const compiler = this.compiler;
    this.compiler = null;
    (await compiler?.catch(() => null))?.dispose();
  }
}
