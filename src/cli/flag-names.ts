/** Option names of the lower layers whose flag is not their kebab-case spelling. */
const flagOverrides: Record<string, string> = {
  device: '--base-gpu-id',
  graphCapture: '--disable-cuda-graph',
  allowLongContext: 'SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1',
  deterministicInference: '--enable-deterministic-inference',
  stepTimeoutMs: '--watchdog-timeout',
};

/** The command-line flag of an option an OptionError names (memFractionStatic -> --mem-fraction-static). */
export function flagOf(option: string): string {
  return flagOverrides[option] ?? `--${option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}
