import type { GrammarMatcher } from '@mlc-ai/web-xgrammar';

/**
 * One sequence's position in its grammar: which tokens may come next (a bitmask, one bit per
 * token id, set = allowed), advanced token by token as the sequence grows, and rolled back when
 * tokens are taken back. Every change is also written to a journal, which the mask worker's copy
 * of this matcher replays before it computes a mask (src/grammar/mask-worker.ts).
 */
export class TokenMatcher {
  private disposed = false;
  /** Changes not yet sent to the mask worker: a token id accepted, or -n for n tokens rolled back. */
  private journal: number[] = [];

  constructor(
    private readonly matcher: GrammarMatcher,
    readonly maskWords: number,
    private readonly onDispose?: () => void,
  ) {}

  /** Writes the next token's allowed-token bitmask into target[offset, offset + maskWords). */
  async fillMask(target: Int32Array, offset: number): Promise<void> {
    const bits = await this.matcher.getNextTokenBitmask();
    target.set(bits.subarray(0, this.maskWords), offset);
  }

  /** Advances past `token`; false when the grammar does not allow it here (the state is then unchanged). */
  accept(token: number): boolean {
    const accepted = this.matcher.acceptToken(token);
    if (accepted) this.journal.push(token);
    return accepted;
  }

  /** Takes back the last `numTokens` accepted tokens. */
  rollback(numTokens: number): void {
    if (numTokens <= 0) return;
    this.matcher.rollBack(numTokens);
    this.journal.push(-numTokens);
  }

  /** The changes since the last call (what the worker's copy must replay, in order). */
  takeJournal(): number[] {
    const changes = this.journal;
    this.journal = [];
    return changes;
  }

  /** Replays another matcher's journal (this one is its copy in the mask worker); false when it diverged. */
  replay(journal: readonly number[]): boolean {
    for (const change of journal) {
      if (change < 0) this.matcher.rollBack(-change);
      else if (!this.matcher.acceptToken(change)) return false;
    }
    return true;
  }

  /** The longest text every continuation starts with (what jump-forward may append without the model). */
  forcedText(): string {
    return this.matcher.findJumpForwardString();
  }

  /** A stop token was accepted where the grammar may end. */
  get terminated(): boolean {
    return this.matcher.isTerminated();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.matcher.dispose();
    this.onDispose?.();
  }
}
