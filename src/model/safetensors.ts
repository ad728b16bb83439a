import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { WeightDType } from './config.js';
import { bytesPerElement } from './dtype.js';
import type { TensorInfo, WeightSource } from './weights.js';
import { UserError } from '../errors.js';

const dtypes: Record<string, WeightDType> = { BF16: 'bf16', F16: 'f16', F32: 'f32' };

interface Entry extends TensorInfo {
  file: string;
  begin: number;
  end: number;
}

/** Parses the header of one .safetensors file: an 8-byte little-endian length, then JSON. */
export function readSafetensorsHeader(file: string): Entry[] {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (size < 8 || readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new UserError(`${file}: truncated safetensors file (no header)`);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > 100_000_000 || 8 + headerLen > size) {
      throw new UserError(`${file}: corrupt safetensors header length ${headerLen} (file is ${size} bytes)`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readSync(fd, headerBuf, 0, headerLen, 8);
    let header: Record<string, any>;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch {
      throw new UserError(`${file}: corrupt safetensors header (not JSON)`);
    }
    const dataStart = 8 + headerLen;
    const entries: Entry[] = [];
    for (const [name, t] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const dtype = dtypes[t?.dtype];
      if (!dtype) throw new UserError(`${file}: tensor "${name}" has unsupported dtype ${JSON.stringify(t?.dtype)} (BF16, F16 or F32)`);
      const shape: number[] = t.shape;
      const [begin, end] = t.data_offsets ?? [];
      const n = Array.isArray(shape) ? shape.reduce((a: number, b: number) => a * b, 1) : NaN;
      if (!Number.isInteger(begin) || !Number.isInteger(end) || end - begin !== n * bytesPerElement[dtype]) {
        throw new UserError(`${file}: tensor "${name}" has data offsets that do not match its shape and dtype`);
      }
      if (dataStart + end > size) {
        throw new UserError(`${file}: truncated: tensor "${name}" ends at byte ${dataStart + end} but the file has ${size}`);
      }
      entries.push({ name, dtype, shape, file, begin: dataStart + begin, end: dataStart + end });
    }
    return entries;
  } finally {
    closeSync(fd);
  }
}

/** A single model.safetensors or a sharded checkpoint with model.safetensors.index.json. */
export class SafetensorsWeights implements WeightSource {
  readonly random = false;
  private readonly entries = new Map<string, Entry>();
  private readonly fds = new Map<string, number>();

  constructor(readonly description: string, files: string[]) {
    for (const file of files) {
      for (const e of readSafetensorsHeader(file)) this.entries.set(e.name, e);
    }
  }

  /** Opens the checkpoint in a model folder; null when the folder has no safetensors. */
  static fromDir(dir: string): SafetensorsWeights | null {
    const index = join(dir, 'model.safetensors.index.json');
    if (existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(readFileSync(index, 'utf8')).weight_map;
      } catch (e) {
        throw new UserError(`${index}: not valid JSON (${(e as Error).message})`);
      }
      if (!weightMap || typeof weightMap !== 'object') throw new UserError(`${index}: missing "weight_map"`);
      const shards = [...new Set(Object.values(weightMap))].map((f) => join(dir, f));
      for (const s of shards) if (!existsSync(s)) throw new UserError(`${s}: shard named in ${basename(index)} not found`);
      return new SafetensorsWeights(dir, shards);
    }
    const single = join(dir, 'model.safetensors');
    if (existsSync(single)) return new SafetensorsWeights(dir, [single]);
    return null;
  }

  info(name: string): TensorInfo | undefined {
    const e = this.entries.get(name);
    return e && { name: e.name, dtype: e.dtype, shape: e.shape };
  }

  locate(name: string): string | undefined {
    return this.entries.get(name)?.file;
  }

  async read(name: string): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new UserError(`${this.description}: tensor "${name}" is missing`);
    return this.readRange(name, 0, e.end - e.begin);
  }

  async readRange(name: string, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new UserError(`${this.description}: tensor "${name}" is missing`);
    if (byteOffset < 0 || byteOffset + byteLength > e.end - e.begin) throw new Error(`${name}: bytes [${byteOffset}, +${byteLength}) outside the tensor`);
    let fd = this.fds.get(e.file);
    if (fd === undefined) {
      fd = openSync(e.file, 'r');
      this.fds.set(e.file, fd);
    }
    const out = new Uint8Array(byteLength);
    let done = 0;
    while (done < out.length) {
      const n = readSync(fd, out, done, Math.min(out.length - done, 1 << 30), e.begin + byteOffset + done);
      if (n === 0) throw new UserError(`${e.file}: truncated while reading tensor "${name}"`);
      done += n;
    }
    return out;
  }

  async close(): Promise<void> {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
