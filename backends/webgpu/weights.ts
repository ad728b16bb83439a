import type { WeightDType } from '../../src/model/config.js';
import { bf16ToF32, f32ToF16, toFloat32 } from '../../src/model/dtype.js';
import { type GpuContext } from './gpu.js';
import { BackendError } from '../../src/errors.js';

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
  if (rows < 1) throw new BackendError('webgpu', `one weight row of ${cols} elements exceeds the adapter's ${maxBindingBytes}-byte binding limit`);
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
  const sourceBytes = dtype === 'f32' ? 4 : 2;
  for (let rowStart = 0; rowStart < rows; rowStart += perChunk) {
    const rowCount = Math.min(perChunk, rows - rowStart);
    const buffer = ctx.storage(`${label}[${rowStart}..]`, rowCount * cols * elementBytes);
    const from = rowStart * cols * sourceBytes;
    const part = bytes.subarray(from, from + rowCount * cols * sourceBytes);
    writePadded(ctx, buffer, ctx.f16Weights ? toF16Bits(part, dtype) : toFloat32(part, dtype));
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

/** Raw tensor bytes to f16 bits: f16 copied, bf16 re-biased bit by bit, f32 rounded. */
function toF16Bits(bytes: Uint8Array, dtype: WeightDType): Uint16Array {
  if (dtype === 'f16') return new Uint16Array(bytes.slice().buffer);
  if (dtype === 'f32') {
    const values = toFloat32(bytes, 'f32');
    const out = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) out[i] = f32ToF16(values[i]!);
    return out;
  }
  const source = new Uint16Array(bytes.slice().buffer);
  const out = new Uint16Array(source.length);
  for (let i = 0; i < source.length; i++) out[i] = bf16ToF16(source[i]!);
  return out;
}

/** bf16 bits to f16 bits: exact for normal f16 values (bf16 has only 7 mantissa bits). */
export function bf16ToF16(h: number): number {
  const sign = h & 0x8000;
  const exponent = ((h >>> 7) & 0xff) - 127 + 15;
  const mantissa = h & 0x7f;
  if (exponent > 0 && exponent < 31) return sign | (exponent << 10) | (mantissa << 3);
  if (((h >>> 7) & 0xff) === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  return f32ToF16(bf16ToF32(h)); // overflow to infinity, subnormals and zero: the general path
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
