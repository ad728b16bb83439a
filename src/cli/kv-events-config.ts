import { UserError } from '../errors.js';

/** The --kv-events-* flags that vLLM's --kv-events-config JSON stands for. */
export interface KvEventsFlags {
  kvEventsEndpoint?: string;
  kvEventsTopic?: string;
  kvEventsReplayEndpoint?: string;
  kvEventsBufferSteps: number;
  kvEventsHwm?: number;
}

/**
 * Reads vLLM's --kv-events-config (its KVEventsConfig as JSON, which is how llm-d's guides turn
 * events on) into the --kv-events-* flags. Off unless enable_kv_cache_events is true and the
 * publisher is zmq (or left out, as newer vLLM defaults it); endpoint defaults to vLLM's
 * tcp://*:5557. Keys the server does not honour are refused by name.
 */
export function kvEventsFlagsFromConfig(json: string, current: KvEventsFlags): KvEventsFlags {
  const flag = '--kv-events-config';
  let config: unknown;
  try {
    config = JSON.parse(json);
  } catch {
    throw new UserError(`${flag}: not JSON (give vLLM's KVEventsConfig, e.g. '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557"}')`);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new UserError(`${flag}: give a JSON object`);
  const fields = config as Record<string, unknown>;
  const known = ['enable_kv_cache_events', 'publisher', 'endpoint', 'replay_endpoint', 'buffer_steps', 'hwm', 'topic'];
  for (const key of Object.keys(fields)) {
    if (key === 'max_queue_size') throw new UserError(`${flag}: max_queue_size is not supported (each step's events are handed to the socket as the step ends; there is no queue to size)`);
    if (!known.includes(key)) throw new UserError(`${flag}: unknown key ${key} (known: ${known.join(', ')})`);
  }
  const text = (key: string): string | undefined => {
    const value = fields[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') throw new UserError(`${flag}: ${key} must be a string`);
    return value;
  };
  const count = (key: string): number | undefined => {
    const value = fields[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw new UserError(`${flag}: ${key} must be a positive integer`);
    return value;
  };
  const enabled = fields.enable_kv_cache_events;
  if (enabled !== undefined && typeof enabled !== 'boolean') throw new UserError(`${flag}: enable_kv_cache_events must be true or false`);
  const publisher = text('publisher');
  if (publisher !== undefined && publisher !== 'zmq' && publisher !== 'null') throw new UserError(`${flag}: publisher ${publisher} is not supported (zmq or null)`);
  const replayEndpoint = text('replay_endpoint');
  const topic = text('topic');
  const bufferSteps = count('buffer_steps');
  const hwm = count('hwm');
  const endpoint = text('endpoint');
  if (enabled !== true || publisher === 'null') return { ...current, kvEventsEndpoint: undefined, kvEventsReplayEndpoint: undefined };
  return {
    kvEventsEndpoint: endpoint ?? 'tcp://*:5557',
    kvEventsTopic: topic,
    kvEventsReplayEndpoint: replayEndpoint,
    kvEventsBufferSteps: bufferSteps ?? current.kvEventsBufferSteps,
    kvEventsHwm: hwm,
  };
}
