import { Option, type Command } from 'commander';
import { clientBackends } from '../bench/client-backends.js';
import { compareCommand, type CompareOptions } from '../bench/compare/compare-command.js';
import { datasetNames } from '../bench/datasets.js';
import { parseFloatOption, parseIntOption } from './options.js';

const collect = (value: string, previous: string[]) => [...previous, value];

export function register(program: Command): void {
  program
    .command('compare')
    .description("run the seed's benchmark suite (online 4 req/s x 1200, 8 req/s x 2400; offline x 5000) against engines one at a time")
    .option('--engine <name=url>', 'an engine to benchmark (repeatable)', collect, [])
    .option('--launch <name=command>', 'a shell command that starts the named engine; stopped after its runs (repeatable)', collect, [])
    .option('--scale <f>', 'multiplies the prompt counts (e.g. 0.01 for a quick run)', parseFloatOption, 1)
    .addOption(new Option('--backend <name>', 'client protocol for every engine').choices(clientBackends).default('sluice'))
    .addOption(new Option('--dataset-name <name>', 'dataset').choices(datasetNames).default('sharegpt'))
    .option('--dataset-path <file>', 'a ShareGPT-format JSON file (see sluice dataset synth-sharegpt)')
    .option('--sharegpt-output-len <n>', 'output length of every request instead of the completion length', parseIntOption)
    .option('--random-input-len <n>', 'random dataset: input tokens at most', parseIntOption, 1024)
    .option('--random-output-len <n>', 'random dataset: output tokens at most', parseIntOption, 128)
    .option('--random-range-ratio <r>', 'random dataset: lengths are drawn from [len * ratio, len]', parseFloatOption, 0.0)
    .option('--tokenizer <name>', 'tokenizer folder or preset name used to count tokens', 'llama-3.1-8b')
    .option('--seed <s>', 'seed of the dataset shuffle and the arrivals', parseIntOption, 1)
    .option('--disable-stream', 'ask for whole responses instead of streams')
    .option('--max-concurrency <n>', 'at most this many requests in flight', parseIntOption)
    .option('--request-timeout <s>', 'a request fails when it takes longer than this', parseFloatOption, 21600)
    .option('--stall-timeout <s>', 'a request fails when the server sends nothing for this long', parseFloatOption, 300)
    .option('--launch-timeout <s>', "how long a launched engine may take to answer on /health", parseFloatOption, 900)
    .option('--output-dir <dir>', 'where results.json and report.html go', 'compare-results')
    .action(async (options: CompareOptions) => {
      await compareCommand(options);
    });
}
