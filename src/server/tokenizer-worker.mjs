// The tokenizer thread of src/server/prompt-encoder.ts: the same @huggingface/tokenizers encode as
// src/model/tokenizer.ts, built from the same tokenizer.json and tokenizer_config.json. Plain
// JavaScript, so it starts without the TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from '@huggingface/tokenizers';

const tokenizer = new Tokenizer(workerData.json, workerData.config);
parentPort.on('message', ({ id, text, addSpecialTokens }) => {
  try {
    const ids = Int32Array.from(tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids);
    parentPort.postMessage({ id, ids }, [ids.buffer]);
  } catch (e) {
    parentPort.postMessage({ id, error: String(e?.message ?? e) });
  }
});
