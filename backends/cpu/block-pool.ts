import { Worker } from 'node:worker_threads';
import type { WeightDType } from '../../src/model/config.js';
import type { DeviceWeightRecipe } from '../../src/model/weights.js';
import { ggmlBlockSize, type GgmlBlockType, type QuantizedBlocks } from './ggml-blocks.js';
import { runBlockJob, type BlockJob } from './block-worker.js';

/**
 * Codes and scales for `rows` rows of `cols` values in one SharedArrayBuffer (codes first, then
 * the scales), which workers write into and ORT then reads as external data without a copy.
 */
export function sharedBlocks(rows: number, cols: number): QuantizedBlocks {
  const blocks = rows * Math.ceil(cols / ggmlBlockSize);
  const buffer = new SharedArrayBuffer(blocks * ggmlBlockSize + blocks * 4);
  return { codes: new Uint8Array(buffer, 0, blocks * ggmlBlockSize), scales: new Float32Array(buffer, blocks * ggmlBlockSize, blocks) };
}

/**
 * Shared memory for one segment's blocks at a time, reused for a later segment once ORT has
 * made its session (ORT copies external data, so the blocks are not needed afterwards). Reuse
 * keeps a load from leaving a segment's worth of SharedArrayBuffers per segment for V8 to
 * collect whenever it gets to it: that garbage was gigabytes at the end of an 8B load.
 */
export class BlockArena {
  private used = 0;

  /** The arena is bytes [start, start + length) of `buffer`. */
  constructor(
    private readonly buffer: SharedArrayBuffer,
    private readonly start = 0,
    private readonly length = buffer.byteLength - start,
  ) {}

  /** Blocks for `rows` rows of `cols` values, laid out as sharedBlocks does; fresh shared memory when the arena is full. */
  take(rows: number, cols: number): QuantizedBlocks {
    const bytes = blockBytes(rows, cols);
    if (this.used + bytes > this.length) return sharedBlocks(rows, cols);
    const blocks = rows * Math.ceil(cols / ggmlBlockSize);
    const at = this.start + this.used;
    this.used += bytes;
    return { codes: new Uint8Array(this.buffer, at, blocks * ggmlBlockSize), scales: new Float32Array(this.buffer, at + blocks * ggmlBlockSize, blocks) };
  }

  /** The segment's session is made: its blocks may be overwritten. */
  reset(): void {
    this.used = 0;
  }
}

/**
 * The arenas of a load's segments, in one buffer: two halves that take turns, so the next
 * segment's blocks can be written while this one's session is made. A last segment larger than
 * a half (the lm-head's, often) gets the whole buffer instead of a third region, and is made
 * first, on its own: memory is lowest then, and the buffer stays the size of two layer segments.
 */
export class SegmentArenas {
  private readonly halves: BlockArena[];
  private readonly whole: BlockArena | null;
  private readonly last: number;

  /** `segmentBytes[i]`: blockBytes of segment i's matrices. */
  constructor(segmentBytes: number[]) {
    this.last = segmentBytes.length - 1;
    const half = Math.max(0, ...segmentBytes.slice(0, Math.max(1, this.last)));
    const lastOwnsAll = this.last > 0 && segmentBytes[this.last]! > half;
    const buffer = new SharedArrayBuffer(Math.max(this.last > 0 ? 2 * half : half, lastOwnsAll ? segmentBytes[this.last]! : 0));
    this.halves = this.last > 0 ? [new BlockArena(buffer, 0, half), new BlockArena(buffer, half, half)] : [new BlockArena(buffer)];
    this.whole = lastOwnsAll ? new BlockArena(buffer) : null;
  }

  arenaFor(index: number): BlockArena {
    return this.whole && index === this.last ? this.whole : this.halves[index % this.halves.length]!;
  }

  /** The order to make the segments' sessions in: the one with the whole buffer first. */
  order(): number[] {
    const indices = Array.from({ length: this.last + 1 }, (_, i) => i);
    return this.whole ? [this.last, ...indices.slice(0, this.last)] : indices;
  }

  /** Whether segment b's blocks may be written while segment a's session is made (their regions are apart). */
  apart(a: number, b: number): boolean {
    return this.arenaFor(a) !== this.arenaFor(b) && this.arenaFor(a) !== this.whole && this.arenaFor(b) !== this.whole;
  }
}

/** Bytes of codes and scales for `rows` rows of `cols` values (a multiple of 4, so scales stay aligned). */
export function blockBytes(rows: number, cols: number): number {
  return rows * Math.ceil(cols / ggmlBlockSize) * (ggmlBlockSize + 4);
}

/**
 * Quantizes matrices into ggml blocks on worker threads, each taking a share of the rows and
 * writing into shared output arrays. Dummy weights are generated in the workers from their
 * recipe (the same values DummyWeights.read returns), so no BF16 copy of the model is ever
 * made. Falls back to the calling thread when workers cannot start.
 */
export class BlockPool {
  private workers: Worker[] = [];
  /** Per worker, the jobs posted and not yet done, oldest first: a worker answers in order. */
  private pending: { resolve: () => void; reject: (e: Error) => void }[][] = [];
  private failed = false;

  constructor(private readonly size: number) {}

  /**
   * The matrix's blocks, written into `into` when given (views of a SharedArrayBuffer with room
   * for its rows: stacked matrices are written side by side, never copied), else into new
   * shared memory. Calls may overlap: each worker takes its share of every call in turn.
   */
  async quantize(
    type: GgmlBlockType,
    rows: number,
    cols: number,
    dtype: WeightDType,
    source: { recipe: DeviceWeightRecipe } | { bytes: Uint8Array },
    into: QuantizedBlocks = sharedBlocks(rows, cols),
  ): Promise<QuantizedBlocks> {
    const blocks = rows * Math.ceil(cols / ggmlBlockSize);
    const { codes, scales } = into;
    if (!(codes.buffer instanceof SharedArrayBuffer) || !(scales.buffer instanceof SharedArrayBuffer)) throw new Error('BlockPool.quantize: blocks must be written into shared memory');
    if (codes.length < blocks * ggmlBlockSize || scales.length < blocks) throw new Error(`BlockPool.quantize: no room for ${rows} x ${cols} values`);
    let raw: SharedArrayBuffer | undefined;
    if ('bytes' in source) {
      raw = new SharedArrayBuffer(source.bytes.byteLength);
      new Uint8Array(raw).set(source.bytes);
    }
    const recipe = 'recipe' in source ? source.recipe : undefined;
    const job = (rowStart: number, rowEnd: number): BlockJob => ({
      type,
      cols,
      rowStart,
      rowEnd,
      dtype,
      recipe,
      raw,
      codes: codes.buffer as SharedArrayBuffer,
      codesOffset: codes.byteOffset,
      scales: scales.buffer as SharedArrayBuffer,
      scalesOffset: scales.byteOffset,
    });
    const workers = this.start();
    if (workers.length === 0) runBlockJob(job(0, rows));
    else {
      const share = Math.ceil(rows / workers.length);
      await Promise.all(workers.map((_, i) => this.run(i, job(Math.min(rows, i * share), Math.min(rows, (i + 1) * share)))));
    }
    return { codes: codes.subarray(0, blocks * ggmlBlockSize), scales: scales.subarray(0, blocks) };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    for (const queue of this.pending) for (const job of queue.splice(0)) job.reject(new Error('BlockPool closed'));
    this.workers = [];
    this.pending = [];
  }

  private start(): Worker[] {
    if (this.workers.length > 0 || this.failed || this.size < 2) return this.workers;
    try {
      for (let i = 0; i < this.size; i++) {
        const worker = new Worker(new URL('./block-worker-entry.mjs', import.meta.url));
        const queue: BlockPool['pending'][number] = [];
        worker.on('message', () => queue.shift()?.resolve());
        worker.on('error', (e: Error) => {
          for (const job of queue.splice(0)) job.reject(e);
        });
        // A worker that is gone answers nothing: its queued jobs fail rather than wait forever.
        worker.on('exit', (code: number) => {
          for (const job of queue.splice(0)) job.reject(new Error(`block worker exited (code ${code}) with jobs queued`));
        });
        this.workers.push(worker);
        this.pending.push(queue);
      }
    } catch {
      this.failed = true;
      this.workers = [];
      this.pending = [];
    }
    return this.workers;
  }

  private run(index: number, job: BlockJob): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending[index]!.push({ resolve, reject });
      this.workers[index]!.postMessage(job);
    });
  }
}
