import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { gguf, parseGgufShardFilename } from '@huggingface/gguf';
import { UserError } from '../../errors.js';
import { ggmlBytes, ggmlTypeNames, ggmlTypes, supportedGgmlTypes, type GgmlTypeInfo } from './ggml-types.js';

/** One tensor of a GGUF file: where its bytes are and how they are laid out. */
export interface GgufTensor {
  name: string;
  file: string;
  /** Absolute byte offset in `file`. */
  offset: number;
  bytes: number;
  type: GgmlTypeInfo;
  /** GGUF order: the contiguous dimension first. */
  dims: number[];
}

export type GgufMetadata = Record<string, unknown>;

/** A GGUF model: one file, or the shards of a split one (`name-00001-of-00003.gguf`). */
export interface GgufModelFile {
  /** The first (or only) file: what errors name. */
  path: string;
  files: string[];
  metadata: GgufMetadata;
  tensors: Map<string, GgufTensor>;
}

/** The shard file names a split GGUF's first shard implies, or just the file. */
export function ggufShardFiles(file: string): string[] {
  const shard = parseGgufShardFilename(basename(file));
  if (!shard) return [file];
  const total = Number(shard.total);
  if (Number(shard.shard) !== 1) {
    throw new UserError(`${file}: give the first shard of a split GGUF (${shard.prefix}-00001-of-${shard.total}.gguf)`);
  }
  return Array.from({ length: total }, (_, i) => join(dirname(file), `${shard.prefix}-${String(i + 1).padStart(5, '0')}-of-${shard.total}.gguf`));
}

/** Reads the headers of a GGUF model (all shards); checks every tensor's type and that its bytes are in the file. */
export async function openGgufFile(file: string): Promise<GgufModelFile> {
  const files = ggufShardFiles(file);
  const metadata: GgufMetadata = {};
  const tensors = new Map<string, GgufTensor>();
  for (const shard of files) {
    if (!existsSync(shard)) throw new UserError(`${shard}: shard of the split GGUF ${basename(file)} not found`);
    const size = statSync(shard).size;
    let parsed: Awaited<ReturnType<typeof gguf>>;
    try {
      parsed = await gguf(shard, { allowLocalFile: true });
    } catch (e) {
      throw new UserError(`${shard}: not a readable GGUF file (${(e as Error).message}; ${size} bytes: truncated or not GGUF?)`);
    }
    // The parser reads past the end of a cut file as zeros: its header must end inside the file.
    if (Number(parsed.tensorDataOffset) > size) throw new UserError(`${shard}: truncated: the header runs past the end of the file (${size} bytes)`);
    for (const [key, value] of Object.entries(parsed.metadata)) if (!(key in metadata)) metadata[key] = value;
    const dataStart = Number(parsed.tensorDataOffset);
    for (const t of parsed.tensorInfos) {
      const type = ggmlTypes.get(t.dtype);
      if (!type) {
        const typeName = ggmlTypeNames[t.dtype] ?? `type ${t.dtype}`;
        throw new UserError(`${shard}: tensor "${t.name}" has GGML type ${typeName}, which sluice does not read (${supportedGgmlTypes})`);
      }
      const dims = t.shape.map(Number);
      const elements = dims.reduce((a, b) => a * b, 1);
      if (dims[0]! % type.blockSize !== 0) {
        throw new UserError(`${shard}: tensor "${t.name}" rows of ${dims[0]} are not whole ${type.name} blocks of ${type.blockSize}`);
      }
      const offset = dataStart + Number(t.offset);
      const bytes = ggmlBytes(type, elements);
      if (offset + bytes > size) {
        throw new UserError(`${shard}: truncated: tensor "${t.name}" ends at byte ${offset + bytes} but the file has ${size} bytes`);
      }
      tensors.set(t.name, { name: t.name, file: shard, offset, bytes, type, dims });
    }
  }
  return { path: file, files, metadata, tensors };
}
