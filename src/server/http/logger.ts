export type LogLevel = 'debug' | 'info' | 'warning' | 'error' | 'critical';

export const logLevels: LogLevel[] = ['debug', 'info', 'warning', 'error', 'critical'];

/** `fields`: the line's facts by name (a request log's route, id, tokens...), written out by the JSON format. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export type LogFormat = 'text' | 'json';

/**
 * One-line logs on stderr: `[time] LEVEL message` as SGLang's server prints them, or one JSON
 * object per line (`{"time", "level", "message", ...fields}`) for log collectors.
 */
export function createLogger(level: LogLevel = 'info', write: (line: string) => void = (line) => process.stderr.write(line), format: LogFormat = 'text'): Logger {
  const threshold = logLevels.indexOf(level);
  const emit = (at: LogLevel, message: string, fields?: Record<string, unknown>) => {
    if (logLevels.indexOf(at) < threshold) return;
    if (format === 'json') {
      write(`${JSON.stringify({ time: new Date().toISOString(), level: at, message, ...fields })}\n`);
      return;
    }
    const time = new Date().toISOString().replace('T', ' ').replace('Z', '');
    write(`[${time}] ${at.toUpperCase()} ${message}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warning', m, f),
    error: (m, f) => emit('error', m, f),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
