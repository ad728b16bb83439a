import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseGgufShardFilename } from '@huggingface/gguf';
import { UserError } from '../../errors.js';

/** Files of a model folder sluice reads besides the weights. */
const metadataFiles = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

/**
 * The files of a repo that sluice needs: config, tokenizer, generation config and safetensors
 * (single or sharded with their index) at the top level; never .bin/.pth or original/. A repo
 * with only GGUF files gives its one GGUF model (all shards), or the one named.
 */
export function selectFiles(repo: string, files: string[], ggufFile: string | null): string[] {
  if (ggufFile !== null) {
    if (!files.includes(ggufFile)) throw new UserError(`${repo}: the repository has no file ${ggufFile}`);
    return ggufShardNames(ggufFile);
  }
  const top = files.filter((f) => !f.includes('/'));
  const safetensors = top.filter((f) => f.endsWith('.safetensors'));
  if (safetensors.length > 0) {
    const index = top.includes('model.safetensors.index.json') ? ['model.safetensors.index.json'] : [];
    return [...top.filter((f) => metadataFiles.includes(f)), ...index, ...safetensors];
  }
  const ggufModels = files.filter((f) => f.endsWith('.gguf') && (parseGgufShardFilename(f.split('/').pop()!)?.shard ?? '00001') === '00001');
  if (ggufModels.length === 1) return ggufShardNames(ggufModels[0]!);
  if (ggufModels.length > 1) {
    throw new UserError(`${repo}: the repository holds several GGUF models; name one as --model-path ${repo}/FILE (${ggufModels.join(', ')})`);
  }
  throw new UserError(`${repo}: the repository has no safetensors or GGUF weights (sluice does not read .bin or .pth checkpoints)`);
}

function ggufShardNames(file: string): string[] {
  const slash = file.lastIndexOf('/');
  const shard = parseGgufShardFilename(file.slice(slash + 1));
  if (!shard) return [file];
  const dir = file.slice(0, slash + 1);
  return Array.from({ length: Number(shard.total) }, (_, i) => `${dir}${shard.prefix}-${String(i + 1).padStart(5, '0')}-of-${shard.total}.gguf`);
}

/**
 * Whether a cached snapshot holds a whole model (what selectFiles would fetch): checked without
 * the Hub, so a cached model starts with no request. Files land in a snapshot only when complete.
 */
export function snapshotHasModel(dir: string, ggufFile: string | null): boolean {
  if (ggufFile !== null) return ggufShardNames(ggufFile).every((f) => existsSync(join(dir, f)));
  if (!existsSync(dir)) return false;
  if (!existsSync(join(dir, 'config.json'))) {
    const ggufs = readdirSync(dir).filter((f) => f.endsWith('.gguf') && (parseGgufShardFilename(f)?.shard ?? '00001') === '00001');
    return ggufs.length === 1 && ggufShardNames(ggufs[0]!).every((f) => existsSync(join(dir, f)));
  }
  if (!existsSync(join(dir, 'config.json')) || !existsSync(join(dir, 'tokenizer.json'))) return false;
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    try {
      const shards = Object.values<string>(JSON.parse(readFileSync(index, 'utf8')).weight_map ?? {});
      return shards.length > 0 && shards.every((s) => existsSync(join(dir, s)));
    } catch {
      return false;
    }
  }
  return existsSync(join(dir, 'model.safetensors'));
}
