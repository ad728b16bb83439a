import { UserError } from '../../errors.js';

export interface EngineSpec {
  name: string;
  url: string;
  /** A shell command that starts the engine; it is stopped before the next engine starts. */
  launch?: string;
}

/** Parses repeated --engine name=url and --launch name=command options. */
export function parseEngines(engines: string[], launches: string[]): EngineSpec[] {
  if (engines.length === 0) throw new UserError('give at least one --engine name=url');
  const specs: EngineSpec[] = engines.map((text) => {
    const [name, url] = splitPair(text, '--engine', 'name=url');
    try {
      const parsed = new URL(url);
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error();
    } catch {
      throw new UserError(`--engine ${text}: ${url} is not an http(s) URL`);
    }
    return { name, url: url.replace(/\/+$/, '') };
  });
  const names = new Set<string>();
  for (const s of specs) {
    if (names.has(s.name)) throw new UserError(`--engine: the name ${s.name} is given twice`);
    names.add(s.name);
  }
  for (const text of launches) {
    const [name, command] = splitPair(text, '--launch', "name='command'");
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new UserError(`--launch ${name}: no --engine named ${name}`);
    spec.launch = command;
  }
  return specs;
}

function splitPair(text: string, flag: string, shape: string): [string, string] {
  const at = text.indexOf('=');
  const name = text.slice(0, at).trim();
  const value = text.slice(at + 1).trim();
  if (at <= 0 || !value) throw new UserError(`${flag} ${text}: expected ${shape}`);
  if (!/^[\w.-]+$/.test(name)) throw new UserError(`${flag} ${text}: the name may hold letters, digits, '.', '_' and '-' only`);
  return [name, value];
}
