import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UserError } from '../../src/errors.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { resolveHubModel } from '../../src/model/hub/hub-download.js';
import { parseHubModelId } from '../../src/model/hub/hub-id.js';
import { hubSettings, type HubSettings } from '../../src/model/hub/hub-settings.js';
import { openModel } from '../../src/model/load.js';
import { FakeHub, folderFiles, type FakeRevision } from '../support/fake-hub.js';
import { tinyVariant } from '../support/reference-runs.js';
import { writeSafetensorsCheckpoint } from '../support/safetensors-writer.js';
import { writeGguf } from '../support/gguf-writer.js';
import { Tokenizer } from '../../src/model/tokenizer.js';

const mainCommit = 'a'.repeat(40);
const tagCommit = 'b'.repeat(40);
const gatedToken = 'hf_test_token';
const hub = new FakeHub();
let root: string;
let main: FakeRevision;

/** A fresh, empty HF cache for each test, against the fake hub. */
let settings: HubSettings;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'sluice-hub-'));
  const config = tinyVariant({ dtype: 'bf16', tieWordEmbeddings: false });
  const checkpoint = join(root, 'checkpoint');
  // Two shards: the embedding table in one, everything else in the other.
  const shards = await writeSafetensorsCheckpoint(checkpoint, { config, weights: new DummyWeights(config, 1, 'bf16') }, { dtype: 'bf16', maxShardBytes: 4 << 20 });
  expect(shards.length).toBeGreaterThanOrEqual(2);
  writeFileSync(join(checkpoint, 'generation_config.json'), JSON.stringify({ temperature: 0.6, top_p: 0.9, eos_token_id: [128001, 128009] }));
  const files = folderFiles(checkpoint);
  // What sluice must not download.
  files.set('pytorch_model.bin', Buffer.alloc(4096, 1));
  files.set('original/consolidated.00.pth', Buffer.alloc(4096, 2));
  files.set('README.md', Buffer.from('# tiny\n'));
  main = { commit: mainCommit, files };
  const tagged = new Map(files);
  tagged.set('config.json', Buffer.from(JSON.stringify({ ...JSON.parse(files.get('config.json')!.toString()), max_position_embeddings: 1024 })));
  hub.addRepo('sluice-test/tiny', {
    revisions: new Map([
      ['main', main],
      [mainCommit, main],
      ['v1', { commit: tagCommit, files: tagged }],
      [tagCommit, { commit: tagCommit, files: tagged }],
    ]),
  });
  const ggufFile = join(root, 'tiny-f16.gguf');
  await writeGguf(ggufFile, { config, tokenizer: Tokenizer.llama3(), weights: new DummyWeights(config, 1, 'bf16') }, { dtype: 'f16' });
  const ggufRevision = { commit: 'c'.repeat(40), files: new Map([['tiny-f16.gguf', readFileSync(ggufFile)], ['README.md', Buffer.from('# gguf\n')]]) };
  hub.addRepo('sluice-test/tiny-GGUF', { revisions: new Map([['main', ggufRevision], [ggufRevision.commit, ggufRevision]]) });
  hub.addRepo('sluice-test/gated', { revisions: new Map([['main', main], [mainCommit, main]]), gatedToken });
  await hub.start();
});

afterAll(async () => {
  await hub.stop();
  rmSync(root, { recursive: true, force: true });
});

beforeEach(() => {
  settings = { endpoint: hub.url, token: undefined, offline: false, cacheDir: mkdtempSync(join(root, 'cache-')) };
  hub.requests.length = 0;
});

const id = (s: string) => parseHubModelId(s)!;

describe('Hugging Face model ids through the HF cache', () => {
  it('reads org/name as a hub id and local paths as paths', () => {
    expect(parseHubModelId('meta-llama/Llama-3.1-8B-Instruct')).toEqual({ repo: 'meta-llama/Llama-3.1-8B-Instruct', file: null });
    expect(parseHubModelId('org/name/model-Q4_K_M.gguf')).toEqual({ repo: 'org/name', file: 'model-Q4_K_M.gguf' });
    expect(parseHubModelId('./org/name')).toBeNull();
    expect(parseHubModelId('/abs/path')).toBeNull();
    expect(parseHubModelId('tiny')).toBeNull();
    expect(parseHubModelId('a/b/c')).toBeNull();
  });

  it('downloads only the needed files into the standard layout, resuming a cut connection, and loads the model', async () => {
    const shard = [...main.files.keys()].find((f) => f.endsWith('.safetensors'))!;
    hub.cut(shard, 100_000);
    const lines: string[] = [];
    const model = await openModel({ modelPath: 'sluice-test/tiny', hub: settings, log: (l) => lines.push(l) });
    expect(model.name).toBe('sluice-test/tiny');
    expect(model.config.hiddenSize).toBe(64);
    expect(model.config.maxPositionEmbeddings).toBe(4096);

    const storage = join(settings.cacheDir, 'models--sluice-test--tiny');
    expect(readFileSync(join(storage, 'refs', 'main'), 'utf8')).toBe(mainCommit);
    const snapshot = join(storage, 'snapshots', mainCommit);
    for (const [file, bytes] of main.files) {
      const wanted = !file.includes('/') && !file.endsWith('.bin') && file !== 'README.md';
      expect(existsSync(join(snapshot, file)), file).toBe(wanted);
      if (!wanted) continue;
      expect(lstatSync(join(snapshot, file)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(snapshot, file))).toMatch(/^\.\.\/\.\.\/blobs\/[0-9a-f]{40,64}$/);
      expect(readFileSync(join(snapshot, file)).equals(bytes), file).toBe(true);
    }
    const paths = hub.requests.map((r) => r.url);
    expect(paths.some((p) => p.includes('.bin') || p.includes('original/') || p.includes('README'))).toBe(false);
    // The cut shard was fetched again from where the bytes on disk ended.
    const resumed = hub.requests.filter((r) => r.url.startsWith('/cdn/') && /^bytes=[1-9]\d*-\d+$/.test(r.range ?? ''));
    expect(resumed).toHaveLength(1);
    expect(Number(/=(\d+)-/.exec(resumed[0]!.range!)![1])).toBeLessThanOrEqual(100_000);
    expect(lines.some((l) => l.includes(`${shard}: download interrupted`))).toBe(true);
    expect(lines.some((l) => l.includes('resuming at'))).toBe(true);
    await model.weights.close();

    // A second start uses the cache and makes no request at all.
    hub.requests.length = 0;
    const again = await openModel({ modelPath: 'sluice-test/tiny', hub: settings });
    expect(again.config.hiddenSize).toBe(64);
    expect(hub.requests).toEqual([]);
    // HF_HUB_OFFLINE=1 with the model cached: the same.
    expect(await resolveHubModel(id('sluice-test/tiny'), { settings: { ...settings, offline: true } })).toBe(snapshot);
    expect(hub.requests).toEqual([]);
  });

  it('resumes a partial blob left by an earlier start that failed', async () => {
    const shard = [...main.files.keys()].find((f) => f.endsWith('.safetensors'))!;
    hub.cut(shard, 50_000, 3);
    await expect(resolveHubModel(id('sluice-test/tiny'), { settings })).rejects.toThrow(UserError);
    hub.requests.length = 0;
    const snapshot = await resolveHubModel(id('sluice-test/tiny'), { settings });
    expect(readFileSync(join(snapshot, shard)).equals(main.files.get(shard)!)).toBe(true);
    // The next start asked only for the bytes after those on disk.
    const downloads = hub.requests.filter((r) => r.url.startsWith('/cdn/') && r.range !== 'bytes=0-0' && r.range !== undefined);
    expect(downloads.map((r) => r.range)).toEqual([expect.stringMatching(/^bytes=[1-9]\d*-\d+$/)]);
  });

  it('HF_HUB_OFFLINE=1 with nothing cached fails in one line, with no request', async () => {
    const error = await resolveHubModel(id('sluice-test/tiny'), { settings: { ...settings, offline: true } }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toMatch(/^sluice-test\/tiny: revision main is not \(completely\) in the Hugging Face cache .* HF_HUB_OFFLINE=1/);
    expect(hub.requests).toEqual([]);
  });

  it('pins a revision: a tag and a commit hash give that commit; a cached commit needs no request', async () => {
    const tagged = await openModel({ modelPath: 'sluice-test/tiny', revision: 'v1', hub: settings });
    expect(tagged.config.maxPositionEmbeddings).toBe(1024);
    const storage = join(settings.cacheDir, 'models--sluice-test--tiny');
    expect(readFileSync(join(storage, 'refs', 'v1'), 'utf8')).toBe(tagCommit);
    hub.requests.length = 0;
    const byCommit = await resolveHubModel(id('sluice-test/tiny'), { revision: tagCommit, settings });
    expect(byCommit).toBe(join(storage, 'snapshots', tagCommit));
    expect(hub.requests).toEqual([]);
    const head = await openModel({ modelPath: 'sluice-test/tiny', revision: 'main', hub: settings });
    expect(head.config.maxPositionEmbeddings).toBe(4096);
    // Blobs are shared between the two snapshots: only config.json differs.
    expect(hub.requests.filter((r) => r.url.startsWith('/cdn/') && r.range !== 'bytes=0-0')).toEqual([]);
  });

  it('a gated repo: one line saying so without a token, a download with it', async () => {
    const error = await resolveHubModel(id('sluice-test/gated'), { settings }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toMatch(/^sluice-test\/gated\/config.json \(revision main\): the repository is gated or private \(HTTP 401: Access to model sluice-test\/gated is restricted.*set HF_TOKEN/);
    expect((error as Error).message).not.toContain('\n');
    const snapshot = await resolveHubModel(id('sluice-test/gated'), { settings: { ...settings, token: gatedToken } });
    expect(existsSync(join(snapshot, 'config.json'))).toBe(true);
  });

  it('a missing repo, a missing revision and an unreachable hub fail in one line', async () => {
    await expect(resolveHubModel(id('sluice-test/nope'), { settings })).rejects.toThrow(/^sluice-test\/nope \(revision main\): not found on the Hub \(HTTP 404/);
    await expect(resolveHubModel(id('sluice-test/tiny'), { revision: 'v9', settings })).rejects.toThrow(/^sluice-test\/tiny \(revision v9\): not found on the Hub/);
    const closed = new FakeHub();
    const url = await closed.start();
    await closed.stop();
    await expect(resolveHubModel(id('sluice-test/tiny'), { settings: { ...settings, endpoint: url } })).rejects.toThrow(
      new RegExp(`^sluice-test/tiny \\(revision main\\): cannot reach the Hugging Face Hub at ${url} \\(ECONNREFUSED\\)`),
    );
  });

  it('a repo of GGUF files: its one GGUF model, or the file named as org/name/FILE.gguf', async () => {
    const model = await openModel({ modelPath: 'sluice-test/tiny-GGUF', hub: settings });
    expect(model.name).toBe('sluice-test/tiny-GGUF');
    expect(model.path).toBe(join(settings.cacheDir, 'models--sluice-test--tiny-GGUF', 'snapshots', 'c'.repeat(40), 'tiny-f16.gguf'));
    expect(model.config.dtype).toBe('f16');
    await model.weights.close();
    hub.requests.length = 0;
    const named = await openModel({ modelPath: 'sluice-test/tiny-GGUF/tiny-f16.gguf', hub: settings });
    expect(named.path).toBe(model.path);
    expect(hub.requests).toEqual([]);
    await named.weights.close();
    await expect(openModel({ modelPath: 'sluice-test/tiny-GGUF/other.gguf', hub: { ...settings, cacheDir: mkdtempSync(join(root, 'cache-')) } })).rejects.toThrow(
      'sluice-test/tiny-GGUF: the repository has no file other.gguf',
    );
  });

  it('--revision with a local path is refused', async () => {
    await expect(openModel({ modelPath: 'tiny', revision: 'main' })).rejects.toThrow(/revision applies to Hugging Face model ids/);
  });
});

describe('the HF_* environment, read as huggingface_hub reads it', () => {
  it('HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub; HF_TOKEN, else the token saved under HF_HOME; HF_HUB_OFFLINE; HF_ENDPOINT', () => {
    const home = mkdtempSync(join(tmpdir(), 'sluice-hf-home-'));
    try {
      expect(hubSettings({ HOME: home, XDG_CACHE_HOME: join(home, 'xdg') }).cacheDir).toBe(join(home, 'xdg', 'huggingface', 'hub'));
      expect(hubSettings({ HF_HOME: join(home, 'hf') }).cacheDir).toBe(join(home, 'hf', 'hub'));
      expect(hubSettings({ HF_HOME: join(home, 'hf'), HF_HUB_CACHE: join(home, 'cache') }).cacheDir).toBe(join(home, 'cache'));
      expect(hubSettings({ HF_HOME: join(home, 'hf') }).token).toBeUndefined();
      mkdirSync(join(home, 'hf'));
      writeFileSync(join(home, 'hf', 'token'), 'hf_saved\n');
      expect(hubSettings({ HF_HOME: join(home, 'hf') }).token).toBe('hf_saved');
      expect(hubSettings({ HF_HOME: join(home, 'hf'), HF_TOKEN: 'hf_env' }).token).toBe('hf_env');
      expect(hubSettings({ HF_HUB_OFFLINE: '1' }).offline).toBe(true);
      expect(hubSettings({ HF_HUB_OFFLINE: '0' }).offline).toBe(false);
      expect(hubSettings({ HF_ENDPOINT: 'http://127.0.0.1:9/' }).endpoint).toBe('http://127.0.0.1:9');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
