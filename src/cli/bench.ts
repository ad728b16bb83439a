import { InvalidArgumentError, Option, type Command } from 'commander';
import { benchCommand, type BenchOptions } from '../bench/bench-command.js';
import { clientBackends } from '../bench/client-backends.js';
import { datasetNames } from '../bench/datasets.js';
import { parseFloatOption, parseIntOption } from './options.js';

export function register(program: Command): void {
  program
    .command('bench')
    .description('benchmark a running server the way SGLang v0.3.0 bench_serving does')
    .addOption(new Option('--backend <name>', 'client protocol').choices(clientBackends).default('sglang'))
    .option('--base-url <url>', 'server URL; overrides --host and --port')
    .option('--host <host>', 'server host', '0.0.0.0')
    .option('--port <port>', 'server port (default: 30000 for sglang/sluice, 8000 for vllm)', parsePositiveInt)
    .addOption(new Option('--dataset-name <name>', 'dataset').choices(datasetNames).default('sharegpt'))
    .option('--dataset-path <file>', 'a ShareGPT-format JSON file')
    .option('--model <name>', 'model name sent in requests (default: the first of GET /v1/models)')
    .option('--tokenizer <name>', 'tokenizer folder (with tokenizer.json) or preset name (default: --model)')
    .option('--num-prompts <n>', 'number of prompts', parsePositiveInt, 1000)
    .option('--sharegpt-output-len <n>', 'output length of every ShareGPT request instead of the completion length', parsePositiveInt)
    .option('--random-input-len <n>', 'random dataset: input tokens at most', parsePositiveInt, 1024)
    .option('--random-output-len <n>', 'random dataset: output tokens at most', parseIntOption, 128)
    .option('--random-range-ratio <r>', 'random dataset: lengths are drawn from [len * ratio, len]', parseFloatOption, 0.0)
    .option('--request-rate <rate>', 'requests per second (Poisson arrivals) or inf: all at once', parseRate, Infinity)
    .option('--seed <s>', 'seed of the dataset shuffle and the arrivals', parseIntOption, 1)
    .option('--multi', 'run once per rate of --request-rate-range')
    .option('--request-rate-range <range>', '"start,stop,step" or a list of rates, with --multi', '2,34,2')
    .option('--output-file <file>', 'append one JSON line of results per run (default: bench-results/<backend>_<mmdd>_<prompts>_....jsonl)')
    .option('--output-details <file>', 'write one JSON line per request (timings, text, errors)')
    .option('--disable-tqdm', 'no progress bar')
    .option('--disable-stream', 'ask for whole responses instead of streams')
    .option('--disable-ignore-eos', 'let requests stop at EOS')
    .option('--extra-request-body <json>', 'JSON object merged into every request body')
    .option('--max-concurrency <n>', 'at most this many requests in flight', parsePositiveInt)
    .option('--request-timeout <s>', 'a request fails when it takes longer than this', parseFloatOption, 21600)
    .option('--stall-timeout <s>', 'a request fails when the server sends nothing for this long', parseFloatOption, 300)
    .action(async (options: BenchOptions) => {
      await benchCommand(options);
    });
}

function parsePositiveInt(value: string): number {
  const n = parseIntOption(value);
  if (n < 1) throw new InvalidArgumentError(`${JSON.stringify(value)} must be at least 1`);
  return n;
}

function parseRate(value: string): number {
  if (value.trim().toLowerCase() === 'inf') return Infinity;
  const n = parseFloatOption(value);
  if (n <= 0) throw new InvalidArgumentError(`${JSON.stringify(value)} must be positive (or inf)`);
  return n;
}
