import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { toHfConfig, type LlamaConfig, type WeightDType } from '../../src/model/config.js';
import { bytesPerElement, fromFloat32, toFloat32 } from '../../src/model/dtype.js';
import { llama3TokenizerDir } from '../../src/model/tokenizer.js';
import { expectedTensors, type ExpectedTensor, type WeightSource } from '../../src/model/weights.js';
import { UserError } from '../../src/errors.js';

export interface CheckpointOptions {
  /** The dtype tensors are stored in (the config's torch_dtype says the same). */
  dtype: WeightDType;
  /** Start a new shard when the current one would exceed this many bytes of tensor data. */
  maxShardBytes?: number;
  /** Folder with tokenizer.json and tokenizer_config.json to copy; the Llama 3 tokenizer by default. */
  tokenizerDir?: string;
}

const safetensorsDtype: Record<WeightDType, string> = { bf16: 'BF16', f16: 'F16', f32: 'F32' };
const defaultMaxShardBytes = 5 * 2 ** 30;

/**
 * Writes a Hugging Face style checkpoint folder: config.json, model.safetensors (or shards
 * model-0000i-of-0000N.safetensors with model.safetensors.index.json) and the tokenizer files.
 * Tensors are converted and written one at a time. Returns the safetensors files written.
 */
export async function writeSafetensorsCheckpoint(
  dir: string,
  model: { config: LlamaConfig; weights: WeightSource },
  options: CheckpointOptions,
): Promise<string[]> {
  const { config, weights } = model;
  const dtype = options.dtype;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(toHfConfig({ ...config, dtype }), null, 2)}\n`);
  const tokenizerDir = options.tokenizerDir ?? llama3TokenizerDir();
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
    const from = join(tokenizerDir, file);
    if (existsSync(from)) copyFileSync(from, join(dir, file));
  }

  const shards = planShards(expectedTensors(config), dtype, options.maxShardBytes ?? defaultMaxShardBytes);
  const fileNames =
    shards.length === 1
      ? ['model.safetensors']
      : shards.map((_, i) => `model-${pad5(i + 1)}-of-${pad5(shards.length)}.safetensors`);
  for (let i = 0; i < shards.length; i++) await writeShard(join(dir, fileNames[i]!), shards[i]!, weights, dtype);
  if (shards.length > 1) {
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    shards.forEach((shard, i) => {
      for (const t of shard) {
        weightMap[t.name] = fileNames[i]!;
        totalSize += tensorBytes(t, dtype);
      }
    });
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    writeFileSync(join(dir, 'model.safetensors.index.json'), `${JSON.stringify(index, null, 2)}\n`);
  }
  return fileNames.map((f) => join(dir, f));
}

function planShards(tensors: ExpectedTensor[], dtype: WeightDType, maxShardBytes: number): ExpectedTensor[][] {
  const shards: ExpectedTensor[][] = [[]];
  let size = 0;
  for (const t of tensors) {
    const bytes = tensorBytes(t, dtype);
    if (size > 0 && size + bytes > maxShardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(t);
    size += bytes;
  }
  return shards;
}

async function writeShard(file: string, tensors: ExpectedTensor[], weights: WeightSource, dtype: WeightDType): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    const bytes = tensorBytes(t, dtype);
    header[t.name] = { dtype: safetensorsDtype[dtype], shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // The data that follows starts 8-byte aligned, as the format recommends.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  const out = await open(file, 'w');
  try {
    let position = 0;
    const write = async (bytes: Uint8Array) => {
      await writeFully(out, bytes, position);
      position += bytes.byteLength;
    };
    await write(prefix);
    await write(headerBytes);
    for (const t of tensors) await writeTensor(t, weights, dtype, write);
  } finally {
    await out.close();
  }
}

/** Converts a tensor to `dtype` a block at a time so no f32 copy of a large tensor is made. */
async function writeTensor(
  tensor: ExpectedTensor,
  weights: WeightSource,
  dtype: WeightDType,
  write: (bytes: Uint8Array) => Promise<void>,
): Promise<void> {
  const info = weights.info(tensor.name);
  if (!info) throw new UserError(`${weights.description}: tensor "${tensor.name}" is missing`);
  const raw = await weights.read(tensor.name);
  if (info.dtype === dtype) return write(raw);
  const fromWidth = bytesPerElement[info.dtype];
  const block = 1 << 22;
  for (let start = 0; start < raw.byteLength; start += block * fromWidth) {
    const chunk = raw.subarray(start, Math.min(raw.byteLength, start + block * fromWidth));
    await write(fromFloat32(toFloat32(chunk, info.dtype), dtype));
  }
}

function tensorBytes(t: ExpectedTensor, dtype: WeightDType): number {
  return t.shape.reduce((a, b) => a * b, 1) * bytesPerElement[dtype];
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done, position + done);
    done += bytesWritten;
  }
}
