import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where and how the Hugging Face Hub is reached, from the environment variables every HF tool reads. */
export interface HubSettings {
  /** HF_ENDPOINT; undefined: the library's default Hub. */
  endpoint: string | undefined;
  /** HF_TOKEN, else the token `huggingface-cli login` saved under HF_HOME. */
  token: string | undefined;
  /** HF_HUB_OFFLINE=1: only the cache is used. */
  offline: boolean;
  /** HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir: string;
}

export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  return {
    endpoint: env.HF_ENDPOINT?.replace(/\/+$/, '') || undefined,
    token: env.HF_TOKEN || savedToken(env),
    offline: ['1', 'ON', 'YES', 'TRUE'].includes((env.HF_HUB_OFFLINE ?? '').toUpperCase()),
    cacheDir: env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || join(hfHome(env), 'hub'),
  };
}

/**
 * huggingface_hub's HF_HOME: the variable, else XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
 * (@huggingface/hub's getHFHubCachePath applies the same rules, but to process.env only.)
 */
function hfHome(env: NodeJS.ProcessEnv): string {
  return env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
}

function savedToken(env: NodeJS.ProcessEnv): string | undefined {
  const file = join(hfHome(env), 'token');
  return existsSync(file) ? readFileSync(file, 'utf8').trim() || undefined : undefined;
}
