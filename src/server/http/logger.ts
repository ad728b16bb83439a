export type LogLevel = 'debug' | 'info' | 'warning' | 'error' | 'critical';

export const logLevels: LogLevel[] = ['debug', 'info', 'warning', 'error', 'critical'];

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** Plain one-line logs on stderr, `[time] LEVEL message`, as SGLang's server prints them. */
export function createLogger(level: LogLevel = 'info', write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  const threshold = logLevels.indexOf(level);
  const emit = (at: LogLevel, message: string) => {
    if (logLevels.indexOf(at) < threshold) return;
    const time = new Date().toISOString().replace('T', ' ').replace('Z', '');
    write(`[${time}] ${at.toUpperCase()} ${message}\n`);
  };
  return {
    debug: (m) => emit('debug', m),
    info: (m) => emit('info', m),
    warn: (m) => emit('warning', m),
    error: (m) => emit('error', m),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
