/**
 * Schema rewrites made before xgrammar compiles a JSON schema, for what its converter (0.1.27,
 * the WASM build) gets wrong. Integer ranges: it turns minimum/maximum into digit patterns that
 * overshoot whenever the bound's last digit is not 9 (maximum 120 admits 121..129), so a bounded
 * integer range of at most `enumLimit` values is sent as the enum of its values instead.
 */
const enumLimit = 1024;

type Json = unknown;
type JsonObject = Record<string, Json>;

export function fixSchema(schema: Json): Json {
  if (Array.isArray(schema)) return schema.map(fixSchema);
  if (schema === null || typeof schema !== 'object') return schema;
  const node: JsonObject = {};
  for (const [key, value] of Object.entries(schema as JsonObject)) {
    // Keys whose values are data, not schemas.
    node[key] = key === 'enum' || key === 'const' || key === 'default' || key === 'examples' || key === 'required' ? value : fixSchema(value);
  }
  return integerRangeAsEnum(node);
}

function integerRangeAsEnum(node: JsonObject): JsonObject {
  const types = Array.isArray(node.type) ? (node.type as Json[]) : [node.type];
  if (!types.includes('integer') || 'enum' in node || 'const' in node) return node;
  const values = rangeValues(node);
  if (values === null) return node;
  const { type: _, minimum: _min, maximum: _max, exclusiveMinimum: _emin, exclusiveMaximum: _emax, multipleOf: _m, ...rest } = node;
  const others = types.filter((t) => t !== 'integer');
  if (others.length === 0) return { ...rest, enum: values };
  return { ...rest, anyOf: [{ enum: values }, { type: others.length === 1 ? others[0] : others }] };
}

function rangeValues(node: JsonObject): number[] | null {
  const num = (v: Json) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  let low = num(node.minimum);
  let high = num(node.maximum);
  const exclusiveLow = num(node.exclusiveMinimum);
  const exclusiveHigh = num(node.exclusiveMaximum);
  if (exclusiveLow !== null) low = Math.max(low ?? -Infinity, Math.floor(exclusiveLow) + 1);
  if (exclusiveHigh !== null) high = Math.min(high ?? Infinity, Math.ceil(exclusiveHigh) - 1);
  if (low === null || high === null) return null;
  low = Math.ceil(low);
  high = Math.floor(high);
  if (high < low || high - low + 1 > enumLimit) return null;
  const step = num(node.multipleOf);
  const values: number[] = [];
  for (let v = low; v <= high; v++) if (step === null || step <= 0 || Number.isInteger(v / step)) values.push(v);
  return values.length > 0 ? values : null;
}
