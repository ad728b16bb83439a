import type { Command } from 'commander';
import { UserError } from '../errors.js';
import { openModel, type LoadFormat } from '../model/load.js';
import { LlmEngine } from '../engine/engine.js';
import { parseFloatOption, parseIntOption } from './options.js';
import { addBackendFlags, backendOptions, createBackendFromFlags, dequantizedDType, type BackendFlags } from './backend-flags.js';

interface GenerateOptions extends BackendFlags {
  modelPath?: string;
  revision?: string;
  chatTemplate?: string;
  loadFormat: LoadFormat;
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
  const command = program
    .command('generate')
    .description('complete one prompt and print the result')
    .option('--model-path <path>', 'a Hugging Face model id (org/name) or folder, a GGUF file or a preset name')
    .option('--revision <rev>', 'Hugging Face model ids: the branch, tag or commit (default main)')
    .option('--chat-template <file>', "a Jinja chat template file replacing the tokenizer's (with --chat)")
    .option('--load-format <format>', 'auto | safetensors | gguf | dummy', 'auto');
  addBackendFlags(command)
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
  backendOptions(options);
  const model = await openModel({
    modelPath: options.modelPath,
    loadFormat: options.loadFormat,
    dequantizeTo: dequantizedDType(options),
    revision: options.revision,
    chatTemplate: options.chatTemplate,
    log: (line) => process.stderr.write(`${line}\n`),
  });
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
  if (options.maxNewTokens < 1) throw new UserError(`--max-new-tokens must be at least 1, got ${options.maxNewTokens}`);
  if (promptIds.length + options.maxNewTokens > model.config.maxPositionEmbeddings) {
    throw new UserError(`prompt (${promptIds.length} tokens) plus --max-new-tokens exceeds the context of ${model.config.maxPositionEmbeddings}`);
  }
  const backend = await createBackendFromFlags(options);
  // A KV pool of exactly this request's size: nothing more is ever needed here.
  const needed = promptIds.length + options.maxNewTokens;
  const engine = await LlmEngine.create(model, backend, { maxTotalTokens: needed, contextLength: needed });
  const tokenIds: number[] = [];
  let text = '';
  try {
    const stream = engine.generate({
      promptTokenIds: promptIds,
      params: {
        maxNewTokens: options.maxNewTokens,
        temperature: options.temperature,
        topP: options.topP,
        topK: options.topK,
        seed: options.seed ?? null,
      },
    });
    for await (const delta of stream) {
      tokenIds.push(...delta.tokenIds);
      text += delta.text;
      if (!options.json) process.stdout.write(delta.text);
    }
  } finally {
    await engine.close();
  }
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ text, token_ids: tokenIds, prompt_token_ids: promptIds })}\n`);
  } else {
    process.stdout.write('\n');
  }
}
