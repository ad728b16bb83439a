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
 * A block's hash as vLLM computes it and llm-d's KV-cache indexer recomputes it from a prompt:
 * the low 64 bits (last 8 bytes, big-endian) of SHA-256 over the canonical CBOR encoding of
 * [parent hash, token ids, null]. The first block's parent is the hash of the seed (vLLM's
 * NONE_HASH from PYTHONHASHSEED; llm-d's hashSeed), though its events say parent null.
 */
export function blockHash(parent: bigint | null, tokens: readonly number[], seed = ''): bigint {
  const out = new CborWriter(16 + 5 * tokens.length);
  out.head(4, 3n);
  out.head(0, parent ?? seedHash(seed));
  out.head(4, BigInt(tokens.length));
  for (const token of tokens) out.head(0, BigInt(token >>> 0));
  out.byte(0xf6); // null: no extra keys
  return lowBits(out.bytes());
}

const seedHashes = new Map<string, bigint>();

/** The root parent: the hash of the CBOR-encoded seed string. */
export function seedHash(seed: string): bigint {
  let hash = seedHashes.get(seed);
  if (hash === undefined) {
    const text = Buffer.from(seed, 'utf8');
    const out = new CborWriter(9 + text.length);
    out.head(3, BigInt(text.length));
    for (const b of text) out.byte(b);
    hash = lowBits(out.bytes());
    seedHashes.set(seed, hash);
  }
  return hash;
}

function lowBits(bytes: Uint8Array): bigint {
  return createHash('sha256').update(bytes).digest().readBigUInt64BE(24);
}

/** Just enough canonical CBOR (RFC 8949 preferred serialization) for unsigned ints, arrays and text heads. */
class CborWriter {
  private readonly buffer: Buffer;
  private length = 0;

  constructor(capacity: number) {
    this.buffer = Buffer.alloc(capacity);
  }

  byte(b: number): void {
    this.buffer[this.length++] = b;
  }

  /** A major type with its argument in the shortest form. */
  head(major: number, value: bigint): void {
    const type = major << 5;
    if (value < 24n) {
      this.byte(type | Number(value));
    } else if (value < 0x100n) {
      this.byte(type | 24);
      this.byte(Number(value));
    } else if (value < 0x10000n) {
      this.byte(type | 25);
      this.buffer.writeUInt16BE(Number(value), this.length);
      this.length += 2;
    } else if (value < 0x100000000n) {
      this.byte(type | 26);
      this.buffer.writeUInt32BE(Number(value), this.length);
      this.length += 4;
    } else {
      this.byte(type | 27);
      this.buffer.writeBigUInt64BE(value, this.length);
      this.length += 8;
    }
  }

  bytes(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
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
    /** vLLM's PYTHONHASHSEED (llm-d's hashSeed): seeds the first block's hash. */
    private readonly hashSeed = '',
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
      previous = blockHash(parent, tokens.slice(k * size, (k + 1) * size), this.hashSeed);
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
