import { createHash } from 'node:crypto';
import type { CacheNode, PrefixCacheObserver } from './prefix-cache.js';

/** vLLM's KV-cache events, as its ZeroMQ publisher sends them (block hashes as unsigned 64-bit). */
export type KvEvent =
  | { type: 'BlockStored'; blockHashes: bigint[]; parentBlockHash: bigint | null; tokenIds: number[]; blockSize: number }
  | { type: 'BlockRemoved'; blockHashes: bigint[] }
  | { type: 'AllBlocksCleared' };

/** Where batches of events go (one batch per synchronous run of cache changes, e.g. one engine step). */
export type KvEventSink = (events: KvEvent[]) => void;

/**
 * A block's hash: a function of its parent's hash and its tokens, so it names the whole prefix
 * up to the block's end (as vLLM's chained block hashes do). The first 8 bytes of a SHA-256.
 */
export function blockHash(parent: bigint | null, tokens: readonly number[]): bigint {
  const buffer = Buffer.alloc(9 + 4 * tokens.length);
  if (parent !== null) {
    buffer.writeUInt8(1, 0);
    buffer.writeBigUInt64BE(parent, 1);
  }
  for (let i = 0; i < tokens.length; i++) buffer.writeUInt32LE(tokens[i]! >>> 0, 9 + 4 * i);
  return createHash('sha256').update(buffer).digest().readBigUInt64BE(0);
}

interface OwnedBlock {
  /** Absolute position just past the block's last token. */
  end: number;
  hash: bigint;
}

/**
 * Turns the radix cache's node changes into block events for a block size of its own (llm-d
 * uses 16 or 64 tokens), independent of the engine's page size. The cached set of blocks is
 * every block that lies wholly inside a cached prefix; each block belongs to the node holding
 * its last token, so a node's insertion stores its blocks, its removal removes them (once no
 * other node holds them), and a split only moves blocks between nodes (no event).
 */
export class KvBlockTracker implements PrefixCacheObserver {
  private readonly blocks = new Map<CacheNode, OwnedBlock[]>();
  /**
   * Nodes holding each block. Usually one; when the block size is not a multiple of the page
   * size, two sibling branches can both hold a block that ends inside the page where they part.
   */
  private readonly holders = new Map<bigint, number>();
  private pending: KvEvent[] = [];
  private flushScheduled = false;

  constructor(
    readonly blockSize: number,
    private readonly sink: KvEventSink,
  ) {
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`KV event block size must be a positive integer, got ${blockSize}`);
  }

  /** Distinct blocks held now. */
  get size(): number {
    return this.holders.size;
  }

  stored(node: CacheNode, tokens: readonly number[], start: number, end: number): void {
    const size = this.blockSize;
    const first = Math.floor(start / size);
    const last = Math.floor(end / size) - 1;
    if (last < first) return;
    const owned: OwnedBlock[] = [];
    let previous = first === 0 ? null : this.lastHashAbove(node);
    // A run of blocks new to the set goes out as one BlockStored, chained to the block before it.
    let run: { parent: bigint | null; hashes: bigint[]; from: number } | null = null;
    const flushRun = (to: number) => {
      if (!run) return;
      this.emit({ type: 'BlockStored', blockHashes: run.hashes, parentBlockHash: run.parent, tokenIds: tokens.slice(run.from * size, to * size), blockSize: size });
      run = null;
    };
    for (let k = first; k <= last; k++) {
      const parent = previous;
      previous = blockHash(parent, tokens.slice(k * size, (k + 1) * size));
      owned.push({ end: (k + 1) * size, hash: previous });
      const holders = this.holders.get(previous) ?? 0;
      this.holders.set(previous, holders + 1);
      if (holders > 0) {
        flushRun(k);
        continue;
      }
      run ??= { parent, hashes: [], from: k };
      run.hashes.push(previous);
    }
    flushRun(last + 1);
    this.blocks.set(node, owned);
  }

  split(upper: CacheNode, lower: CacheNode, boundary: number): void {
    const owned = this.blocks.get(lower);
    if (!owned) return;
    const moved = owned.filter((b) => b.end <= boundary);
    if (moved.length === 0) return;
    this.blocks.set(upper, moved);
    const kept = owned.slice(moved.length);
    if (kept.length > 0) this.blocks.set(lower, kept);
    else this.blocks.delete(lower);
  }

  removed(node: CacheNode): void {
    const owned = this.blocks.get(node);
    if (!owned) return;
    this.blocks.delete(node);
    const gone: bigint[] = [];
    for (const { hash } of owned) {
      const holders = this.holders.get(hash)! - 1;
      if (holders > 0) {
        this.holders.set(hash, holders);
      } else {
        this.holders.delete(hash);
        gone.push(hash);
      }
    }
    if (gone.length > 0) this.emit({ type: 'BlockRemoved', blockHashes: gone });
  }

  flushed(): void {
    if (this.blocks.size === 0) this.emit({ type: 'AllBlocksCleared' });
  }

  /** The hash of the last block that ends above `node` (its nearest ancestor owning a block). */
  private lastHashAbove(node: CacheNode): bigint | null {
    for (let n = node.parent; n !== null; n = n.parent) {
      const owned = this.blocks.get(n);
      if (owned) return owned[owned.length - 1]!.hash;
    }
    return null;
  }

  /** Events of one synchronous run of cache changes go out together, as one batch. */
  private emit(event: KvEvent): void {
    this.pending.push(event);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      const batch = this.pending;
      this.pending = [];
      this.sink(batch);
    });
  }
}
