import Module, { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import type * as Xgrammar from '@mlc-ai/web-xgrammar';

export type XgrammarModule = typeof Xgrammar;

/**
 * Loads @mlc-ai/web-xgrammar (xgrammar's WASM build) in Node. Its lib/index.js is a UMD bundle
 * in a package marked "type": "module", so Node's ESM loader runs it without `require` and it
 * fails; compiled as the CommonJS module it is, it runs as it does under a bundler.
 *
 * xgrammar reports an invalid schema or grammar by printing "[FATAL] ..." and aborting the call
 * (the module stays usable). `capture` collects those lines so that the caller can name the
 * problem: the module's printer is console.error as bound at its first call, which is why a
 * forwarding function is in place then.
 */
export interface LoadedXgrammar {
  xg: XgrammarModule;
  /** Runs `fn`, returning its result, or throws an Error with what xgrammar printed when it aborted. */
  capture<T>(fn: () => Promise<T>): Promise<T>;
}

let loaded: Promise<LoadedXgrammar> | null = null;

export function loadXgrammar(): Promise<LoadedXgrammar> {
  loaded ??= load();
  return loaded;
}

async function load(): Promise<LoadedXgrammar> {
  const require = createRequire(import.meta.url);
  const file = require.resolve('@mlc-ai/web-xgrammar');
  const mod = new Module(file) as Module & { _compile(source: string, filename: string): void; filename: string; paths: string[] };
  mod.filename = file;
  mod.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(file);
  mod._compile(readFileSync(file, 'utf8'), file);
  const xg = mod.exports as XgrammarModule;

  let sink: string[] | null = null;
  const original = console.error;
  console.error = (...args: unknown[]) => {
    if (sink) sink.push(args.map(String).join(' '));
    else original.apply(console, args);
  };
  try {
    (await xg.Grammar.fromEBNF('root ::= "a"')).dispose(); // instantiates the WASM module, binding its printer
  } finally {
    console.error = original;
  }

  let running = Promise.resolve();
  const capture = <T>(fn: () => Promise<T>): Promise<T> => {
    // One call at a time: the printed lines must belong to the call that failed.
    const result = running.then(async () => {
      sink = [];
      try {
        return await fn();
      } catch (e) {
        const printed = sink
          .flatMap((line) => line.split('\n'))
          .filter((line) => line.includes('[FATAL]'))
          .map((line) => line.replace(/^.*\[FATAL\]\s*\S+:\d+:\s*/, ''));
        throw new Error(printed.length > 0 ? printed.join('; ') : (e as Error).message);
      } finally {
        sink = null;
      }
    });
    running = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  };
  return { xg, capture };
}
