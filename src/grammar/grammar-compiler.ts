import type { CompiledGrammar, GrammarCompiler as XgCompiler, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import { InvalidRequestError } from '../engine/errors.js';
import type { GrammarSpec } from '../engine/types.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { fixSchema } from './schema-fixes.js';
import { grammarVocabulary, type GrammarVocabulary } from './tokenizer-info.js';
import { TokenMatcher } from './token-matcher.js';
import { loadXgrammar, type LoadedXgrammar } from './xgrammar.js';

/** Compiled grammars kept for reuse (by their text); the oldest is dropped beyond this. */
const cacheLimit = 256;

/**
 * Turns a request's GrammarSpec into an xgrammar CompiledGrammar for this model's vocabulary,
 * once per distinct grammar text, and hands out a matcher per sequence. JSON output is compact
 * (one line, json.dumps separators): fewer tokens, and more of them forced (jump-forward).
 */
export class GrammarCompiler {
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  /** Compile calls answered from the cache, and compilations run. */
  readonly counts = { hits: 0, compiled: 0 };

  private constructor(
    private readonly runtime: LoadedXgrammar,
    private readonly info: TokenizerInfo,
    private readonly compiler: XgCompiler,
    /** Logits width: the mask has one bit per id below it. */
    readonly vocabSize: number,
  ) {}

  static create(tokenizer: Tokenizer, vocabSize: number, stopTokenIds: readonly number[]): Promise<GrammarCompiler> {
    return GrammarCompiler.fromVocabulary(grammarVocabulary(tokenizer, vocabSize), stopTokenIds);
  }

  /** The same from the vocabulary alone (what the mask worker is sent: it has no tokenizer). */
  static async fromVocabulary(vocab: GrammarVocabulary, stopTokenIds: readonly number[]): Promise<GrammarCompiler> {
    const runtime = await loadXgrammar();
    const info = await runtime.xg.TokenizerInfo.createTokenizerInfo(vocab.encoded, vocab.type, vocab.prependSpace, vocab.encoded.length, [...stopTokenIds]);
    const compiler = await runtime.xg.GrammarCompiler.createGrammarCompiler(info, false);
    return new GrammarCompiler(runtime, info, compiler, vocab.encoded.length);
  }

  /** 32-bit words per mask row. */
  get maskWords(): number {
    return Math.ceil(this.vocabSize / 32);
  }

  /** The compiled grammar of `spec`; InvalidRequestError naming spec.param when it does not compile. */
  compile(spec: GrammarSpec): Promise<CompiledGrammar> {
    const key = cacheKey(spec);
    const cached = this.cache.get(key);
    if (cached) {
      this.counts.hits++;
      this.cache.delete(key); // re-inserted last: the map's order is least recently used first
      this.cache.set(key, cached);
      return cached;
    }
    this.counts.compiled++;
    const compiled = this.runtime.capture(async () => {
      const grammar = await this.compileSpec(spec);
      if (!grammar) throw new Error('xgrammar returned no grammar');
      return grammar;
    }).catch((e: Error) => {
      this.cache.delete(key);
      throw new InvalidRequestError(`${spec.param}: ${describe(spec)} does not compile: ${e.message}`, spec.param);
    });
    this.cache.set(key, compiled);
    if (this.cache.size > cacheLimit) {
      const [oldestKey, oldest] = this.cache.entries().next().value!;
      this.cache.delete(oldestKey);
      oldest.then((g) => g.dispose(), () => {});
    }
    return compiled;
  }

  /** A matcher at the grammar's start; it accepts `stopTokenIds` where the grammar may end. */
  async matcher(compiled: CompiledGrammar, stopTokenIds: readonly number[], onDispose?: () => void): Promise<TokenMatcher> {
    const m = await this.runtime.xg.GrammarMatcher.createGrammarMatcher(compiled, [...stopTokenIds]);
    return new TokenMatcher(m, this.maskWords, onDispose);
  }

  dispose(): void {
    for (const compiled of this.cache.values()) compiled.then((g) => g.dispose(), () => {});
    this.cache.clear();
    this.compiler.dispose();
    this.info.dispose();
  }

  private compileSpec(spec: GrammarSpec): Promise<CompiledGrammar> {
    switch (spec.type) {
      case 'json_schema':
        return this.compiler.compileJSONSchema(JSON.stringify(fixSchema(JSON.parse(spec.schema))), false, -1);
      case 'json_object':
        return this.compiler.compileJSONSchema('{"type": "object"}', false, -1);
      case 'regex':
        return this.compiler.compileStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern: spec.pattern } });
      case 'ebnf':
        return this.compiler.compileGrammar(spec.grammar, 'root');
      case 'choice':
        return this.compiler.compileGrammar(choiceGrammar(spec.choices), 'root');
      case 'tool_calls':
        return this.compileToolCalls(spec.tools, spec.parallel);
      case 'structural_tag':
        return this.compileStructuralTag(JSON.parse(spec.tag));
    }
  }

  /**
   * A structural tag whose JSON schema contents are compact JSON like every JSON output here
   * (xgrammar's json_schema format would allow any whitespace, which a model may fill forever).
   */
  private async compileStructuralTag(tag: object): Promise<CompiledGrammar> {
    const compact = async (node: unknown): Promise<unknown> => {
      if (Array.isArray(node)) return Promise.all(node.map(compact));
      if (node === null || typeof node !== 'object') return node;
      const fields = node as Record<string, unknown>;
      if (fields.type === 'json_schema' && 'json_schema' in fields) {
        const grammar = await this.runtime.xg.Grammar.fromJSONSchema(JSON.stringify(fixSchema(fields.json_schema)), false, -1);
        const text = grammar.toString();
        grammar.dispose();
        return { type: 'grammar', grammar: text };
      }
      const out: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(fields)) out[key] = await compact(value);
      return out;
    };
    return this.compiler.compileStructuralTag((await compact(tag)) as Record<string, unknown>);
  }

  /**
   * An xgrammar structural tag: one tag per function (its call's fixed opening, the parameters,
   * the closing brace), tags separated by "; ". The parameters are compact JSON like every JSON
   * output here (the structural tag's own JSON format would allow any whitespace).
   */
  private async compileToolCalls(tools: { name: string; schema: string }[], parallel: boolean): Promise<CompiledGrammar> {
    const tags = [];
    for (const tool of tools) {
      const grammar = await this.runtime.xg.Grammar.fromJSONSchema(JSON.stringify(fixSchema(JSON.parse(tool.schema))), false, -1);
      tags.push({ type: 'tag', begin: `{"name": ${JSON.stringify(tool.name)}, "parameters": `, content: { type: 'grammar', grammar: grammar.toString() }, end: '}' });
      grammar.dispose();
    }
    const format = { type: 'tags_with_separator', tags, separator: '; ', at_least_one: true, stop_after_first: !parallel };
    return this.compiler.compileStructuralTag({ type: 'structural_tag', format });
  }
}

/** EBNF for exactly one of the strings (xgrammar's string literals take JSON's escapes). */
export function choiceGrammar(choices: string[]): string {
  return `root ::= ${choices.map((c) => JSON.stringify(c)).join(' | ')}`;
}

function cacheKey(spec: GrammarSpec): string {
  switch (spec.type) {
    case 'json_schema':
      return `json_schema\0${spec.schema}`;
    case 'json_object':
      return 'json_object';
    case 'regex':
      return `regex\0${spec.pattern}`;
    case 'ebnf':
      return `ebnf\0${spec.grammar}`;
    case 'choice':
      return `choice\0${JSON.stringify(spec.choices)}`;
    case 'tool_calls':
      return `tool_calls\0${JSON.stringify(spec)}`;
    case 'structural_tag':
      return `structural_tag\0${spec.tag}`;
  }
}

function describe(spec: GrammarSpec): string {
  return { json_schema: 'the JSON schema', json_object: 'the JSON object grammar', regex: 'the regular expression', ebnf: 'the EBNF grammar', choice: 'the choices', tool_calls: 'a tool\'s parameters schema', structural_tag: 'the structural tag' }[spec.type];
}

