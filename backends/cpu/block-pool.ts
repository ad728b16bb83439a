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
