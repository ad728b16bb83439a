import type { Engine, EngineSettings } from '../engine/types.js';
import type { LoadedModel } from '../model/load.js';
import type { Logger } from './http/logger.js';
import type { HttpSettings } from './http/settings.js';
import type { ServerMetrics } from './http/metrics.js';
import type { PromptEncoder } from './prompt-encoder.js';
import type { TokenText } from './protocol/token-text.js';
import type { KvEventPublisher } from './kv-events-publisher.js';

/** The engine as the server sees it: the Engine interface plus the context it enforces. */
export type ServedEngine = Engine & { readonly contextLength: number; readonly settings: EngineSettings };

/** A request the engine is working on for this server: shutdown aborts what is left after the drain timeout. */
export interface InFlightRequest {
  abort(): void;
}

/** What every route handler shares. */
export interface ServerContext {
  engine: ServedEngine;
  model: LoadedModel;
  servedModelName: string;
  contextLength: number;
  metrics: ServerMetrics;
  log: Logger;
  logRequests: boolean;
  tokenText: TokenText;
  /** Prompt text to token ids (long texts off the HTTP thread when the server was started so). */
  prompts: PromptEncoder;
  /** Requests the engine is working on for this server (for drain and wedge detection). */
  inFlight: Set<InFlightRequest>;
  /** When the server last went from idle to busy (ms since epoch). */
  busySince: number;
  /** How long the engine may go without a step while busy before /health says it is wedged. */
  wedgeTimeoutMs: number;
  http: HttpSettings;
  /** Set once shutdown begins: new generation requests get 503. */
  draining: boolean;
  /** Tensor-parallel ranks the engine's backend runs (--tp-size), as /server_info reports. */
  tpSize: number;
  /** --stream-interval: a streamed choice is sent every this many tokens (the first and last at once). */
  streamInterval: number;
  /** Where KV-cache events go (--kv-events-endpoint), or null when off. */
  kvEvents: KvEventPublisher | null;
}
