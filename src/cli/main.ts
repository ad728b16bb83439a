import { Command, CommanderError } from 'commander';
import { UserError } from '../errors.js';

/** Each subcommand lives in its own module that adds itself to the program. */
const commandModules: (() => Promise<{ register(program: Command): void }>)[] = [
  () => import('./generate.js'),
  () => import('./serve.js'),
  () => import('./bench.js'),
  () => import('./compare.js'),
  () => import('./dataset.js'),
];

export async function main(argv: string[]): Promise<void> {
  const program = new Command('sluice')
    .description('An LLM serving engine: OpenAI- and SGLang-compatible serving of Llama models')
    .exitOverride()
    .showHelpAfterError(false);
  for (const load of commandModules) (await load()).register(program);
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
    process.stderr.write(`error: ${e.message}\n`);
    return 1;
  }
  throw e;
}
