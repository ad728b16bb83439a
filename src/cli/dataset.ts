import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { synthesizeShareGpt } from '../bench/synth-sharegpt.js';
import { Tokenizer } from '../model/tokenizer.js';
import { UserError } from '../errors.js';
import { parseIntOption } from './options.js';

interface SynthOptions {
  numConversations: number;
  seed: number;
  output: string;
}

export function register(program: Command): void {
  const dataset = program.command('dataset').description('benchmark datasets');
  dataset
    .command('synth-sharegpt')
    .description("write a synthetic ShareGPT-format file whose token lengths follow real ShareGPT's (Llama 3 tokenizer)")
    .option('--num-conversations <n>', 'conversations to write', parseIntOption, 6000)
    .option('--seed <s>', 'seed', parseIntOption, 1)
    .requiredOption('-o, --output <file>', 'the JSON file to write')
    .exitOverride()
    .action((options: SynthOptions) => {
      if (options.numConversations < 1) throw new UserError('--num-conversations must be at least 1');
      const conversations = synthesizeShareGpt(Tokenizer.llama3(), { numConversations: options.numConversations, seed: options.seed });
      writeFileSync(options.output, `[\n${conversations.map((c) => JSON.stringify(c)).join(',\n')}\n]\n`);
      process.stdout.write(`wrote ${conversations.length} synthetic conversations to ${options.output}\n`);
    });
}
