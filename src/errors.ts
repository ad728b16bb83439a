/**
 * A mistake a user can fix (a bad flag, a missing file, a malformed checkpoint). The CLI prints
 * its message on one line without a stack trace and exits non-zero.
 */
export class UserError extends Error {
  override name = 'UserError';
}

/**
 * A setting with a bad value, named as the code names it (`memFractionStatic`, `pageSize`): lower
 * layers do not know the command-line flags. `describe` writes the message with a given naming
 * of options; the CLI passes its flag names, everyone else sees the option names.
 */
export class OptionError extends UserError {
  override name = 'OptionError';
  constructor(
    readonly option: string,
    private readonly describe: (nameOf: (option: string) => string) => string,
  ) {
    super(describe((o) => o));
  }

  /** The message with each option named by `nameOf` (e.g. memFractionStatic -> --mem-fraction-static). */
  messageNaming(nameOf: (option: string) => string): string {
    return this.describe(nameOf);
  }
}

/** A backend that cannot run on this machine (no adapter, no device, missing library). */
export class BackendUnavailableError extends UserError {
  override name = 'BackendUnavailableError';
  constructor(
    readonly backend: string,
    reason: string,
  ) {
    super(`${backend}: unavailable here: ${reason}`);
  }
}

/** A backend failed, or was driven out of order (a bug, not a user's mistake); the message starts with its name. */
export class BackendError extends Error {
  override name = 'BackendError';
  constructor(
    readonly backend: string,
    message: string,
  ) {
    super(`${backend}: ${message}`);
  }
}
