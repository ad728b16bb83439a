import { afterAll, describe, expect, it } from 'vitest';
import { GrammarCompiler } from '../../src/grammar/grammar-compiler.js';
import { continuationOf, forcedTokens } from '../../src/grammar/jump-forward.js';
import { loadModel } from '../../src/model/load.js';

const model = loadModel({ modelPath: 'tiny' });
const tokenizer = model.tokenizer;
const compilerReady = GrammarCompiler.create(tokenizer, model.config.vocabSize, model.stopTokenIds);
afterAll(async () => (await compilerReady).dispose());

const schema = JSON.stringify({ type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } }, required: ['name', 'age'] });
const ids = (text: string) => tokenizer.encode(text, false);

async function matcherAfter(text: string) {
  const compiler = await compilerReady;
  const matcher = await compiler.matcher(await compiler.compile({ type: 'json_schema', schema, param: 'test' }), model.stopTokenIds);
  for (const id of ids(text)) expect(matcher.accept(id)).toBe(true);
  return matcher;
}

describe('jump-forward tokens are the tokenizer\'s at both boundaries', () => {
  it('a sampled token that merges with the forced text is replaced by the joint tokens (the matcher rolled back past it)', async () => {
    const matcher = await matcherAfter('{"name": "Bob');
    const quote = ids('"');
    expect(quote).toHaveLength(1);
    expect(matcher.accept(quote[0]!)).toBe(true); // the model closes the string
    const tokens = continuationOf(matcher, tokenizer, quote[0]!, 100);
    // `"` + `, "age": ` tokenizes as `",` ` "` `age` `":` ` `; the last, a space, is left to the model.
    const joint = ids('", "age": ');
    expect(joint[0]).not.toBe(quote[0]);
    expect(tokens).toEqual(joint.slice(0, -1));
    expect(tokenizer.decode(tokens)).toBe('", "age":');
    // The matcher stands after `"age":`: the model's ` 42` is allowed, and the object can close after it.
    for (const id of ids(' 42}')) expect(matcher.accept(id)).toBe(true);
    matcher.dispose();
  });

  it('a sampled token that does not merge stays first, the forced tokens after it', async () => {
    const matcher = await matcherAfter('{"name": "Bob", "age": 4');
    const digit = ids('2')[0]!;
    expect(matcher.accept(digit)).toBe(true);
    expect(continuationOf(matcher, tokenizer, digit, 100)).toEqual([digit]); // digits may go on: nothing is forced
    matcher.dispose();
  });

  it('at the start, forced text ending in whitespace leaves that token to the model', async () => {
    const compiler = await compilerReady;
    const matcher = await compiler.matcher(await compiler.compile({ type: 'json_schema', schema, param: 'test' }), model.stopTokenIds);
    expect(tokenizer.decode(forcedTokens(matcher, tokenizer, 100))).toBe('{"name": "');
    matcher.dispose();
  });

  it('within the limit, and never past the sampled token\'s text when the limit cuts the joint tokens short', async () => {
    const matcher = await matcherAfter('{"name": "Bob');
    const quote = ids('"')[0]!;
    expect(matcher.accept(quote)).toBe(true);
    const tokens = continuationOf(matcher, tokenizer, quote, 2);
    expect(tokens).toEqual(ids('", "age": ').slice(0, 2));
    matcher.dispose();
  });
});
