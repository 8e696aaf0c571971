/**
 * The sampling parameters, defined once: name, type, range, default, the OpenAI request field and
 * the doc (the TSDoc of each entry, which the option types below carry to users). The public
 * option type, the resolved options, validation, the native engine's parameters and the server's
 * request fields are all derived from this table; the native reader (native/model_binding.cpp)
 * checks the same ranges, and tests/sampling.test.ts checks that they agree.
 */
import { InvalidOptionError } from "./errors.js";

/** One numeric sampling parameter. */
export interface SamplingParameter {
  /** `integer` also rejects fractions. */
  readonly type: "number" | "integer";
  /** Smallest allowed value (excluded when `minExclusive`). */
  readonly min: number;
  readonly minExclusive?: boolean;
  /** Largest allowed value (included). */
  readonly max: number;
  /** The value when the option is not given; `random` draws a seed per request. */
  readonly default: number | "random";
  /** The field of an OpenAI-style request (the server) that carries it. */
  readonly openai: string;
}

/** The sampling parameters; see the module comment. */
export const SAMPLING_PARAMETERS = {
  /** Maximum number of tokens to generate. Range [1, 2^20]. Defaults to 256. */
  maxTokens: { type: "integer", min: 1, max: 2 ** 20, default: 256, openai: "max_tokens" },
  /** Sampling temperature, `0` picks the most likely token (greedy). Range [0, 2]. Defaults to 0. */
  temperature: { type: "number", min: 0, max: 2, default: 0, openai: "temperature" },
  /** Nucleus sampling: keep the smallest set of tokens whose probability sums to `topP`. Range (0, 1]. Defaults to 1 (off). */
  topP: { type: "number", min: 0, minExclusive: true, max: 1, default: 1, openai: "top_p" },
  /** Keep only the `topK` most likely tokens; `0` disables. Range [0, 2^20]. Defaults to 0. */
  topK: { type: "integer", min: 0, max: 2 ** 20, default: 0, openai: "top_k" },
  /**
   * Drop tokens whose probability is below `minP` times the top token's (mlx-lm's `min_p`,
   * llama.cpp's min-p). Range [0, 1]: 1 keeps only the most likely token(s). Defaults to 0 (off).
   */
  minP: { type: "number", min: 0, max: 1, default: 0, openai: "min_p" },
  /**
   * Divides the positive logits of recently generated tokens by this value and multiplies the
   * negative ones (>1 discourages repeats), as mlx-lm and llama.cpp do. Range [0.01, 10]. Defaults to 1 (off).
   */
  repetitionPenalty: { type: "number", min: 0.01, max: 10, default: 1, openai: "repetition_penalty" },
  /** How many recent tokens the repetition penalty looks at. Range [1, 65536]. Defaults to 64. */
  repetitionContextSize: { type: "integer", min: 1, max: 2 ** 16, default: 64, openai: "repetition_context_size" },
  /** Seed for sampling; the same seed, prompt and options give the same text. Range [0, 2^32 - 1]. Defaults to a random seed. */
  seed: { type: "integer", min: 0, max: 2 ** 32 - 1, default: "random", openai: "seed" },
} as const satisfies Record<string, SamplingParameter>;

/** The names of the sampling parameters. */
export type SamplingParameterName = keyof typeof SAMPLING_PARAMETERS;

/** The sampling options a caller may give (each documented in {@link SAMPLING_PARAMETERS}). */
export type SamplingOptions = { -readonly [K in SamplingParameterName]?: number };

/** Every sampling parameter with its default applied: what the engines take. */
export type SamplingValues = { -readonly [K in SamplingParameterName]: number };

/** The sampling parameters' names, in table order. */
export const SAMPLING_PARAMETER_NAMES = Object.keys(SAMPLING_PARAMETERS) as SamplingParameterName[];

/** What a parameter accepts, in words: "an integer in [1, 1048576]", "a number in (0, 1]". */
export function describeRange(p: SamplingParameter): string {
  return `${p.type === "integer" ? "an integer" : "a number"} in ${p.minExclusive ? "(" : "["}${p.min}, ${p.max}]`;
}

/** True when `value` is allowed for `p`. */
export function inRange(p: SamplingParameter, value: number): boolean {
  return Number.isFinite(value)
    && (p.type === "number" || Number.isInteger(value))
    && (p.minExclusive ? value > p.min : value >= p.min)
    && value <= p.max;
}

/**
 * Checks the sampling options in `options` and applies the defaults.
 * @throws InvalidOptionError naming the first parameter out of its range or of the wrong type
 */
export function resolveSampling(options: SamplingOptions): SamplingValues {
  const values = {} as SamplingValues;
  for (const name of SAMPLING_PARAMETER_NAMES) {
    const p: SamplingParameter = SAMPLING_PARAMETERS[name];
    const value: unknown = options[name];
    if (value === undefined) values[name] = p.default === "random" ? Math.floor(Math.random() * (p.max + 1)) : p.default;
    else if (typeof value === "number" && inRange(p, value)) values[name] = value;
    else throw new InvalidOptionError(name, describeRange(p), value);
  }
  return values;
}

/** The sampling values of resolved options (the one mapper to an engine's parameters). */
export function samplingValues(options: SamplingValues): SamplingValues {
  return Object.fromEntries(SAMPLING_PARAMETER_NAMES.map((name) => [name, options[name]])) as SamplingValues;
}
