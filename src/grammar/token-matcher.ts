import type { GrammarMatcher } from '@mlc-ai/web-xgrammar';

/**
 * One sequence's position in its grammar: which tokens may come next (a bitmask, one bit per
 * token id, set = allowed), advanced token by token as the sequence grows, and rolled back when
 * tokens are taken back.
 */
export class TokenMatcher {
  private disposed = false;

  constructor(
    private readonly matcher: GrammarMatcher,
    readonly maskWords: number,
  ) {}

  /** Writes the next token's allowed-token bitmask into target[offset, offset + maskWords). */
  async fillMask(target: Int32Array, offset: number): Promise<void> {
    const bits = await this.matcher.getNextTokenBitmask();
    target.set(bits.subarray(0, this.maskWords), offset);
  }

  /** Advances past `token`; false when the grammar does not allow it here (the state is then unchanged). */
  accept(token: number): boolean {
    return this.matcher.acceptToken(token);
  }

  /** Takes back the last `numTokens` accepted tokens. */
  rollback(numTokens: number): void {
    if (numTokens > 0) this.matcher.rollBack(numTokens);
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
  }
}
