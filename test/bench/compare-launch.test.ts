import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SuiteResults } from '../../src/bench/compare/suite.js';
import { synthesizeShareGpt } from '../../src/bench/synth-sharegpt.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { freePort, runSluice, sluiceBin } from '../support/sluice-process.js';

// The seed's large-model rows launch their engines with `--tp 4`: the launch command must reach
// the launched server as written, which the server's own /get_server_info then reports.
describe('sluice compare --launch', () => {
  it('passes the launch command through unchanged: a sluice server launched with --tp 4 runs 4 ranks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-compare-launch-'));
    const dataset = join(dir, 'sharegpt-synth.json');
    const outputDir = join(dir, 'out');
    writeFileSync(dataset, JSON.stringify(synthesizeShareGpt(Tokenizer.llama3(), { numConversations: 20, seed: 5 })));
    const port = await freePort();
    const launch = `exec "${process.execPath}" "${sluiceBin}" serve --model-path tiny --backend ref --tp 4 --port ${port} --max-total-tokens 4096`;
    const result = await runSluice(
      [
        'compare',
        '--engine', `tp4=http://127.0.0.1:${port}`,
        '--launch', `tp4=${launch}`,
        '--scale', '0.001',
        '--dataset-path', dataset,
        '--sharegpt-output-len', '4',
        '--tokenizer', 'tiny',
        '--launch-timeout', '120',
        '--output-dir', outputDir,
      ],
      240_000,
    );
    expect(result.code, result.stderr + result.stdout).toBe(0);
    expect(result.stdout + result.stderr).toContain(`[tp4] launching: ${launch}`);
    const results: SuiteResults = JSON.parse(readFileSync(join(outputDir, 'results.json'), 'utf8'));
    const [engine] = results.engines;
    expect(engine!.error).toBeUndefined();
    expect(engine!.launch).toBe(launch);
    expect(engine!.serverInfo?.tp_size).toBe(4);
    expect(engine!.runs.every((r) => r.metrics!.completed === r.numPrompts)).toBe(true);
  }, 300_000);
});
