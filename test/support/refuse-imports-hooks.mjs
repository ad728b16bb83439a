// Module resolve hook of refuse-imports.mjs (runs on Node's loader thread).
const refused = (process.env.SLUICE_REFUSE_IMPORTS ?? '').split(',').filter((name) => name !== '');

export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  const hit = refused.find((name) => resolved.url.includes(`/node_modules/${name}/`));
  if (hit !== undefined) throw new Error(`refused import of ${hit} (${resolved.url})`);
  return resolved;
}
