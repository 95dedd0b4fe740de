// Tuning knobs read from the environment (for benchmarks and experiments; every one has a default
// that needs no setting). A value that is set but not valid is refused with a message that names
// the variable, rather than silently ignored.
import { LunfsError } from './errors.js';

/** The whole number in environment variable `name` (0..max), or `fallback` when it is unset. */
export function wholeNumberFromEnvironment(
  name: string,
  max: number,
  fallback: number,
  unit: string,
): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0 || value > max)
    throw new LunfsError(
      'EINVAL',
      `${name} must be a whole number${unit} from 0 to ${max}, not ${JSON.stringify(text)}`,
    );
  return value;
}
