/**
 * The one definition of the sampling parameters (lib/sampling.ts): validation derived from it, and
 * the native reader (native/model_binding.cpp) checking the same ranges. The backends' answers to
 * out-of-range values are in the contract suite (tests/contract/backend.contract.ts).
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorFromNative, InvalidOptionError } from "../lib/errors.js";
import { nativeStatus, type NativeMlx, type NativeModel } from "../lib/native.js";
import { resolveGenerateOptions } from "../lib/options.js";
import { SAMPLING_PARAMETER_NAMES, SAMPLING_PARAMETERS, type SamplingParameter } from "../lib/sampling.js";
import { samplingEdges } from "./contract/backend.contract.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

const MODEL = fileURLToPath(new URL("../../shared/models/stories260K/hf-f32", import.meta.url));
const edges = samplingEdges();

describe("sampling schema", () => {
  it("applies each parameter's default", () => {
    const resolved = resolveGenerateOptions({});
    for (const name of SAMPLING_PARAMETER_NAMES) {
      const p: SamplingParameter = SAMPLING_PARAMETERS[name];
      if (p.default === "random") expect(Number.isInteger(resolved[name]) && resolved[name] >= p.min && resolved[name] <= p.max).toBe(true);
      else expect(resolved[name], name).toBe(p.default);
    }
  });

  it("accepts both ends of every range and rejects values just outside with InvalidOptionError naming the option", () => {
    for (const [name, { inside, outside }] of Object.entries(edges)) {
      for (const value of inside) expect(resolveGenerateOptions({ [name]: value })[name as keyof typeof SAMPLING_PARAMETERS]).toBe(value);
      for (const value of [...outside, "1"]) {
        expect(() => resolveGenerateOptions({ [name]: value }), `${name}: ${String(value)}`).toThrow(
          expect.objectContaining({ name: "InvalidOptionError", option: name }),
        );
      }
    }
  });
});

describe.skipIf(!mlxAvailable)("sampling ranges in the native reader", () => {
  if (!mlxAvailable) console.warn(`[mlx-node] native sampling checks skipped: ${mlxSkipReason}`);
  let addon: NativeMlx;
  let model: NativeModel;
  beforeAll(async () => {
    const status = nativeStatus();
    if (!status.available) throw new Error(status.reason);
    addon = status.addon;
    model = await addon.loadModel(MODEL, 0, "auto", undefined, 0);
  });
  afterAll(async () => {
    await model?.unload();
  });
  const params = (extra: Record<string, number>) => ({ ...resolveGenerateOptions({ maxTokens: 2, temperature: 1, seed: 1 }), stopTokenIds: new Int32Array(), ...extra });
  const run = (extra: Record<string, number>) => new Promise<number[]>((resolve, reject) => {
    const tokens: number[] = [];
    model.generate(Int32Array.from([1, 400]), params(extra) as never, (batch, done) => {
      if (batch) tokens.push(...batch);
      else if (done?.error) reject(done.error);
      else resolve(tokens);
    });
  });

  it("are lib/sampling.ts's ranges", () => {
    const ts = Object.fromEntries(SAMPLING_PARAMETER_NAMES.map((name) => {
      const p: SamplingParameter = SAMPLING_PARAMETERS[name];
      return [name, { integer: p.type === "integer", min: p.min, minExclusive: p.minExclusive ?? false, max: p.max }];
    }));
    expect(addon.samplingRanges()).toEqual(ts);
  });

  it("accept both ends of every range and reject values just outside with INVALID_OPTION naming the option", async () => {
    for (const [name, { inside, outside }] of Object.entries(edges)) {
      for (const value of inside) {
        expect((await run({ [name]: name === "maxTokens" ? Math.min(value, 2) : value })).length, `${name}: ${value}`).toBeGreaterThan(0);
      }
      for (const value of outside) {
        let thrown: (Error & { code?: string; option?: string; expected?: string; got?: unknown }) | undefined;
        try {
          model.generate(Int32Array.from([1]), params({ [name]: value }) as never, () => undefined);
        } catch (error) {
          thrown = error as typeof thrown;
        }
        expect(thrown, `${name}: ${value}`).toMatchObject({ code: "INVALID_OPTION", option: name });
        const typed = errorFromNative(thrown!.code!, thrown!.message, thrown!);
        expect(typed).toBeInstanceOf(InvalidOptionError);
        expect(typed.message).toBe(new InvalidOptionError(name, thrown!.expected!, value).message);
      }
    }
  });
});
