import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { downloadFile, fileDownloadInfo, getRepoFolderName, HubApiError, modelInfo } from '@huggingface/hub';
import cliProgress from 'cli-progress';
import { UserError } from '../../errors.js';
import { selectFiles, snapshotHasModel } from './hub-files.js';
import type { HubModelId } from './hub-id.js';
import { hubSettings, type HubSettings } from './hub-settings.js';

const commitHash = /^[0-9a-f]{40}$/;
/** Attempts per file; each one resumes from the bytes already on disk. */
const attempts = 3;

export interface HubDownloadOptions {
  /** A branch, tag or commit hash (default main). */
  revision?: string;
  /** A line of progress for logs (one per file); a terminal also gets a progress bar. */
  log?: (line: string) => void;
  settings?: HubSettings;
}

/**
 * A Hugging Face model in the shared HF cache (models--org--name/{refs,snapshots,blobs}): the
 * snapshot folder (or GGUF file in it) for the revision. A cached snapshot holding the whole
 * model is used with no request; otherwise the needed files are fetched, resuming partial blobs.
 */
export async function resolveHubModel(id: HubModelId, options: HubDownloadOptions = {}): Promise<string> {
  const settings = options.settings ?? hubSettings();
  const revision = options.revision ?? 'main';
  const storage = join(settings.cacheDir, getRepoFolderName({ type: 'model', name: id.repo }));
  const result = (commit: string) => (id.file === null ? join(storage, 'snapshots', commit) : join(storage, 'snapshots', commit, id.file));
  const cached = cachedCommit(storage, revision);
  if (cached !== null && snapshotHasModel(join(storage, 'snapshots', cached), id.file)) return result(cached);
  if (settings.offline) {
    throw new UserError(
      `${id.repo}: revision ${revision} is not (completely) in the Hugging Face cache ${settings.cacheDir}, and HF_HUB_OFFLINE=1 forbids downloading it`,
    );
  }
  const base = { hubUrl: settings.endpoint, accessToken: settings.token };
  const where = `${id.repo} (revision ${revision})`;
  const info = await hubCall(where, settings, () =>
    modelInfo({ ...base, name: id.repo, revision, additionalFields: ['sha', 'filePaths'] }),
  );
  const commit = info.sha;
  if (typeof commit !== 'string' || !commitHash.test(commit)) throw new UserError(`${where}: the Hub gave no commit hash for the revision`);
  const files = selectFiles(id.repo, info.filePaths ?? [], id.file);
  if (revision !== commit) {
    mkdirSync(join(storage, 'refs'), { recursive: true });
    writeFileSync(join(storage, 'refs', revision), commit);
  }
  for (const file of files) {
    await hubCall(`${id.repo}/${file} (revision ${revision})`, settings, () => fetchFile(id.repo, file, commit, storage, base, options.log));
  }
  return result(commit);
}

function cachedCommit(storage: string, revision: string): string | null {
  if (commitHash.test(revision)) return revision;
  const ref = join(storage, 'refs', revision);
  if (!existsSync(ref)) return null;
  const commit = readFileSync(ref, 'utf8').trim();
  return commitHash.test(commit) ? commit : null;
}

/** One file into blobs/<etag>, linked from snapshots/<commit>/<file>; a partial blob resumes. */
async function fetchFile(
  repo: string,
  file: string,
  commit: string,
  storage: string,
  base: { hubUrl?: string; accessToken?: string },
  log?: (line: string) => void,
): Promise<void> {
  const pointer = join(storage, 'snapshots', commit, file);
  if (existsSync(pointer)) return;
  const params = { ...base, repo, path: file, revision: commit };
  const info = await fileDownloadInfo(params);
  if (!info) throw new UserError(`${repo}: file ${file} not found at commit ${commit}`);
  // As huggingface_hub names blobs: the ETag without quotes or a weak-validator prefix.
  const etag = info.etag.replace(/^W\//, '').replace(/"/g, '');
  const blob = join(storage, 'blobs', etag);
  mkdirSync(dirname(blob), { recursive: true });
  if (!existsSync(blob)) {
    const partial = `${blob}.incomplete`;
    for (let attempt = 1; ; attempt++) {
      const start = existsSync(partial) ? statSync(partial).size : 0;
      try {
        if (start < info.size) await download(params, info, partial, start, log);
        break;
      } catch (e) {
        if (attempt === attempts || e instanceof HubApiError) throw e;
        log?.(`${file}: download interrupted (${(e as Error).message}); resuming`);
      }
    }
    const size = statSync(partial).size;
    if (size !== info.size) {
      rmSync(partial);
      throw new UserError(`${repo}: ${file} arrived with ${size} bytes but the Hub announced ${info.size}`);
    }
    renameSync(partial, blob);
  }
  mkdirSync(dirname(pointer), { recursive: true });
  symlinkSync(relative(dirname(pointer), blob), pointer);
}

async function download(
  params: Parameters<typeof downloadFile>[0],
  info: NonNullable<Awaited<ReturnType<typeof fileDownloadInfo>>>,
  partial: string,
  start: number,
  log?: (line: string) => void,
): Promise<void> {
  const source = await downloadFile({ ...params, downloadInfo: info });
  if (!source) throw new UserError(`${params.repo}: file ${params.path} not found`);
  const body = start > 0 ? source.slice(start) : source;
  log?.(`downloading ${params.path} (${formatBytes(info.size)}${start > 0 ? `, resuming at ${formatBytes(start)}` : ''})`);
  const bar = process.stderr.isTTY ? progressBar(params.path, info.size, start) : null;
  // Each chunk is on disk before the next is read: after a cut, the file's size is exactly what arrived.
  const out = await open(partial, start > 0 ? 'a' : 'w');
  let done = start;
  try {
    for await (const chunk of Readable.fromWeb(body.stream() as WebReadableStream<Uint8Array>)) {
      await out.write(chunk);
      done += chunk.length;
      bar?.update(done);
    }
  } finally {
    bar?.stop();
    await out.close();
  }
}

function progressBar(file: string, total: number, start: number): cliProgress.SingleBar {
  const bar = new cliProgress.SingleBar(
    { format: `${file} {bar} {percentage}% | {value_mb}/{total_mb} MB | {eta_formatted}`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, start, { total_mb: (total / 1e6).toFixed(1) });
  const update = bar.update.bind(bar);
  bar.update = ((value: number) => update(value, { value_mb: (value / 1e6).toFixed(1) })) as typeof bar.update;
  return bar;
}

function formatBytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`;
}

/** Runs a Hub call, turning its failures into one line: gated, missing, unreachable. */
async function hubCall<T>(what: string, settings: HubSettings, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (e instanceof UserError) throw e;
    if (e instanceof HubApiError) {
      const detail = e.message.split('. URL:')[0];
      if (e.statusCode === 401 || e.statusCode === 403) {
        const token = settings.token === undefined ? 'set HF_TOKEN to a token that has access' : 'the token in HF_TOKEN has no access to it';
        throw new UserError(`${what}: the repository is gated or private (HTTP ${e.statusCode}: ${detail}); accept its terms on the Hub and ${token}`);
      }
      if (e.statusCode === 404) throw new UserError(`${what}: not found on the Hub (HTTP 404: ${detail})`);
      throw new UserError(`${what}: the Hub answered HTTP ${e.statusCode} (${detail})`);
    }
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const reason = cause?.code ?? cause?.message ?? (e as Error).message;
    throw new UserError(`${what}: cannot reach the Hugging Face Hub${settings.endpoint ? ` at ${settings.endpoint}` : ''} (${reason}); HF_HUB_OFFLINE=1 uses the cache only`);
  }
}
