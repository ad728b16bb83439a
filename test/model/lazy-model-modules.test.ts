import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// The Hugging Face hub client and the GGUF reader are ~7 MB of heap once imported: every full
// collection marks them. A preset or a model folder needs neither, so neither is loaded for one.
const heavyPackages = ['@huggingface/hub', '@huggingface/gguf'];
const root = fileURLToPath(new URL('../..', import.meta.url));

/** Runs `script` in a fresh Node process in which importing any of heavyPackages fails. */
function runRefusing(script: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, ['--import', 'tsx', '--import', './test/support/refuse-imports.mjs', '--input-type=module', '-e', script], {
    cwd: root,
    env: { ...process.env, SLUICE_REFUSE_IMPORTS: heavyPackages.join(',') },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

describe('model loading imports the hub client and the GGUF reader only when it needs them', () => {
  it('opens a preset without either package', () => {
    const run = runRefusing("const { openModel } = await import('./src/model/load.ts'); const model = await openModel({ modelPath: 'tiny' }); console.log(`opened ${model.name} ${model.tokenizer.vocabSize}`);");
    expect(run.stderr).not.toMatch(/refused import/);
    expect(run.stdout.trim()).toBe('opened tiny 128256');
    expect(run.status).toBe(0);
  });

  it('(the refusal works: importing the hub download module fails, naming the package)', () => {
    const run = runRefusing("await import('./src/model/hub/hub-download.ts');");
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/refused import of @huggingface\/hub/);
  });
});
