import type { BackendDescriptor } from '../../src/engine/backend.js';
import { RefBackend } from './ref-backend.js';

export const refBackend = {
  name: 'ref',
  summary: 'plain TypeScript, f32, one thread: the reference the others are tested against',
  create: async () => new RefBackend(),
} as const satisfies BackendDescriptor<'ref'>;
