import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * The options of a benchmark script, strictly: an unknown or malformed option prints one line
 * naming it and the valid ones, and exits 2 (no stack trace).
 */
export function scriptOptions<const T extends NonNullable<ParseArgsConfig['options']>>(script: string, options: T) {
  try {
    return parseArgs({ options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    const valid = Object.keys(options).map((name) => `--${name}`).join(' ');
    process.stderr.write(`${script}: ${(e as Error).message.split('\n')[0]} (valid options: ${valid})\n`);
    process.exit(2);
  }
}
