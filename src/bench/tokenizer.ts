import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { presetNames, presets } from '../model/presets.js';
import { Tokenizer } from '../model/tokenizer.js';

/** The part of a tokenizer the benchmark uses. */
export interface BenchTokenizer {
  encode(text: string, addSpecialTokens?: boolean): number[];
  decode(ids: ArrayLike<number>, skipSpecialTokens?: boolean): string;
}

/**
 * The tokenizer named by --tokenizer or --model: a folder with tokenizer.json, or a preset name
 * (presets use the Llama 3 tokenizer). A hub name of a Llama 3.x model (as vLLM serves it) also
 * gets the bundled Llama 3 tokenizer, since hub downloads are not possible here.
 */
export function resolveTokenizer(id: string, log: (line: string) => void = () => {}): BenchTokenizer {
  if (existsSync(id) && statSync(id).isDirectory()) {
    if (!existsSync(join(id, 'tokenizer.json'))) throw new UserError(`tokenizer folder ${id} has no tokenizer.json`);
    return Tokenizer.fromDir(id);
  }
  if (presets[id.toLowerCase()]) return Tokenizer.llama3();
  if (/llama[-_ ]?3/i.test(id)) {
    log(`tokenizer: ${id} is not a local folder; using the bundled Llama 3 tokenizer`);
    return Tokenizer.llama3();
  }
  throw new UserError(
    `cannot find a tokenizer for ${JSON.stringify(id)}: give --tokenizer as a folder with tokenizer.json or a preset name (${presetNames().join(', ')})`,
  );
}
