import { describe, expect, it } from 'vitest';
import { kvEventsFlagsFromConfig } from '../../src/cli/kv-events-config.js';

const defaults = { kvEventsBufferSteps: 10_000 };

describe("--kv-events-config: vLLM's KVEventsConfig JSON as the --kv-events-* flags", () => {
  it('maps an llm-d style config onto the flags', () => {
    const config = JSON.stringify({ enable_kv_cache_events: true, publisher: 'zmq', endpoint: 'tcp://gateway:5557', topic: 'kv@10.0.0.7@llama', replay_endpoint: 'tcp://*:5558', buffer_steps: 500, hwm: 2000 });
    expect(kvEventsFlagsFromConfig(config, defaults)).toEqual({
      kvEventsEndpoint: 'tcp://gateway:5557',
      kvEventsTopic: 'kv@10.0.0.7@llama',
      kvEventsReplayEndpoint: 'tcp://*:5558',
      kvEventsBufferSteps: 500,
      kvEventsHwm: 2000,
    });
  });

  it("takes vLLM's defaults for what is left out: endpoint tcp://*:5557, publisher zmq, the flags' buffer steps", () => {
    const flags = kvEventsFlagsFromConfig('{"enable_kv_cache_events": true}', defaults);
    expect(flags.kvEventsEndpoint).toBe('tcp://*:5557');
    expect(flags.kvEventsBufferSteps).toBe(10_000);
    expect(flags.kvEventsTopic).toBeUndefined();
  });

  it('is off unless enable_kv_cache_events is true and the publisher is not null', () => {
    expect(kvEventsFlagsFromConfig('{"publisher": "zmq", "endpoint": "tcp://*:1"}', defaults).kvEventsEndpoint).toBeUndefined();
    expect(kvEventsFlagsFromConfig('{"enable_kv_cache_events": true, "publisher": "null"}', defaults).kvEventsEndpoint).toBeUndefined();
  });

  it('refuses by name what it cannot honour, and values of the wrong type', () => {
    const refused = (json: string) => () => kvEventsFlagsFromConfig(json, defaults);
    expect(refused('{"enable_kv_cache_events": true, "max_queue_size": 10}')).toThrow(/max_queue_size is not supported/);
    expect(refused('{"enable_kv_cache_events": true, "publisher": "nats"}')).toThrow(/publisher nats is not supported/);
    expect(refused('{"enable_kv_cache_events": true, "endpoint_typo": "x"}')).toThrow(/unknown key endpoint_typo/);
    expect(refused('{"enable_kv_cache_events": "yes"}')).toThrow(/enable_kv_cache_events must be true or false/);
    expect(refused('{"enable_kv_cache_events": true, "hwm": -1}')).toThrow(/hwm must be a positive integer/);
    expect(refused('[1]')).toThrow(/give a JSON object/);
    expect(refused('{enable')).toThrow(/not JSON/);
  });
});
