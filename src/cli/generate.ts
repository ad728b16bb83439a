import type { Command } from 'commander';
import { createBackend } from '../../backends/index.js';
import type { BackendName } from '../../backends/backend.js';
import { UserError } from '../errors.js';
import { loadModel, type LoadFormat } from '../model/load.js';
import { Rng } from '../model/rng.js';
import { SingleSequence } from '../model/single-sequence.js';
import { parseFloatOption, parseIntOption } from './options.js';

interface GenerateOptions {
  modelPath?: string;
  loadFormat: LoadFormat;
  backend: BackendName | 'auto';
  prompt?: string;
  chat?: boolean;
  promptIds?: string;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('complete one prompt and print the result')
    .option('--model-path <path>', 'a Hugging Face model folder or a preset name')
    .option('--load-format <format>', 'auto | safetensors | dummy', 'auto')
    .option('--backend <name>', 'auto | ref | cpu | webgpu | cuda', 'auto')
    .option('--prompt <text>', 'the prompt text')
    .option('--chat', 'wrap the prompt as a user message in the chat template')
    .option('--prompt-ids <ids>', 'the prompt as comma-separated token ids')
    .option('--max-new-tokens <n>', 'tokens to generate at most', parseIntOption, 32)
    .option('--temperature <t>', '0 for greedy', parseFloatOption, 0)
    .option('--top-p <p>', 'nucleus sampling mass', parseFloatOption, 1)
    .option('--top-k <k>', '0 = off', parseIntOption, 0)
    .option('--seed <s>', 'sampling seed', parseIntOption)
    .option('--json', 'print one JSON object: text, token_ids, prompt_token_ids')
    .action(async (options: GenerateOptions) => {
      await generate(options);
    });
}

async function generate(options: GenerateOptions): Promise<void> {
  if ((options.prompt === undefined) === (options.promptIds === undefined)) {
    throw new UserError('give exactly one of --prompt or --prompt-ids');
  }
  const model = loadModel({ modelPath: options.modelPath, loadFormat: options.loadFormat });
  let promptIds: number[];
  if (options.promptIds !== undefined) {
    promptIds = options.promptIds.split(',').map((s) => {
      const id = Number(s.trim());
      if (!Number.isInteger(id) || id < 0 || id >= model.config.vocabSize) {
        throw new UserError(`--prompt-ids: ${JSON.stringify(s)} is not a token id below ${model.config.vocabSize}`);
      }
      return id;
    });
  } else if (options.chat) {
    promptIds = model.tokenizer.encode(model.tokenizer.applyChatTemplate([{ role: 'user', content: options.prompt! }]), false);
  } else {
    promptIds = model.tokenizer.encode(options.prompt!);
  }
  if (promptIds.length + options.maxNewTokens > model.config.maxPositionEmbeddings) {
    throw new UserError(`prompt (${promptIds.length} tokens) plus --max-new-tokens exceeds the context of ${model.config.maxPositionEmbeddings}`);
  }
  const backend = await createBackend(options.backend);
  await backend.load(model);
  await backend.allocateKvCache({ numPages: promptIds.length + options.maxNewTokens, pageSize: 1 });
  const rng = new Rng(options.seed ?? Rng.randomSeed());
  const sequence = new SingleSequence(backend);
  const sampling = () => ({
    temperature: Float32Array.of(options.temperature),
    topP: Float32Array.of(options.topP),
    topK: Int32Array.of(options.topK),
    random: Float32Array.of(rng.next()),
  });
  const detokenizer = model.tokenizer.newDetokenizer();
  const tokenIds: number[] = [];
  let text = '';
  let out = await sequence.step(promptIds, sampling());
  while (tokenIds.length < options.maxNewTokens) {
    const token = out.tokens[0]!;
    tokenIds.push(token);
    if (model.stopTokenIds.includes(token)) break;
    const piece = detokenizer.push(token);
    text += piece;
    if (!options.json) process.stdout.write(piece);
    if (tokenIds.length < options.maxNewTokens) out = await sequence.step([token], sampling());
  }
  const tail = detokenizer.flush();
  text += tail;
  await backend.close();
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ text, token_ids: tokenIds, prompt_token_ids: promptIds })}\n`);
  } else {
    process.stdout.write(`${tail}\n`);
  }
}
