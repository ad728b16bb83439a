import { UserError } from '../errors.js';
import { defaultPorts, type ClientBackend } from './client-backends.js';
import { getJson } from './http-lines.js';

export interface EndpointOptions {
  backend: ClientBackend;
  baseUrl?: string;
  host: string;
  port?: number;
}

/** --base-url wins; otherwise http://host:port with the backend's default port. */
export function resolveBaseUrl(options: EndpointOptions): string {
  const raw = options.baseUrl ?? `http://${options.host}:${options.port ?? defaultPorts[options.backend]}`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UserError(`--base-url ${raw} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UserError(`--base-url ${raw} must be http:// or https://`);
  return raw.replace(/\/+$/, '');
}

/**
 * SGLang's GET /get_server_info (sluice serves it too): how the engine was started (tp_size,
 * max_total_tokens, ...), kept with a comparison's results; null where the engine has no such route.
 */
export async function fetchServerInfo(baseUrl: string, timeoutMs = 10_000): Promise<Record<string, unknown> | null> {
  try {
    const info = await getJson(new URL(`${baseUrl}/get_server_info`), timeoutMs);
    return info !== null && typeof info === 'object' && !Array.isArray(info) ? (info as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The first model the server lists at GET /v1/models. */
export async function fetchServedModel(baseUrl: string, apiKey?: string, timeoutMs = 30_000): Promise<string> {
  const url = new URL(`${baseUrl}/v1/models`);
  let listing: any;
  try {
    listing = await getJson(url, timeoutMs, apiKey ? { authorization: `Bearer ${apiKey}` } : {});
  } catch (e) {
    throw new UserError(`Failed to fetch model from ${url.href}. Error: ${(e as Error).message}. Please specify the correct host and port using --host and --port (or --base-url).`);
  }
  const id = Array.isArray(listing?.data) ? listing.data[0]?.id : undefined;
  if (typeof id !== 'string') throw new UserError('No model specified or found. Please provide a model using --model.');
  return id;
}
