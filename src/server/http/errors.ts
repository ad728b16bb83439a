import type { FastifyError } from 'fastify';
import { ContextLengthError, EngineDeadError, EngineDrainingError, EngineOverloadedError, InvalidRequestError } from '../../engine/errors.js';

export type ErrorType = 'invalid_request_error' | 'server_error';

/** The body of every error response: OpenAI's shape. */
export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | number | null };
}

/** An error that becomes one HTTP response in OpenAI's error shape. */
export class ApiError extends Error {
  override name = 'ApiError';

  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function invalidParam(param: string | null, message: string, code: string | null = null): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

export function unknownModel(model: string, served: string): ApiError {
  return new ApiError(404, `The model \`${model}\` does not exist (this server serves \`${served}\`).`, 'invalid_request_error', 'model', 'model_not_found');
}

export function overloaded(message: string): ApiError {
  return new ApiError(503, message, 'server_error', null, 'server_overloaded', { 'retry-after': '1' });
}

export function engineUnavailable(message: string): ApiError {
  return new ApiError(503, message, 'server_error', null, 'engine_unavailable');
}

/**
 * Maps anything thrown while handling a request to an ApiError: our own, the engine's named
 * errors, and fastify's (validation, malformed JSON, body too large).
 */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof ContextLengthError) return invalidParam(e.param, e.message, 'context_length_exceeded');
  if (e instanceof InvalidRequestError) return invalidParam(e.param, e.message);
  if (e instanceof EngineDrainingError || e instanceof EngineDeadError) return engineUnavailable(e.message);
  if (e instanceof EngineOverloadedError) return overloaded(e.message);
  const err = e as FastifyError;
  if (err?.validation) return validationError(err);
  if (err?.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return invalidParam(null, 'The request body is not valid JSON.', 'invalid_json');
  }
  if (err?.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return invalidParam(null, 'The request body is empty; send a JSON object.', 'invalid_json');
  if (err?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new ApiError(413, err.message, 'invalid_request_error', null, 'request_too_large');
  if (typeof err?.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new ApiError(err.statusCode, err.message, 'invalid_request_error');
  }
  return new ApiError(500, `Internal server error: ${err?.message ?? String(e)}`, 'server_error');
}

interface SchemaIssue {
  instancePath: string;
  keyword: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** One clear sentence naming the first offending parameter, from the schema validator's issue list. */
function validationError(err: FastifyError): ApiError {
  const issues = (err.validation ?? []) as SchemaIssue[];
  const first = issues[0];
  if (!first) return invalidParam(null, err.message);
  if (first.keyword === 'required') {
    const missing = (first.params?.requiredProperties as string[] | undefined)?.[0] ?? (first.params?.missingProperty as string | undefined);
    const at = pathToParam(first.instancePath);
    const param = at ? `${at}.${missing}` : (missing ?? null);
    return invalidParam(param, `'${param}' is a required property`);
  }
  const param = pathToParam(first.instancePath);
  const where = param ?? 'the request body';
  const description = issues
    .filter((i) => first.instancePath.startsWith(i.instancePath))
    .map((i) => (i.params as { description?: string } | undefined)?.description)
    .find(Boolean);
  const message = description ? `must be ${description}` : first.message;
  return invalidParam(param, `Invalid value for '${where}': ${message}.`);
}

/** "/messages/0/role" -> "messages[0].role" */
function pathToParam(path: string): string | null {
  if (!path) return null;
  return path
    .split('/')
    .slice(1)
    .map((part, i) => (/^\d+$/.test(part) ? `[${part}]` : i === 0 ? part : `.${part}`))
    .join('');
}
