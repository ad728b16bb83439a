import { TypeBoxValidatorCompiler, type TSchema } from '@fastify/type-provider-typebox';
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify';

/**
 * TypeBox validation (no type coercion of bodies: "5" is not an integer) whose issues also carry
 * the `description` of the schema that failed, so a union like `prompt` can be reported as
 * "must be a string, a list of strings, ..." instead of the first branch's complaint.
 */
export const validatorCompiler: FastifySchemaCompiler<TSchema> = (route) => {
  const validate = TypeBoxValidatorCompiler(route) as (value: unknown) => { value?: unknown; error?: FastifySchemaValidationError[] };
  return (value: unknown) => {
    const result = validate(value);
    if (result.error) {
      for (const issue of result.error) {
        const description = schemaAt(route.schema, issue.schemaPath)?.description;
        if (typeof description === 'string') issue.params = { ...issue.params, description };
      }
    }
    return result;
  };
};

function schemaAt(root: unknown, pointer: string): Record<string, unknown> | undefined {
  let node = root as Record<string, unknown> | undefined;
  for (const part of pointer.replace(/^#\/?/, '').split('/').filter(Boolean)) {
    node = node?.[part.replaceAll('~1', '/').replaceAll('~0', '~')] as Record<string, unknown> | undefined;
  }
  return node;
}
