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
