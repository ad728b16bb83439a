import type { WeightDType } from '../../src/model/config.js';
import { f32ToF16, toFloat32 } from '../../src/model/dtype.js';
import { type GpuContext } from './gpu.js';

/** A contiguous run of a matrix's rows in one buffer: one storage binding. */
export interface WeightChunk {
  buffer: GPUBuffer;
  rowStart: number;
  rowCount: number;
}

/** A [rows, cols] weight matrix on the device, split by rows so no chunk exceeds the binding limit. */
export interface DeviceMatrix {
  rows: number;
  cols: number;
  chunks: WeightChunk[];
  bytes: number;
}

/** Rows per chunk so that a chunk of `cols` elements of `elementBytes` fits in one binding. */
export function rowsPerChunk(cols: number, elementBytes: number, maxBindingBytes: number): number {
  const rows = Math.floor(maxBindingBytes / (cols * elementBytes));
  if (rows < 1) throw new Error(`webgpu: one weight row of ${cols} elements exceeds the adapter's ${maxBindingBytes}-byte binding limit`);
  return rows;
}

/** Uploads a matrix in the context's weight type (f16 with shader-f16, else f32), chunk by chunk. */
export function uploadMatrix(
  ctx: GpuContext,
  label: string,
  bytes: Uint8Array,
  dtype: WeightDType,
  rows: number,
  cols: number,
  maxChunkBytes = ctx.maxBindingBytes,
): DeviceMatrix {
  const elementBytes = ctx.f16Weights ? 2 : 4;
  const perChunk = rowsPerChunk(cols, elementBytes, maxChunkBytes);
  const chunks: WeightChunk[] = [];
  const values = ctx.f16Weights && dtype === 'f16' ? null : toFloat32(bytes, dtype);
  for (let rowStart = 0; rowStart < rows; rowStart += perChunk) {
    const rowCount = Math.min(perChunk, rows - rowStart);
    const buffer = ctx.storage(`${label}[${rowStart}..]`, rowCount * cols * elementBytes);
    const begin = rowStart * cols;
    const end = begin + rowCount * cols;
    let data: ArrayBufferView;
    if (values === null) data = new Uint16Array(bytes.buffer.slice(bytes.byteOffset + begin * 2, bytes.byteOffset + end * 2));
    else if (ctx.f16Weights) data = toF16(values.subarray(begin, end));
    else data = values.subarray(begin, end);
    writePadded(ctx, buffer, data);
    chunks.push({ buffer, rowStart, rowCount });
  }
  return { rows, cols, chunks, bytes: rows * cols * elementBytes };
}

/** Uploads a vector (norm weights, rotary frequencies) as f32. */
export function uploadVector(ctx: GpuContext, label: string, values: Float32Array): GPUBuffer {
  const buffer = ctx.storage(label, values.byteLength);
  writePadded(ctx, buffer, values);
  return buffer;
}

function toF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16(values[i]!);
  return out;
}

/** queue.writeBuffer needs a multiple of 4 bytes. */
function writePadded(ctx: GpuContext, buffer: GPUBuffer, data: ArrayBufferView): void {
  if (data.byteLength % 4 === 0) {
    ctx.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    return;
  }
  const padded = new Uint8Array(data.byteLength + 2);
  padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  ctx.device.queue.writeBuffer(buffer, 0, padded);
}
