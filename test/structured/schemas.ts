/**
 * JSON schemas for structured-output tests: nested objects, bounded arrays, enums, numbers with
 * ranges, string patterns and lengths, optional fields, anyOf. Free text is bounded (maxLength,
 * maxItems, ranges) so that a random-weights model, which never chooses to stop, still finishes.
 */
export const schemaSuite: Record<string, object> = {
  flat: { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, age: { type: 'integer', minimum: 0, maximum: 120 } }, required: ['name', 'age'] },
  boolean: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] },
  enumString: { type: 'object', properties: { color: { enum: ['red', 'green', 'blue'] } }, required: ['color'] },
  enumMixed: { type: 'object', properties: { v: { enum: [1, 'two', null, true] } }, required: ['v'] },
  constValue: { type: 'object', properties: { kind: { const: 'point' }, x: { type: 'integer', minimum: -5, maximum: 5 } }, required: ['kind', 'x'] },
  integerRange: { type: 'object', properties: { n: { type: 'integer', minimum: 10, maximum: 99 } }, required: ['n'] },
  negativeRange: { type: 'object', properties: { t: { type: 'integer', minimum: -40, maximum: -1 } }, required: ['t'] },
  numberRange: { type: 'object', properties: { p: { type: 'number', minimum: 0, maximum: 1 } }, required: ['p'] },
  stringLength: { type: 'object', properties: { code: { type: 'string', minLength: 3, maxLength: 3 } }, required: ['code'] },
  stringPattern: { type: 'object', properties: { id: { type: 'string', pattern: '^[A-Z]{2}-[0-9]{3}$' } }, required: ['id'] },
  lowerWord: { type: 'object', properties: { w: { type: 'string', pattern: '^[a-z]{1,6}$' } }, required: ['w'] },
  dateFormat: { type: 'object', properties: { day: { type: 'string', pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' } }, required: ['day'] },
  arrayBounds: { type: 'object', properties: { xs: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 9 }, minItems: 1, maxItems: 4 } }, required: ['xs'] },
  arrayExact: { type: 'object', properties: { rgb: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 255 }, minItems: 3, maxItems: 3 } }, required: ['rgb'] },
  arrayOfEnums: { type: 'object', properties: { tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, maxItems: 3 } }, required: ['tags'] },
  arrayOfObjects: {
    type: 'object',
    properties: { people: { type: 'array', maxItems: 2, items: { type: 'object', properties: { n: { type: 'string', maxLength: 4 }, k: { type: 'boolean' } }, required: ['n', 'k'] } } },
    required: ['people'],
  },
  nested: {
    type: 'object',
    properties: { user: { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: 999 }, profile: { type: 'object', properties: { nick: { type: 'string', maxLength: 5 } }, required: ['nick'] } }, required: ['id', 'profile'] } },
    required: ['user'],
  },
  deepNested: {
    type: 'object',
    properties: { a: { type: 'object', properties: { b: { type: 'object', properties: { c: { type: 'object', properties: { d: { type: 'boolean' } }, required: ['d'] } }, required: ['c'] } }, required: ['b'] } },
    required: ['a'],
  },
  optionalFields: { type: 'object', properties: { req: { type: 'integer', minimum: 0, maximum: 9 }, opt: { type: 'boolean' }, opt2: { enum: ['x', 'y'] } }, required: ['req'] },
  allOptional: { type: 'object', properties: { a: { type: 'boolean' }, b: { type: 'null' } } },
  anyOfTypes: { type: 'object', properties: { v: { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, { type: 'string', maxLength: 3 }, { type: 'null' }] } }, required: ['v'] },
  anyOfObjects: {
    type: 'object',
    properties: {
      shape: {
        anyOf: [
          { type: 'object', properties: { circle: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['circle'] },
          { type: 'object', properties: { square: { type: 'boolean' } }, required: ['square'] },
        ],
      },
    },
    required: ['shape'],
  },
  nullable: { type: 'object', properties: { maybe: { type: ['integer', 'null'], minimum: 0, maximum: 5 } }, required: ['maybe'] },
  topLevelArray: { type: 'array', items: { type: 'boolean' }, minItems: 1, maxItems: 3 },
  topLevelEnum: { enum: ['alpha', 'beta', 'gamma'] },
  topLevelInteger: { type: 'integer', minimum: 100, maximum: 200 },
  topLevelString: { type: 'string', pattern: '^[a-c]{2,4}$' },
  refs: {
    type: 'object',
    $defs: { point: { type: 'object', properties: { x: { type: 'integer', minimum: 0, maximum: 9 }, y: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['x', 'y'] } },
    properties: { from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } },
    required: ['from', 'to'],
  },
  noExtraProperties: { type: 'object', properties: { only: { type: 'boolean' } }, required: ['only'], additionalProperties: false },
  manyFields: {
    type: 'object',
    properties: Object.fromEntries(['a', 'b', 'c', 'd', 'e', 'f'].map((k) => [k, { type: 'integer', minimum: 0, maximum: 9 }])),
    required: ['a', 'b', 'c', 'd', 'e', 'f'],
  },
  unicodeEnum: { type: 'object', properties: { city: { enum: ['Zürich', 'Kraków', '東京'] } }, required: ['city'] },
  spacedKeys: { type: 'object', properties: { 'first name': { type: 'string', maxLength: 4 }, ключ: { type: 'boolean' } }, required: ['first name', 'ключ'] },
  order: {
    type: 'object',
    properties: {
      id: { type: 'string', pattern: '^ORD[0-9]{4}$' },
      items: { type: 'array', minItems: 1, maxItems: 2, items: { type: 'object', properties: { sku: { enum: ['A1', 'B2'] }, qty: { type: 'integer', minimum: 1, maximum: 5 } }, required: ['sku', 'qty'] } },
      paid: { type: 'boolean' },
    },
    required: ['id', 'items', 'paid'],
  },
};
