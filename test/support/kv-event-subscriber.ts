import { decode } from '@msgpack/msgpack';
import { Dealer, Request, Subscriber } from 'zeromq';

/** One cached block as the events describe it: its parent and its own tokens. */
interface EventBlock {
  parent: bigint | null;
  tokens: number[];
}

/**
 * A ZeroMQ SUB client of a replica's KV events that keeps the set of blocks the replica holds,
 * from the events alone (what llm-d's KV-cache indexer does).
 */
export class KvEventSubscriber {
  readonly blocks = new Map<bigint, EventBlock>();
  readonly topics = new Set<string>();
  /** Sequence number of the last batch received, -1 before any. */
  lastSequence = -1n;
  /** Sequence numbers that were skipped (a gap means lost batches). */
  gaps = 0;
  batches = 0;
  stored = 0;
  removed = 0;
  cleared = 0;
  private readonly socket = new Subscriber();

  private readonly done: Promise<void>;

  /** Connects to a publisher that binds (sluice with a wildcard endpoint). */
  constructor(endpoint: string, topicPrefix = 'kv@', bind = false) {
    if (!bind) this.socket.connect(endpoint);
    this.socket.subscribe(topicPrefix);
    this.done = bind ? this.socket.bind(endpoint).then(() => this.receive()) : this.receive();
  }

  /** Binds, for publishers that connect (llm-d's layout: one indexer socket, many pods). */
  static async bound(endpoint: string, topicPrefix = 'kv@'): Promise<KvEventSubscriber> {
    const subscriber = new KvEventSubscriber(endpoint, topicPrefix, true);
    while (!subscriber.socket.lastEndpoint) await new Promise((resolve) => setTimeout(resolve, 5));
    return subscriber;
  }

  private async receive(): Promise<void> {
    try {
      for await (const frames of this.socket) {
        if (frames.length !== 3) throw new Error(`expected 3 frames, got ${frames.length}`);
        const [topic, seqBytes, payload] = frames as [Buffer, Buffer, Buffer];
        if (seqBytes.length !== 8) throw new Error(`sequence frame of ${seqBytes.length} bytes`);
        const seq = seqBytes.readBigUInt64BE(0);
        if (this.lastSequence >= 0n && seq !== this.lastSequence + 1n) this.gaps++;
        this.lastSequence = seq;
        this.topics.add(topic.toString());
        this.apply(decode(payload, { useBigInt64: true }) as unknown[]);
        this.batches++;
      }
    } catch (e) {
      if (!(this.socket.closed && /closed|terminated/i.test(String(e)))) throw e;
    }
  }

  /** Applies one batch received another way (a replay), as if it had come over the subscription. */
  applyBatch(payload: Uint8Array): void {
    this.apply(decode(payload, { useBigInt64: true }) as unknown[]);
    this.batches++;
  }

  private apply(batch: unknown[]): void {
    const [timestamp, events] = batch as [number, unknown[][]];
    if (typeof timestamp !== 'number') throw new Error('EventBatch without a timestamp');
    for (const event of events) {
      const tag = event[0];
      if (tag === 'BlockStored') {
        const [, hashes, parentHash, tokens, blockSize] = event as [string, bigint[], bigint | null, number[], number];
        if (tokens.length !== hashes.length * blockSize) throw new Error(`BlockStored: ${tokens.length} tokens for ${hashes.length} blocks of ${blockSize}`);
        let parent = parentHash === null ? null : BigInt(parentHash);
        hashes.forEach((hash, i) => {
          this.blocks.set(BigInt(hash), { parent, tokens: tokens.slice(i * blockSize, (i + 1) * blockSize) });
          parent = BigInt(hash);
        });
        this.stored += hashes.length;
      } else if (tag === 'BlockRemoved') {
        for (const hash of event[1] as bigint[]) {
          if (!this.blocks.delete(BigInt(hash))) throw new Error(`BlockRemoved for a block never stored: ${hash}`);
          this.removed++;
        }
      } else if (tag === 'AllBlocksCleared') {
        this.blocks.clear();
        this.cleared++;
      } else {
        throw new Error(`unknown KV event ${String(tag)}`);
      }
    }
  }

  /** Every block's whole token prefix (its ancestors' tokens then its own), as comma-joined strings. */
  prefixes(): Set<string> {
    const out = new Set<string>();
    for (const hash of this.blocks.keys()) out.add(this.prefixOf(hash).join(','));
    return out;
  }

  /** The tokens from the start of the sequence up to the end of block `hash`. */
  prefixOf(hash: bigint): number[] {
    const chain: number[][] = [];
    for (let h: bigint | null = hash; h !== null; ) {
      const block = this.blocks.get(h);
      if (!block) throw new Error(`block ${h} has no stored ancestor chain`);
      chain.push(block.tokens);
      h = block.parent;
    }
    return chain.reverse().flat();
  }

  async close(): Promise<void> {
    this.socket.close();
    await this.done;
  }
}

/** The blocks of `blockSize` tokens lying wholly inside the cached token sequences, as prefixes (comma-joined). */
export function blockPrefixes(paths: number[][], blockSize: number): Set<string> {
  const out = new Set<string>();
  for (const path of paths) {
    for (let end = blockSize; end <= path.length; end += blockSize) out.add(path.slice(0, end).join(','));
  }
  return out;
}

/** One replayed batch: its sequence number and msgpack payload. */
export interface ReplayedBatch {
  seq: bigint;
  payload: Buffer;
}

/**
 * Asks a replica's replay socket (vLLM's protocol) for the batches from sequence `from` on. A
 * DEALER sends the empty delimiter itself and reads every answer up to the end marker (sequence
 * -1, empty payload); a REQ socket (as vLLM's example subscriber uses) can take only the first
 * answer of a request before it must send again.
 */
export async function replayBatches(endpoint: string, from: bigint, client: 'dealer' | 'req'): Promise<{ batches: ReplayedBatch[]; ended: boolean }> {
  const start = Buffer.alloc(8);
  start.writeBigUInt64BE(from);
  const batches: ReplayedBatch[] = [];
  const socket = client === 'dealer' ? new Dealer({ linger: 0, receiveTimeout: 5000 }) : new Request({ linger: 0, receiveTimeout: 5000 });
  socket.connect(endpoint);
  try {
    await socket.send(client === 'dealer' ? ['', start] : [start]);
    for (;;) {
      const frames = await socket.receive();
      const [seqBytes, payload] = client === 'dealer' ? frames.slice(1) : frames;
      if (frames.length !== (client === 'dealer' ? 3 : 2) || seqBytes!.length !== 8) throw new Error(`unexpected replay answer of ${frames.length} frames`);
      const seq = seqBytes!.readBigInt64BE(0);
      if (seq === -1n) {
        if (payload!.length !== 0) throw new Error('end-of-replay marker with a payload');
        return { batches, ended: true };
      }
      batches.push({ seq, payload: payload! });
      if (client === 'req') return { batches, ended: false };
    }
  } finally {
    socket.close();
  }
}
