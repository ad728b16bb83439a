// With `node --import ./test/support/refuse-imports.mjs`: an import that resolves into one of the
// packages named in SLUICE_REFUSE_IMPORTS (comma-separated) fails, naming the package. Tests use
// it to show that a code path never loads a package.
import { register } from 'node:module';

register(new URL('./refuse-imports-hooks.mjs', import.meta.url));
