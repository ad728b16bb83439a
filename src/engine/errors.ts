import { UserError } from '../errors.js';

/**
 * Errors generate() throws. Validation and admission errors (InvalidRequestError,
 * ContextLengthError, EngineOverloadedError, EngineDrainingError, EngineDeadError) are thrown
 * synchronously by generate() itself, before any stream exists; a backend failure after a
 * request was accepted makes its stream throw EngineDeadError.
 */

/** A request parameter out of range. `param` is the OpenAI-style wire name (max_tokens, top_p, ...; "prompt" for the prompt). */
export class InvalidRequestError extends UserError {
  override name = 'InvalidRequestError';
  /** generateMany(): which of the requests it is about, when one of them is. */
  requestIndex: number | null = null;
  constructor(
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/**
 * Prompt plus requested completion longer than the context (vLLM's wording, the only one: the
 * server does not check it again). `param` is "prompt"; the server names the field the prompt
 * came in (prompt, messages, text, input_ids).
 */
export class ContextLengthError extends InvalidRequestError {
  override name = 'ContextLengthError';
  constructor(
    readonly contextLength: number,
    readonly promptTokens: number,
    readonly completionTokens: number,
  ) {
    super(
      `This model's maximum context length is ${contextLength} tokens. However, you requested ` +
        `${promptTokens + completionTokens} tokens (${promptTokens} in the messages, ${completionTokens} in the completion). ` +
        'Please reduce the length of the messages or completion.',
      'prompt',
    );
  }
}

/** Too many requests waiting: try later (HTTP 429/503). */
export class EngineOverloadedError extends Error {
  override name = 'EngineOverloadedError';
}

/** drain() or close() was called: no new requests (HTTP 503). */
export class EngineDrainingError extends EngineOverloadedError {
  override name = 'EngineDrainingError';
}

/** The backend failed: the engine accepts nothing more and in-flight requests fail with this. */
export class EngineDeadError extends Error {
  override name = 'EngineDeadError';
}
