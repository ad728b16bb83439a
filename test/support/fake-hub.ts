import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';

/** One revision of a fake repo: its commit hash and files (path -> bytes). */
export interface FakeRevision {
  commit: string;
  files: Map<string, Buffer>;
}

export interface FakeRepo {
  /** Branch and tag names, and commit hashes, to revisions. */
  revisions: Map<string, FakeRevision>;
  /** Requests without `Authorization: Bearer <token>` get 401 on file downloads. */
  gatedToken?: string;
}

export interface HubRequest {
  method: string;
  url: string;
  range: string | undefined;
}

/** Files at least this big are served as the Hub serves LFS files: a redirect to content-addressed storage. */
const lfsThreshold = 1024;

/**
 * A stand-in for the Hugging Face Hub on 127.0.0.1, answering what @huggingface/hub asks: the
 * model info API (commit hash and file list of a revision) and the resolve endpoint (ETag,
 * ranges, 302 redirects to a blob store for large files, 401 for a gated repo without the
 * token). `cut` makes the next downloads of a file stop after some bytes and drop the connection.
 */
export class FakeHub {
  readonly requests: HubRequest[] = [];
  private readonly repos = new Map<string, FakeRepo>();
  private readonly blobs = new Map<string, Buffer>();
  private readonly cuts = new Map<string, { bytes: number; times: number }>();
  private server: Server | null = null;
  url = '';

  addRepo(name: string, repo: FakeRepo): void {
    this.repos.set(name, repo);
    for (const rev of repo.revisions.values()) {
      for (const bytes of rev.files.values()) this.blobs.set(sha256(bytes), bytes);
    }
  }

  /** The next `times` full or ranged downloads of `path` send `bytes` bytes and then cut the connection. */
  cut(path: string, bytes: number, times = 1): void {
    this.cuts.set(path, { bytes, times });
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    // Longer than a slow test takes between requests: an idle keep-alive socket closed by the
    // server while the client reuses it would read as a network failure.
    this.server.keepAliveTimeout = 120_000;
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url!, 'http://localhost');
    this.requests.push({ method: req.method!, url: url.pathname, range: req.headers.range });
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    if (api) return this.modelInfo(res, decodeURIComponent(api[1]!), decodeURIComponent(api[2]!));
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (resolve) return this.resolve(req, res, resolve[1]!, decodeURIComponent(resolve[2]!), decodeURIComponent(resolve[3]!));
    const blob = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (blob && this.blobs.has(blob[1]!)) {
      const bytes = this.blobs.get(blob[1]!)!;
      return this.send(req, res, bytes, `"${blob[1]}"`, this.pathOfBlob(blob[1]!));
    }
    json(res, 404, { error: 'Not Found' });
  }

  private revision(res: ServerResponse, name: string, revision: string): FakeRevision | null {
    const repo = this.repos.get(name);
    if (!repo) {
      res.setHeader('X-Error-Code', 'RepoNotFound');
      json(res, 404, { error: 'Repository not found' });
      return null;
    }
    const rev = repo.revisions.get(revision) ?? (revision === 'HEAD' ? repo.revisions.get('main') : undefined);
    if (!rev) {
      res.setHeader('X-Error-Code', 'RevisionNotFound');
      json(res, 404, { error: `Invalid rev id: ${revision}` });
      return null;
    }
    return rev;
  }

  private modelInfo(res: ServerResponse, name: string, revision: string): void {
    const rev = this.revision(res, name, revision);
    if (!rev) return;
    json(res, 200, {
      _id: createHash('md5').update(name).digest('hex').slice(0, 24),
      id: name,
      private: false,
      gated: this.repos.get(name)!.gatedToken ? 'manual' : false,
      downloads: 0,
      likes: 0,
      lastModified: '2026-01-01T00:00:00.000Z',
      sha: rev.commit,
      siblings: [...rev.files.keys()].map((rfilename) => ({ rfilename })),
    });
  }

  private resolve(req: IncomingMessage, res: ServerResponse, name: string, revision: string, path: string): void {
    const repo = this.repos.get(name);
    const token = repo?.gatedToken;
    if (token !== undefined && req.headers.authorization !== `Bearer ${token}`) {
      res.setHeader('X-Error-Code', 'GatedRepo');
      return json(res, 401, { error: `Access to model ${name} is restricted. You must have access to it and be authenticated to access it. Please log in.` });
    }
    const rev = this.revision(res, name, revision);
    if (!rev) return;
    const bytes = rev.files.get(path);
    if (!bytes) {
      res.setHeader('X-Error-Code', 'EntryNotFound');
      return json(res, 404, { error: 'Entry not found' });
    }
    res.setHeader('X-Repo-Commit', rev.commit);
    if (bytes.length >= lfsThreshold) {
      const oid = sha256(bytes);
      res.writeHead(302, { Location: `/cdn/${oid}`, 'X-Linked-ETag': `"${oid}"`, 'X-Linked-Size': String(bytes.length), ETag: `"${gitOid(bytes)}"` });
      return void res.end();
    }
    this.send(req, res, bytes, `"${gitOid(bytes)}"`, path);
  }

  private send(req: IncomingMessage, res: ServerResponse, bytes: Buffer, etag: string, path: string | null): void {
    let start = 0;
    let end = bytes.length - 1;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(end, Number(range[2])) : end;
    }
    const body = bytes.subarray(start, end + 1);
    const headers = { ETag: etag, 'Content-Length': String(body.length), 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
    res.writeHead(range ? 206 : 200, range ? { ...headers, 'Content-Range': `bytes ${start}-${end}/${bytes.length}` } : headers);
    const cut = path === null ? undefined : this.cuts.get(path);
    // Range 0-0 is the size probe, not a download.
    if (cut && cut.times > 0 && body.length > cut.bytes) {
      cut.times--;
      res.write(body.subarray(0, cut.bytes), () => res.destroy());
      return;
    }
    res.end(body);
  }

  private pathOfBlob(oid: string): string | null {
    for (const repo of this.repos.values()) {
      for (const rev of repo.revisions.values()) {
        for (const [path, bytes] of rev.files) if (sha256(bytes) === oid) return path;
      }
    }
    return null;
  }
}

/** Every file under a folder, by its path relative to it. */
export function folderFiles(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.set(relative(dir, full), readFileSync(full));
    }
  };
  walk(dir);
  return out;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(text)) });
  res.end(text);
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A git blob id, as the Hub gives small (non-LFS) files for their ETag. */
function gitOid(bytes: Buffer): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}
