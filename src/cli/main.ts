import { Command, CommanderError } from 'commander';
import { OptionError, UserError } from '../errors.js';
import { flagOf } from './flag-names.js';

/**
 * Each subcommand lives in its own module that adds itself to the program. Only the module of
 * the command being run is imported (the others pull in servers, backends and clients).
 */
const commandModules: Record<string, () => Promise<{ register(program: Command): void }>> = {
  generate: () => import('./generate.js'),
  serve: () => import('./serve.js'),
  bench: () => import('./bench.js'),
  compare: () => import('./compare.js'),
  dataset: () => import('./dataset.js'),
};

export async function main(argv: string[]): Promise<void> {
  const program = new Command('sluice')
    .description('An LLM serving engine: OpenAI- and SGLang-compatible serving of Llama models')
    .exitOverride()
    .showHelpAfterError(false);
  const invoked = commandModules[argv[0] ?? ''];
  const loaders = invoked ? [invoked] : Object.values(commandModules);
  for (const load of loaders) (await load()).register(program);
  for (const command of program.commands) command.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    process.exitCode = reportError(e, program);
  }
}

function reportError(e: unknown, program: Command): number {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version') return 0;
    if (e.code === 'commander.unknownOption') {
      const name = /'(.*?)'/.exec(e.message)?.[1] ?? '';
      const command = program.commands.find((c) => process.argv.includes(c.name())) ?? program;
      const valid = command.options.map((o) => o.long).filter(Boolean).join(' ');
      process.stderr.write(`valid options of sluice ${command.name()}: ${valid}\n`);
      if (name) return 2;
    }
    return e.exitCode || 2;
  }
  if (e instanceof UserError) {
    process.stderr.write(`error: ${e instanceof OptionError ? e.messageNaming(flagOf) : e.message}\n`);
    return 1;
  }
  throw e;
}
