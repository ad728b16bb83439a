import { hostname } from 'node:os';
import type { Publisher, Router } from 'zeromq';
import type { KvEvent } from '../engine/kv-events.js';

type Encode = (value: unknown, options?: { useBigInt64?: boolean }) => Uint8Array;

/**
 * Where and how KV events are published (--kv-events-endpoint, --kv-events-topic,
 * --kv-events-block-size, --kv-events-replay-endpoint, --kv-events-buffer-steps).
 */
export interface KvEventsConfig {
  endpoint: string;
  topic: string;
  blockSize: number;
  /** vLLM's replay_endpoint: a ROUTER socket (always bound) that answers "batches since sequence N"; none when absent. */
  replayEndpoint?: string | null;
  /** vLLM's buffer_steps: how many of the latest batches the replay socket can send again. */
  bufferSteps?: number;
  /** vLLM's hwm: messages the PUB socket queues for a slow subscriber before dropping (ZeroMQ's send high-water mark). */
  hwm?: number;
}

/** vLLM's default buffer_steps. */
export const defaultKvEventsBufferSteps = 10_000;
/** vLLM's default hwm. */
export const defaultKvEventsHwm = 100_000;

/** The frame that ends a replay: sequence -1 (8 bytes, big-endian, two's complement), then an empty payload. */
const endOfReplay = Buffer.alloc(8, 0xff);

/** llm-d's topic convention: kv@<host:port>@<model>, naming the replica and the model it serves. */
export function defaultKvEventsTopic(host: string, port: number, model: string): string {
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  return `kv@${wildcard ? hostname() : host}:${port}@${model}`;
}

/**
 * vLLM's ZeroMQ KV-event publisher, as llm-d's precise prefix-cache scorer and NVIDIA Dynamo's
 * relay read it: a PUB socket (bound when the endpoint has a wildcard, else connected), each
 * batch sent as the frames [topic, sequence number (8 bytes big-endian, from 0), payload], the
 * payload a msgpack EventBatch [timestamp in seconds, [events...], data-parallel rank], each
 * event a tagged array: ["BlockStored", hashes, parent hash, token ids, block size, lora id,
 * medium], ["BlockRemoved", hashes, medium], ["AllBlocksCleared"].
 */
export class KvEventPublisher {
  private sequence = 0n;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly recent: ReplayBuffer;
  private replayServed: Promise<void> = Promise.resolve();

  private constructor(
    readonly config: KvEventsConfig,
    private readonly socket: Publisher,
    private readonly replay: Router | null,
    private readonly encode: Encode,
  ) {
    this.recent = new ReplayBuffer(replay ? (config.bufferSteps ?? defaultKvEventsBufferSteps) : 0);
  }

  static async open(config: KvEventsConfig): Promise<KvEventPublisher> {
    // Loaded only when events are on: a server without them needs neither native module.
    const [{ Publisher, Router }, { encode }] = await Promise.all([import('zeromq'), import('@msgpack/msgpack')]);
    const replay = config.replayEndpoint ? new Router({ linger: 0 }) : null;
    const publisher = new KvEventPublisher(config, new Publisher({ sendHighWaterMark: config.hwm ?? defaultKvEventsHwm, linger: 0 }), replay, encode);
    try {
      const endpoint = config.endpoint;
      if (endpoint.includes('*') || endpoint.includes('::') || endpoint.startsWith('ipc://') || endpoint.startsWith('inproc://')) {
        await publisher.socket.bind(endpoint);
      } else {
        publisher.socket.connect(endpoint);
      }
      if (replay) {
        await replay.bind(config.replayEndpoint!);
        publisher.replayServed = publisher.serveReplays(replay);
      }
    } catch (e) {
      publisher.socket.close();
      replay?.close();
      throw e;
    }
    return publisher;
  }

  /** The endpoint bound or connected to (with the port a wildcard port resolved to). */
  get endpoint(): string {
    return this.socket.lastEndpoint ?? this.config.endpoint;
  }

  /** The replay socket's bound endpoint (with the port a wildcard port resolved to); null without one. */
  get replayEndpoint(): string | null {
    return this.replay ? (this.replay.lastEndpoint ?? this.config.replayEndpoint ?? null) : null;
  }

  /** Batches published so far (the next batch's sequence number). */
  get published(): bigint {
    return this.sequence;
  }

  /** Queues one batch; batches go out in order. */
  readonly publish = (events: KvEvent[]): void => {
    if (this.closed || events.length === 0) return;
    const seq = Buffer.alloc(8);
    seq.writeBigUInt64BE(this.sequence++);
    const payload = encodeEventBatch(this.encode, Date.now() / 1000, events);
    this.recent.add(seq, payload);
    this.queue = this.queue.then(() => this.socket.send([this.config.topic, seq, payload])).catch(() => {});
  };

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    this.socket.close();
    this.replay?.close();
    await this.replayServed;
  }

  /**
   * vLLM's replay protocol: a request is [identity, empty delimiter, start sequence (8 bytes
   * big-endian)] (a REQ client adds the delimiter itself; a DEALER sends it); the answer is one
   * message [seq, payload] per buffered batch from that sequence on, then [-1, empty]. A
   * malformed request is ignored, as vLLM does.
   */
  private async serveReplays(replay: Router): Promise<void> {
    try {
      for await (const frames of replay) {
        if (frames.length !== 3 || frames[1]!.length !== 0 || frames[2]!.length !== 8) continue;
        const [identity, , start] = frames as [Buffer, Buffer, Buffer];
        // Taken at once: batches published while this answer is sent must not shift what it walks.
        const batches = this.recent.since(start.readBigUInt64BE(0));
        for (const [seq, payload] of batches) await replay.send([identity, '', seq, payload]);
        await replay.send([identity, '', endOfReplay, '']);
      }
    } catch {
      // Closing the socket ends the loop; anything else ends replays only (events still publish).
      if (!replay.closed) replay.close();
    }
  }
}

/** The latest `capacity` batches as published (sequence frame, payload), oldest first. */
class ReplayBuffer {
  private readonly entries: [Buffer, Uint8Array][] = [];
  private oldest = 0;

  constructor(private readonly capacity: number) {}

  add(seq: Buffer, payload: Uint8Array): void {
    if (this.capacity === 0) return;
    if (this.entries.length < this.capacity) {
      this.entries.push([seq, payload]);
    } else {
      this.entries[this.oldest] = [seq, payload];
      this.oldest = (this.oldest + 1) % this.capacity;
    }
  }

  /** Buffered batches whose sequence is `start` or later, in order. */
  since(start: bigint): [Buffer, Uint8Array][] {
    const out: [Buffer, Uint8Array][] = [];
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[(this.oldest + i) % this.entries.length]!;
      if (entry[0].readBigUInt64BE(0) >= start) out.push(entry);
    }
    return out;
  }
}

export function encodeEventBatch(encode: Encode, timestamp: number, events: KvEvent[]): Uint8Array {
  const body = events.map((e) => {
    switch (e.type) {
      case 'BlockStored':
        return ['BlockStored', e.blockHashes, e.parentBlockHash, e.tokenIds, e.blockSize, null, null];
      case 'BlockRemoved':
        return ['BlockRemoved', e.blockHashes, null];
      case 'AllBlocksCleared':
        return ['AllBlocksCleared'];
    }
  });
  // The timestamp is always a float64 (msgpack would write a whole number of seconds as an int).
  const head = Buffer.alloc(10);
  head.writeUInt8(0x93, 0); // array of 3
  head.writeUInt8(0xcb, 1); // float 64
  head.writeDoubleBE(timestamp, 2);
  return Buffer.concat([head, encode(body, { useBigInt64: true }), encode(0)]);
}
