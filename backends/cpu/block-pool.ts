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
 * Shared memory for one segment's blocks at a time, reused for the next segment once ORT has
 * made its session (ORT copies external data, so the blocks are not needed afterwards). Reuse
 * keeps a load from leaving a segment's worth of SharedArrayBuffers per segment for V8 to
 * collect whenever it gets to it: that garbage was gigabytes at the end of an 8B load.
 */
export class BlockArena {
  private buffer: SharedArrayBuffer | null = null;
  private used = 0;

  /** Makes room for `bytes` (codes and scales of a segment's matrices), keeping what is there if it is enough. */
  reserve(bytes: number): void {
    if ((this.buffer?.byteLength ?? 0) < bytes) this.buffer = new SharedArrayBuffer(bytes);
    this.used = 0;
  }

  /** Blocks for `rows` rows of `cols` values, laid out as sharedBlocks does; fresh shared memory when the arena is full. */
  take(rows: number, cols: number): QuantizedBlocks {
    const bytes = blockBytes(rows, cols);
    if (!this.buffer || this.used + bytes > this.buffer.byteLength) return sharedBlocks(rows, cols);
    const blocks = rows * Math.ceil(cols / ggmlBlockSize);
    const at = this.used;
    this.used += bytes;
    return { codes: new Uint8Array(this.buffer, at, blocks * ggmlBlockSize), scales: new Float32Array(this.buffer, at + blocks * ggmlBlockSize, blocks) };
  }

  /** The segment's session is made: its blocks may be overwritten. */
  reset(): void {
    this.used = 0;
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
  private failed = false;

  constructor(private readonly size: number) {}

  /**
   * The matrix's blocks, written into `into` when given (views of a SharedArrayBuffer with room
   * for its rows: stacked matrices are written side by side, never copied), else into new
   * shared memory.
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
      await Promise.all(workers.map((w, i) => this.run(w, job(Math.min(rows, i * share), Math.min(rows, (i + 1) * share)))));
    }
    return { codes: codes.subarray(0, blocks * ggmlBlockSize), scales: scales.subarray(0, blocks) };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers = [];
  }

  private start(): Worker[] {
    if (this.workers.length > 0 || this.failed || this.size < 2) return this.workers;
    try {
      for (let i = 0; i < this.size; i++) this.workers.push(new Worker(new URL('./block-worker-entry.mjs', import.meta.url)));
    } catch {
      this.failed = true;
      this.workers = [];
    }
    return this.workers;
  }

  private run(worker: Worker, job: BlockJob): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => {
        worker.off('message', onDone);
        reject(e);
      };
      const onDone = () => {
        worker.off('error', onError);
        resolve();
      };
      worker.once('message', onDone);
      worker.once('error', onError);
      worker.postMessage(job);
    });
  }
}
