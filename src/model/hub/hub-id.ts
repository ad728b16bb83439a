import { existsSync } from 'node:fs';

/** `org/name`, optionally `org/name/file.gguf` for one GGUF file of a repo. */
export interface HubModelId {
  repo: string;
  /** A GGUF file inside the repo, when one is named. */
  file: string | null;
}

const segment = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Reads a --model-path as a Hugging Face model id; null when it is a local path or not shaped like one. */
export function parseHubModelId(modelPath: string): HubModelId | null {
  if (existsSync(modelPath) || modelPath.startsWith('.') || modelPath.startsWith('/')) return null;
  const parts = modelPath.split('/');
  if (parts.length < 2 || !segment.test(parts[0]!) || !segment.test(parts[1]!) || parts[1]!.endsWith('.gguf')) return null;
  if (parts.length === 2) return { repo: modelPath, file: null };
  const file = parts.slice(2).join('/');
  return file.endsWith('.gguf') && parts.slice(2).every((p) => segment.test(p)) ? { repo: `${parts[0]}/${parts[1]}`, file } : null;
}
