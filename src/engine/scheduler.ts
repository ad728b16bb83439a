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
  chunkedPrefillSize: number;
  maxPrefillTokens: number;
  maxRunningRequests: number;
  policy: 'lpm' | 'fcfs';
}

// Admission reserves this fraction of each running sequence's remaining max_new_tokens (SGLang's
// new_token_ratio): it starts cautious, relaxes every step, and resets when a retraction shows it was too low.
const initNewTokenRatio = 0.7;
const minNewTokenRatio = 0.1;
const newTokenRatioDecay = 0.001;
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
  private newTokenRatio = initNewTokenRatio;
  private waitingSorted = true;

  constructor(
    private readonly pool: KvPool,
    private readonly cache: PrefixCache,
    private readonly config: SchedulerConfig,
    private readonly warn: (message: string) => void,
  ) {}

  enqueue(seq: Sequence): void {
    seq.status = 'waiting';
    this.waiting.push(seq);
    this.waitingSorted = false;
  }

  schedule(): StepPlan | null {
    const plan: StepPlan = { sequences: [], numTokens: [] };
    let budget = this.config.maxPrefillTokens;
    const retractionsBefore = this.retractions;
    for (let i = 0; i < this.running.length; i++) {
      const seq = this.running[i]!;
      const n = seq.pendingTokens === 1 ? 1 : Math.min(seq.pendingTokens, this.config.chunkedPrefillSize, budget);
      if (n <= 0 || !this.reservePages(seq, n)) continue;
      plan.sequences.push(seq);
      plan.numTokens.push(n);
      budget -= n;
    }
    // Admitting right after a retraction would only take back the pages just freed (unless nothing else runs).
    if (this.retractions === retractionsBefore || plan.sequences.length === 0) this.admit(plan, budget);
    this.newTokenRatio = Math.max(minNewTokenRatio, this.newTokenRatio - newTokenRatioDecay);
    return plan.sequences.length > 0 ? plan : null;
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

  private admit(plan: StepPlan, budget: number): void {
    if (this.waiting.length === 0 || budget <= 0 || this.running.length >= this.config.maxRunningRequests) return;
    if (!this.waitingSorted) this.sortWaiting();
    const pageSize = this.config.pageSize;
    let reserved = 0;
    for (const seq of this.running) reserved += this.futureTokens(seq);
    while (this.waiting.length > 0 && budget > 0 && this.running.length < this.config.maxRunningRequests) {
      const seq = this.waiting[0]!;
      this.matchPrefix(seq);
      const n = Math.min(seq.pendingTokens, this.config.chunkedPrefillSize, budget);
      const need = this.futureTokens(seq);
      const available = this.pool.freePages * pageSize + this.cache.evictableTokens - reserved;
      const fits = this.running.length === 0 || need <= available;
      if (!fits || !this.allocatePages(seq, seq.kvLen + n)) {
        this.release(seq);
        break;
      }
      this.waiting.shift();
      seq.status = 'running';
      this.running.push(seq); // in admission order: the last is the newest
      plan.sequences.push(seq);
      plan.numTokens.push(n);
      budget -= n;
      reserved += need;
    }
  }

  /** Tokens of KV this sequence will still need beyond the pages it holds, as admission estimates them. */
  private futureTokens(seq: Sequence): number {
    const expected = seq.tokenIds.length + Math.ceil(seq.remainingNewTokens * this.newTokenRatio);
    return Math.max(0, expected - seq.pages.length * this.config.pageSize);
  }

  /** Reuses the longest cached prefix (or the prompt KV of sample 0) for a sequence about to be admitted. */
  private matchPrefix(seq: Sequence): void {
    const pageSize = this.config.pageSize;
    const limit = seq.tokenIds.length - 1; // the last token is always computed: its logits give the next token
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
      seq.cachedTokens = Math.min(length, seq.numPromptTokens);
      this.prefixHitTokens += seq.cachedTokens;
      this.prefixQueryTokens += seq.numPromptTokens;
    }
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
    const matched = new Map<Sequence, number>();
    for (const seq of this.waiting) matched.set(seq, this.cache.match(seq.tokenIds, seq.tokenIds.length - 1).length);
    this.waiting.sort((a, b) => matched.get(b)! - matched.get(a)! || byArrival(a, b));
  }

  /** Makes sure `seq` has pages for n more tokens, retracting the newest running sequences if need be. */
  private reservePages(seq: Sequence, n: number): boolean {
    while (!this.allocatePages(seq, seq.kvLen + n)) {
      const victim = this.running[this.running.length - 1]!;
      this.retract(victim);
      if (victim === seq) return false;
    }
    return true;
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
    this.newTokenRatio = initNewTokenRatio;
    this.warn(
      `KV cache full: retracted request ${seq.request.id} (sample ${seq.index}, ${seq.tokenIds.length} tokens) ` +
        `to the queue; it will be recomputed (${this.running.length} still running)`,
    );
  }

  /** Gives a sequence's computed KV to the prefix cache and drops its own page references. */
  private release(seq: Sequence): void {
    this.cache.insert(seq.tokenIds, seq.kvLen, seq.pages.view());
    this.cache.unlock(seq.cacheNode);
    seq.cacheNode = null;
    for (let i = 0; i < seq.pages.length; i++) this.pool.release(seq.pages.get(i));
    seq.pages.clear();
    seq.kvLen = 0;
  }
}

function remove<T>(list: T[], item: T): void {
  const i = list.lastIndexOf(item);
  if (i >= 0) list.splice(i, 1);
}
