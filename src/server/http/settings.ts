/** HTTP settings against slow or hostile clients, and what the server adds to every answer. */
export interface HttpSettings {
  /** CORS: origins allowed to call from a browser ("*" any); none by default. */
  allowedOrigins: string[];
  /** Time a client has to send its request headers. */
  headersTimeoutMs: number;
  /** Time a client has to send its whole request (headers and body). */
  bodyTimeoutMs: number;
  /** How long an idle keep-alive connection stays open. */
  keepAliveTimeoutMs: number;
  /** Longest a generation may run before it is aborted (its KV freed); null: no limit. */
  requestTimeoutMs: number | null;
  /** Request log lines as text, or as JSON lines. */
  logFormat: 'text' | 'json';
}

export const defaultHttpSettings: HttpSettings = {
  allowedOrigins: [],
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  requestTimeoutMs: null,
  logFormat: 'text',
};

/**
 * Bytes a generation request body may have: enough for a prompt that fills the context with the
 * longest tokens there are (as text), plus room for the other fields.
 */
export function generationBodyLimit(contextLength: number, maxTokenBytes: number): number {
  return 1024 * 1024 + contextLength * Math.max(8, maxTokenBytes);
}
