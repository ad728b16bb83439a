import { hostname } from 'node:os';
import type { Publisher } from 'zeromq';
import type { KvEvent } from '../engine/kv-events.js';

type Encode = (value: unknown, options?: { useBigInt64?: boolean }) => Uint8Array;

/** Where and how KV events are published (--kv-events-endpoint, --kv-events-topic, --kv-events-block-size). */
export interface KvEventsConfig {
  endpoint: string;
  topic: string;
  blockSize: number;
}

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

  private constructor(
    readonly config: KvEventsConfig,
    private readonly socket: Publisher,
    private readonly encode: Encode,
  ) {}

  static async open(config: KvEventsConfig): Promise<KvEventPublisher> {
    // Loaded only when events are on: a server without them needs neither native module.
    const [{ Publisher }, { encode }] = await Promise.all([import('zeromq'), import('@msgpack/msgpack')]);
    const publisher = new KvEventPublisher(config, new Publisher({ sendHighWaterMark: 100_000, linger: 0 }), encode);
    const endpoint = config.endpoint;
    if (endpoint.includes('*') || endpoint.includes('::') || endpoint.startsWith('ipc://') || endpoint.startsWith('inproc://')) {
      await publisher.socket.bind(endpoint);
    } else {
      publisher.socket.connect(endpoint);
    }
    return publisher;
  }

  /** The endpoint bound or connected to (with the port a wildcard port resolved to). */
  get endpoint(): string {
    return this.socket.lastEndpoint ?? this.config.endpoint;
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
    this.queue = this.queue.then(() => this.socket.send([this.config.topic, seq, payload])).catch(() => {});
  };

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    this.socket.close();
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
