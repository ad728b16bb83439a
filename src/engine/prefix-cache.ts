import type { KvPool } from './kv-pool.js';

/** The cached prefix of a token list: its pages (not yet retained by the caller) and a handle to lock. */
export interface PrefixMatch {
  node: CacheNode | null;
  pages: number[];
  length: number;
}

export interface CacheNode {
  readonly lockRef: number;
  /** The node above (the root for a top-level node; null for the root). */
  readonly parent: CacheNode | null;
}

/**
 * Told of every change to the set of cached token prefixes (for KV events). Positions are
 * absolute: a node's edge holds tokens[start, end) of the path from the root.
 */
export interface PrefixCacheObserver {
  /** A new node caches tokens[start, end); `tokens` holds the whole path [0, end). */
  stored(node: CacheNode, tokens: readonly number[], start: number, end: number): void;
  /** `upper` (new) took the first part of `lower`'s edge, up to absolute position `boundary`. */
  split(upper: CacheNode, lower: CacheNode, boundary: number): void;
  /** A node left the cache (evicted or flushed). */
  removed(node: CacheNode): void;
  /** The cache was flushed. */
  flushed(): void;
}

/** What the scheduler needs from a prefix cache; RadixCache and NoPrefixCache implement it. */
export interface PrefixCache {
  /** Tokens held by the cache that no running sequence uses (what eviction can free). */
  readonly evictableTokens: number;
  /** The longest cached prefix of tokens[0, maxLength), in whole pages. */
  match(tokens: readonly number[], maxLength: number): PrefixMatch;
  /** Protects the path to `node` from eviction while a sequence uses it. */
  lock(node: CacheNode | null): void;
  unlock(node: CacheNode | null): void;
  /** Caches tokens[0, length) (whole pages) whose KV lives in `pages`; the cache retains pages it keeps. */
  insert(tokens: readonly number[], length: number, pages: ArrayLike<number>): void;
  /** Drops least recently used unlocked entries until `pages` pages are free again (or nothing is left). */
  evict(pages: number): void;
  /** Drops every unlocked entry. */
  clear(): void;
  /** The cached token sequences, one per leaf (for tests and debugging). */
  paths(): number[][];
}

/** --disable-radix-cache: nothing is shared, KV is freed when a request finishes. */
export class NoPrefixCache implements PrefixCache {
  readonly evictableTokens = 0;
  match(): PrefixMatch {
    return { node: null, pages: [], length: 0 };
  }
  lock(): void {}
  unlock(): void {}
  insert(): void {}
  evict(): void {}
  clear(): void {}
  paths(): number[][] {
    return [];
  }
}

class RadixNode implements CacheNode {
  readonly children = new Map<number | string, RadixNode>();
  lockRef = 0;
  lastAccess = 0;
  removed = false;

  constructor(
    public parent: RadixNode | null,
    /** Tokens on the edge from the parent; a whole number of pages. */
    public key: number[],
    public pages: number[],
  ) {}
}

/**
 * A radix tree over token ids whose edges own KV pages (SGLang's radix cache): a request whose
 * prompt starts with a cached prefix reuses its KV. Matching is in whole pages; nodes on a
 * running sequence's path are locked; unlocked leaves are evicted least recently used first.
 */
export class RadixCache implements PrefixCache {
  private root = new RadixNode(null, [], []);
  private clock = 0;
  private evictable = 0;
  /**
   * Eviction candidates by last use: every unlocked leaf has an entry, possibly stale (a later
   * use, a lock, a new child); stale entries are skipped or re-queued when they come up, so an
   * eviction pops only what it frees instead of walking and sorting the tree.
   */
  private readonly candidates = new MinHeap<RadixNode>();
  private nodes = 0;

  constructor(
    private readonly pool: KvPool,
    private readonly observer: PrefixCacheObserver | null = null,
  ) {}

  get evictableTokens(): number {
    return this.evictable;
  }

  match(tokens: readonly number[], maxLength: number): PrefixMatch {
    const pageSize = this.pool.pageSize;
    const pages: number[] = [];
    let node = this.root;
    let length = 0;
    const tick = ++this.clock;
    while (length + pageSize <= maxLength) {
      const child = node.children.get(this.childKey(tokens, length));
      if (!child) break;
      child.lastAccess = tick;
      const common = this.commonPrefix(child.key, tokens, length, maxLength);
      const next = common < child.key.length ? this.split(child, common, length + common) : child;
      for (const page of next.pages) pages.push(page);
      length += common;
      node = next;
      if (common < child.key.length) break;
    }
    return { node: node === this.root ? null : node, pages, length };
  }

  lock(handle: CacheNode | null): void {
    for (let node = handle as RadixNode | null; node && node !== this.root; node = node.parent) {
      if (node.lockRef++ === 0) this.evictable -= node.key.length;
    }
  }

  unlock(handle: CacheNode | null): void {
    for (let node = handle as RadixNode | null; node && node !== this.root; node = node.parent) {
      if (--node.lockRef === 0) {
        this.evictable += node.key.length;
        this.offerCandidate(node);
      }
    }
  }

  insert(tokens: readonly number[], length: number, pages: ArrayLike<number>): void {
    const pageSize = this.pool.pageSize;
    length -= length % pageSize;
    const tick = ++this.clock;
    let node = this.root;
    let position = 0;
    while (position < length) {
      const child = node.children.get(this.childKey(tokens, position));
      if (!child) {
        const leaf = new RadixNode(node, tokens.slice(position, length), Array.from({ length: (length - position) / pageSize }, (_, i) => pages[position / pageSize + i]!));
        for (const page of leaf.pages) this.pool.retain(page);
        leaf.lastAccess = tick;
        node.children.set(this.childKey(leaf.key, 0), leaf);
        this.evictable += leaf.key.length;
        this.nodes++;
        this.offerCandidate(leaf);
        this.observer?.stored(leaf, tokens, position, length);
        return;
      }
      child.lastAccess = tick;
      const common = this.commonPrefix(child.key, tokens, position, length);
      node = common < child.key.length ? this.split(child, common, position + common) : child;
      position += common;
    }
  }

  evict(pagesWanted: number): void {
    while (this.pool.freePages < pagesWanted) {
      const entry = this.candidates.pop();
      if (!entry) return;
      const node = entry.item;
      if (!this.isEvictable(node)) continue;
      if (entry.key !== node.lastAccess) {
        this.candidates.push(node, node.lastAccess); // used since it was queued: back in line
        continue;
      }
      const parent = node.parent!;
      this.remove(node);
      this.offerCandidate(parent);
    }
  }

  clear(): void {
    const removeAll = (node: RadixNode) => {
      for (const child of [...node.children.values()]) {
        removeAll(child);
        if (child.lockRef === 0 && child.children.size === 0) this.remove(child);
      }
    };
    removeAll(this.root);
    this.rebuildCandidates();
    this.observer?.flushed();
  }

  paths(): number[][] {
    const paths: number[][] = [];
    const visit = (node: RadixNode, prefix: number[]) => {
      const path = prefix.concat(node.key);
      if (node.children.size === 0 && node !== this.root) paths.push(path);
      for (const child of node.children.values()) visit(child, path);
    };
    visit(this.root, []);
    return paths;
  }

  private isEvictable(node: RadixNode): boolean {
    return !node.removed && node !== this.root && node.lockRef === 0 && node.children.size === 0;
  }

  private offerCandidate(node: RadixNode): void {
    if (!this.isEvictable(node)) return;
    this.candidates.push(node, node.lastAccess);
    // Stale entries pile up while nothing is evicted: rebuild from the tree now and then (amortized O(1) per entry).
    if (this.candidates.size > 2 * this.nodes + 1024) this.rebuildCandidates();
  }

  private rebuildCandidates(): void {
    this.candidates.clear();
    const visit = (node: RadixNode) => {
      for (const child of node.children.values()) visit(child);
      if (this.isEvictable(node)) this.candidates.push(node, node.lastAccess);
    };
    visit(this.root);
  }

  private remove(leaf: RadixNode): void {
    for (const page of leaf.pages) this.pool.release(page);
    leaf.parent!.children.delete(this.childKey(leaf.key, 0));
    leaf.removed = true;
    this.nodes--;
    this.evictable -= leaf.key.length;
    this.observer?.removed(leaf);
  }

  /** Cuts `node`'s edge after `length` tokens (at absolute position `boundary`); returns the new upper part. */
  private split(node: RadixNode, length: number, boundary: number): RadixNode {
    const pageSize = this.pool.pageSize;
    const parent = node.parent!;
    const upper = new RadixNode(parent, node.key.slice(0, length), node.pages.slice(0, length / pageSize));
    upper.lockRef = node.lockRef;
    this.nodes++;
    upper.lastAccess = node.lastAccess;
    node.key = node.key.slice(length);
    node.pages = node.pages.slice(length / pageSize);
    node.parent = upper;
    upper.children.set(this.childKey(node.key, 0), node);
    parent.children.set(this.childKey(upper.key, 0), upper);
    this.observer?.split(upper, node, boundary);
    return upper;
  }

  /** Tokens shared by `key` and tokens[start, end), rounded down to whole pages. */
  private commonPrefix(key: readonly number[], tokens: readonly number[], start: number, end: number): number {
    const limit = Math.min(key.length, end - start);
    let n = 0;
    while (n < limit && key[n] === tokens[start + n]) n++;
    return n - (n % this.pool.pageSize);
  }

  /** Children are keyed by their first page. */
  private childKey(tokens: readonly number[], start: number): number | string {
    const pageSize = this.pool.pageSize;
    return pageSize === 1 ? tokens[start]! : tokens.slice(start, start + pageSize).join(',');
  }
}

/** A binary min-heap of items by numeric key. */
class MinHeap<T> {
  private readonly entries: { item: T; key: number }[] = [];

  get size(): number {
    return this.entries.length;
  }

  push(item: T, key: number): void {
    const e = this.entries;
    e.push({ item, key });
    let i = e.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (e[parent]!.key <= e[i]!.key) break;
      [e[parent], e[i]] = [e[i]!, e[parent]!];
      i = parent;
    }
  }

  pop(): { item: T; key: number } | undefined {
    const e = this.entries;
    const top = e[0];
    const last = e.pop();
    if (e.length > 0 && last) {
      e[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < e.length && e[l]!.key < e[m]!.key) m = l;
        if (r < e.length && e[r]!.key < e[m]!.key) m = r;
        if (m === i) break;
        [e[m], e[i]] = [e[i]!, e[m]!];
        i = m;
      }
    }
    return top;
  }

  clear(): void {
    this.entries.length = 0;
  }
}
