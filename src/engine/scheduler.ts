import type { KvPool } from './kv-pool.js';
import type { CacheNode, PrefixCache } from './prefix-cache.js';
import type { Sequence } from './sequence.js';

/** What one step runs: each sequence with its number of new tokens (a prefill chunk or one decode token). */
export interface StepPlan {
  sequences: Sequence[];
  numTokens: number[];
}

export interface SchedulerConfig {
  pageSize: number;
  /** Prompt tokens one request prefills per step, and all prefills together while decodes run; -1: no chunking. */
  chunkedPrefillSize: number;
  maxPrefillTokens: number;
  maxRunningRequests: number;
  policy: 'lpm' | 'fcfs';
  /** SGLang's --schedule-conservativeness: scales how much of max_new_tokens admission reserves (above 1: fewer retractions). */
  scheduleConservativeness: number;
  /** Admissions of later arrivals that lpm may let pass a waiting sequence before it goes first. */
  lpmMaxPassOvers: number;
  /** Least interval between two retraction warnings (the count is in the metrics). */
  retractionWarningIntervalMs: number;
  now?: () => number;
}

// Admission reserves this fraction of each running sequence's remaining max_new_tokens (SGLang's
// new_token_ratio): it starts cautious, relaxes every step, and resets when a retraction shows it was too low.
const baseInitNewTokenRatio = 0.7;
const minNewTokenRatioFactor = 0.14;
const newTokenRatioDecaySteps = 600;
// The estimate counts at most this many of a request's remaining max_new_tokens (SGLang's
// CLIP_MAX_NEW_TOKENS_ESTIMATION): a chat request defaulting to the rest of a long context would
// otherwise reserve most of the pool for tokens it will rarely generate.
export const clipMaxNewTokensEstimation = 4096;
// Above this many waiting sequences, lpm's prefix matching costs more than it saves (as SGLang).
const lpmMaxWaiting = 128;

/**
 * Continuous batching: every step, each running sequence (oldest first) gets its decode token
 * or next prefill chunk; then waiting sequences are admitted in policy order while the token
 * budget, the running limit and the KV pool (with headroom for decode growth) allow. When the
 * pool cannot supply a page, the newest running sequence is retracted to the queue.
 */
export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  retractions = 0;
  prefixHitTokens = 0;
  prefixQueryTokens = 0;
  private readonly initNewTokenRatio: number;
  private readonly minNewTokenRatio: number;
  private readonly newTokenRatioDecay: number;
  private newTokenRatio: number;
  private waitingSorted = true;
  private readonly chunkSize: number;
  private readonly retractionWarnings: RateLimitedWarning;

  constructor(
    private readonly pool: KvPool,
    private readonly cache: PrefixCache,
    private readonly config: SchedulerConfig,
    warn: (message: string) => void,
  ) {
    this.initNewTokenRatio = Math.min(baseInitNewTokenRatio * config.scheduleConservativeness, 1);
    this.minNewTokenRatio = Math.min(this.initNewTokenRatio * minNewTokenRatioFactor, 1);
    this.newTokenRatioDecay = (this.initNewTokenRatio - this.minNewTokenRatio) / newTokenRatioDecaySteps;
    this.newTokenRatio = this.initNewTokenRatio;
    this.chunkSize = config.chunkedPrefillSize > 0 ? config.chunkedPrefillSize : Infinity;
    this.retractionWarnings = new RateLimitedWarning(warn, config.retractionWarningIntervalMs, config.now ?? Date.now);
  }

  enqueue(seq: Sequence): void {
    seq.status = 'waiting';
    this.waiting.push(seq);
    this.waitingSorted = false;
  }

  /**
   * The step's plan. Its arrays are kept and written by index, then trimmed: emptying an array
   * with `length = 0` would drop its storage, and regrowing two arrays of every running sequence
   * is most of what a decode step allocates in the scheduler. Two plans take turns: the engine
   * holds at most two at once (a step in flight and the one planned while it runs).
   */
  private readonly plans: [StepPlan, StepPlan] = [
    { sequences: [], numTokens: [] },
    { sequences: [], numTokens: [] },
  ];
  private plan = this.plans[0];
  private planned = 0;

  private addToPlan(seq: Sequence, numTokens: number): void {
    this.plan.sequences[this.planned] = seq;
    this.plan.numTokens[this.planned] = numTokens;
    this.planned++;
  }

  schedule(): StepPlan | null {
    const plan = (this.plan = this.plan === this.plans[0] ? this.plans[1] : this.plans[0]);
    this.planned = 0;
    // Decode tokens count against the step's budget. While decodes run, all prefills of the step
    // also share one chunk (SGLang's per-batch chunk budget), so a long prompt cannot stretch the
    // step that carries everyone's next token.
    let decodes = 0;
    for (const seq of this.running) if (seq.pendingTokens === 1) decodes++;
    let budget = this.config.maxPrefillTokens - decodes;
    if (decodes > 0) budget = Math.min(budget, this.chunkSize);
    const prefillBudget = budget;
    this.evictForRunning(budget);
    const retractionsBefore = this.retractions;
    for (let i = 0; i < this.running.length; i++) {
      const seq = this.running[i]!;
      const decode = seq.pendingTokens === 1;
      const n = decode ? 1 : this.prefillTokens(seq, budget, budget === prefillBudget);
      if (n <= 0 || !this.reservePages(seq, i, n)) continue;
      this.addToPlan(seq, n);
      if (!decode) budget -= n;
    }
    // Admitting right after a retraction would only take back the pages just freed (unless nothing else runs).
    if (this.retractions === retractionsBefore || this.planned === 0) this.admit(budget, budget === prefillBudget);
    this.newTokenRatio = Math.max(this.minNewTokenRatio, this.newTokenRatio - this.newTokenRatioDecay);
    plan.sequences.length = this.planned;
    plan.numTokens.length = this.planned;
    return this.planned > 0 ? plan : null;
  }

  /**
   * Prompt tokens `seq` prefills this step: its next chunk within the budget. Without chunking a
   * prompt runs whole, in a step of its own when it is larger than the budget.
   */
  private prefillTokens(seq: Sequence, budget: number, first: boolean): number {
    if (this.chunkSize !== Infinity) return Math.min(seq.pendingTokens, this.chunkSize, budget);
    return seq.pendingTokens <= budget || first ? seq.pendingTokens : 0;
  }

  /** One eviction per step for what the running sequences' new tokens need, rather than one per sequence. */
  private evictForRunning(budget: number): void {
    const need = this.pagesForRunning(budget);
    if (need > this.pool.freePages) this.cache.evict(need);
  }

  /** Pages the running sequences' next tokens need beyond those they hold (prefills as if each had the whole budget). */
  private pagesForRunning(budget: number): number {
    const pageSize = this.config.pageSize;
    let need = 0;
    for (const seq of this.running) {
      const n = seq.pendingTokens === 1 ? 1 : Math.min(seq.pendingTokens, this.chunkSize, budget);
      need += Math.max(0, Math.ceil((seq.kvLen + n) / pageSize) - seq.pages.length);
    }
    return need;
  }

  /**
   * Whether the next step can be planned while one is in flight: the running sequences' next
   * tokens fit in free and evictable pages, so planning retracts nobody (a sequence in flight is
   * never retracted; under pressure the engine plans after the step instead).
   */
  hasRoomForRunning(): boolean {
    const evictablePages = Math.floor(this.cache.evictableTokens / this.config.pageSize);
    return this.pagesForRunning(this.config.maxPrefillTokens) <= this.pool.freePages + evictablePages;
  }

  /** A finished sequence leaves the running set; its KV goes to the prefix cache. */
  finish(seq: Sequence): void {
    this.release(seq);
    remove(this.running, seq);
    seq.status = 'finished';
  }

  abort(seq: Sequence): void {
    if (seq.status === 'running') this.finish(seq);
    else if (seq.status === 'waiting') remove(this.waiting, seq);
    seq.status = 'finished';
  }

  private admit(budget: number, noPrefillYet: boolean): void {
    if (this.waiting.length === 0 || budget <= 0 || this.running.length >= this.config.maxRunningRequests) return;
    if (!this.waitingSorted) this.sortWaiting();
    const pageSize = this.config.pageSize;
    let reserved = 0;
    for (const seq of this.running) reserved += this.futureTokens(seq);
    let latestAdmitted = -1;
    while (this.waiting.length > 0 && budget > 0 && this.running.length < this.config.maxRunningRequests) {
      const seq = this.waiting[0]!;
      this.matchPrefix(seq);
      const n = this.prefillTokens(seq, budget, noPrefillYet);
      const need = this.futureTokens(seq);
      const available = this.pool.freePages * pageSize + this.cache.evictableTokens - reserved;
      const fits = this.running.length === 0 || need <= available;
      if (n <= 0 || !fits || !this.allocatePages(seq, seq.kvLen + n)) {
        this.release(seq);
        break;
      }
      latestAdmitted = Math.max(latestAdmitted, seq.request.arrival);
      this.waiting.shift();
      seq.status = 'running';
      this.running.push(seq); // in admission order: the last is the newest
      this.addToPlan(seq, n);
      budget -= n;
      noPrefillYet = false;
      reserved += need;
    }
    if (latestAdmitted >= 0 && this.config.policy === 'lpm') {
      for (const seq of this.waiting) if (seq.request.arrival < latestAdmitted) seq.passedOver++;
    }
  }

  /** Tokens of KV this sequence will still need beyond the pages it holds, as admission estimates them. */
  private futureTokens(seq: Sequence): number {
    const expected = seq.tokenIds.length + Math.ceil(Math.min(seq.remainingNewTokens, clipMaxNewTokensEstimation) * this.newTokenRatio);
    return Math.max(0, expected - seq.pages.length * this.config.pageSize);
  }

  /** Reuses the longest cached prefix (or the prompt KV of sample 0) for a sequence about to be admitted. */
  private matchPrefix(seq: Sequence): void {
    const pageSize = this.config.pageSize;
    // The last token is always computed: its logits give the next token; so are prompt tokens whose log-probs are wanted.
    const limit = Math.min(seq.tokenIds.length - 1, seq.prefixReuseLimit);
    let { node, pages, length }: { node: CacheNode | null; pages: ArrayLike<number> & Iterable<number>; length: number } =
      this.cache.match(seq.tokenIds, limit);
    const first = seq.request.sequences[0]!;
    if (seq !== first && first.status === 'running') {
      let shared = Math.min(first.kvLen, seq.numPromptTokens, limit);
      shared -= shared % pageSize;
      if (shared > length) {
        node = null;
        pages = first.pages.view(shared / pageSize);
        length = shared;
      }
    }
    seq.pages.clear();
    for (const page of pages) {
      this.pool.retain(page);
      seq.pages.push(page);
    }
    this.cache.lock(node);
    seq.cacheNode = node;
    seq.kvLen = length;
    if (seq.cachedTokens < 0) {
      if (seq === first) {
        seq.cachedTokens = Math.min(length, seq.numPromptTokens);
        this.prefixHitTokens += seq.cachedTokens;
        this.prefixQueryTokens += seq.numPromptTokens;
      } else {
        // Sharing sample 0's prompt is not a prefix-cache hit: the samples report what sample 0 found.
        seq.cachedTokens = Math.max(0, first.cachedTokens);
      }
    }
  }

  /**
   * Sample 0 has computed the prompt: its KV goes into the prefix cache with sample 0 holding the
   * lock, so the other samples share it through the cache, locked, and eviction counts it right.
   */
  cachePrompt(seq: Sequence): void {
    const length = seq.numPromptTokens;
    if (seq.kvLen < length) return;
    this.cache.insert(seq.tokenIds, length, seq.pages.view());
    const { node } = this.cache.match(seq.tokenIds, length);
    this.cache.lock(node);
    this.cache.unlock(seq.cacheNode);
    seq.cacheNode = node;
  }

  /**
   * Orders the queue by policy for the next admission. The engine calls it while the backend
   * computes a step, so admission usually finds the queue already in order.
   */
  prepareAdmission(): void {
    // lpm priorities change as the cache does, so lpm re-sorts every step.
    if (!this.waitingSorted || (this.config.policy === 'lpm' && this.waiting.length > 1)) this.sortWaiting();
  }

  private sortWaiting(): void {
    this.waitingSorted = true;
    const byArrival = (a: Sequence, b: Sequence) => a.request.arrival - b.request.arrival || a.index - b.index;
    if (this.config.policy === 'fcfs' || this.waiting.length > lpmMaxWaiting) {
      this.waiting.sort(byArrival);
      return;
    }
    // A sequence passed over too often goes first whatever its prefix, so short prompts (a health
    // probe is a single BOS token) cannot starve behind a stream of cache hits.
    const matched = new Map<Sequence, number>();
    const maxPassOvers = this.config.lpmMaxPassOvers;
    for (const seq of this.waiting) {
      matched.set(seq, seq.passedOver >= maxPassOvers ? Infinity : this.cache.match(seq.tokenIds, seq.tokenIds.length - 1).length);
    }
    this.waiting.sort((a, b) => matched.get(b)! - matched.get(a)! || byArrival(a, b));
  }

  /**
   * Makes sure `seq` (running[index]) has pages for n more tokens, retracting the newest running
   * sequences not yet planned if need be (never one in a step still in flight: its output is on
   * its way).
   */
  private reservePages(seq: Sequence, index: number, n: number): boolean {
    while (!this.allocatePages(seq, seq.kvLen + n)) {
      const victim = this.newestRetractable(index);
      if (!victim) return false;
      this.retract(victim);
      if (victim === seq) return false;
    }
    return true;
  }

  private newestRetractable(from: number): Sequence | null {
    for (let i = this.running.length - 1; i >= from; i--) if (this.running[i]!.stepsInFlight === 0) return this.running[i]!;
    return null;
  }

  private allocatePages(seq: Sequence, length: number): boolean {
    const need = Math.ceil(length / this.config.pageSize) - seq.pages.length;
    if (need <= 0) return true;
    if (this.pool.freePages < need) this.cache.evict(need);
    const pages = this.pool.allocate(need);
    if (!pages) return false;
    for (const page of pages) seq.pages.push(page);
    return true;
  }

  private retract(seq: Sequence): void {
    this.release(seq);
    remove(this.running, seq);
    this.enqueue(seq);
    this.retractions++;
    this.newTokenRatio = this.initNewTokenRatio;
    this.retractionWarnings.report(
      (suppressed) =>
        `KV cache full: retracted request ${seq.request.id} (sample ${seq.index}, ${seq.tokenIds.length} tokens) ` +
        `to the queue; it will be recomputed (${this.running.length} still running)` +
        (suppressed > 0 ? `; ${suppressed} more retractions since the last warning` : '') +
        ` (${this.retractions} in all: sluice:num_preemptions_total)`,
    );
  }

  /** Gives a sequence's computed KV to the prefix cache and drops its own page references. */
  private release(seq: Sequence): void {
    // KV of a position whose token is still in flight is not cached: the host does not know the token.
    this.cache.insert(seq.tokenIds, Math.min(seq.kvLen, seq.tokenIds.length), seq.pages.view());
    this.cache.unlock(seq.cacheNode);
    seq.cacheNode = null;
    for (let i = 0; i < seq.pages.length; i++) this.pool.release(seq.pages.get(i));
    seq.pages.clear();
    seq.kvLen = 0;
  }
}

/** A warning logged at most once per interval; the next one says how many were held back. */
class RateLimitedWarning {
  private lastAt = -Infinity;
  private suppressed = 0;

  constructor(
    private readonly warn: (message: string) => void,
    private readonly intervalMs: number,
    private readonly now: () => number,
  ) {}

  report(message: (suppressed: number) => string): void {
    const now = this.now();
    if (now - this.lastAt < this.intervalMs) {
      this.suppressed++;
      return;
    }
    this.warn(message(this.suppressed));
    this.lastAt = now;
    this.suppressed = 0;
  }
}

function remove<T>(list: T[], item: T): void {
  const i = list.lastIndexOf(item);
  if (i >= 0) list.splice(i, 1);
}
