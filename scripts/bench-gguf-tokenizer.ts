/**
 * The SentencePiece GGUF tokenizer (issue 16): how long building it from a 32,000-piece
 * vocabulary takes (its BPE merges come from the piece scores at load), and encoding speed
 * against llama.cpp (node-llama-cpp) on the same file, alternating the two; prints the load average.
 *
 *   npx tsx scripts/bench-gguf-tokenizer.ts [--pieces 32000] [--rounds 5]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { DummyWeights } from '../src/model/dummy-weights.js';
import { openModel } from '../src/model/load.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { writeGguf } from '../test/support/gguf-writer.js';
import { tinyVariant } from '../test/support/reference-runs.js';
import { sentencePieceVocabulary } from '../test/support/sentencepiece-vocabulary.js';
import { scriptOptions } from './script-options.js';

const args = scriptOptions('bench-gguf-tokenizer', {
  pieces: { type: 'string', default: '32000' },
  rounds: { type: 'string', default: '5' },
});
const load = () => loadavg().map((l) => l.toFixed(1)).join(' ');
const vocabulary = sentencePieceVocabulary(Tokenizer.llama3(), Number(args.pieces));
const config = tinyVariant({ vocabSize: vocabulary.tokens.length, bosTokenId: vocabulary.bos, eosTokenIds: [vocabulary.eos] });
const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-spm-'));
const file = join(dir, 'spm.gguf');
await writeGguf(file, { config, tokenizer: vocabulary, weights: new DummyWeights(config, 1) }, { dtype: 'f32' });

const paragraph =
  'The river town woke slowly: bakers lit their ovens before dawn, fishermen checked nets by lantern light, and the old clock ' +
  'above the market hall struck five, a little late as always. Prices: 3.50 for bread, 12 for fish; déjà vu, naïve café, 日本語. ';
const text = paragraph.repeat(400);

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const theirs = await llama.loadModel({ modelPath: file, vocabOnly: true });
try {
  console.log(`SentencePiece GGUF tokenizer, ${vocabulary.tokens.length} tokens; text of ${text.length} characters; load ${load()}`);
  for (let round = 0; round < Number(args.rounds); round++) {
    let started = performance.now();
    const model = await openModel({ modelPath: file });
    const openMs = performance.now() - started;
    started = performance.now();
    const ours = model.tokenizer.encode(text, false);
    const oursMs = performance.now() - started;
    started = performance.now();
    const reference = theirs.tokenize(text, true);
    const theirsMs = performance.now() - started;
    const same = ours.length === reference.length && ours.every((id, i) => id === reference[i]);
    console.log(
      `round ${round}: open (tokenizer built) ${openMs.toFixed(0)} ms; encode ${ours.length} tokens: sluice ${oursMs.toFixed(0)} ms, ` +
        `llama.cpp ${theirsMs.toFixed(0)} ms (ratio ${(oursMs / theirsMs).toFixed(2)}); ids equal: ${same}; load ${load()}`,
    );
    await model.weights.close();
  }
} finally {
  await theirs.dispose();
  await llama.dispose();
  rmSync(dir, { recursive: true, force: true });
}
