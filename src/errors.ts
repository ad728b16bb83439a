/**
 * A mistake a user can fix (a bad flag, a missing file, a malformed checkpoint). The CLI prints
 * its message on one line without a stack trace and exits non-zero.
 */
export class UserError extends Error {
  override name = 'UserError';
}

/** A backend that cannot run on this machine (no adapter, no device, missing library). */
export class BackendUnavailableError extends UserError {
  override name = 'BackendUnavailableError';
}
