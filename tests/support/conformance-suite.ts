/**
 * The conformance suite's runner, shared by tests/mlx-conformance.test.ts (the dense families) and
 * tests/mlx-conformance-moe.test.ts (mixture-of-experts): for each case, mlx-lm's reference
 * (./conformance.ts) against the engine's logits over prompt + greedy[:-1] and its greedy run.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { MlxBackend, type MlxLoadOptions } from "../../lib/backends/mlx.js";
import { TOKENIZER_SOURCE } from "../reference/tiny-models.js";
import { conformanceAvailability, conformanceReferences, maxAbsDiff, type ConformanceReference, type ConformanceSpec } from "./conformance.js";
import { mlxAvailable, mlxSkipReason } from "./mlx.js";

export interface ConformanceCase {
  name: string;
  spec: ConformanceSpec;
  /** Engine load options; a 16-bit checkpoint is computed in its own dtype, as mlx-lm computes it. */
  engine?: MlxLoadOptions;
  /** Max |logit diff| allowed (see BOUNDS). */
  bound: number;
}

/** Max |logit diff| bounds; tests/mlx-conformance.test.ts explains each. */
export const BOUNDS = { F32: 1e-4, F16: 1.6e-2, BF16: 1.25e-1 } as const;

/**
 * One test per case; `more`, when given, adds tests in the same suite that may use the references
 * (in case order) once they are made.
 */
export function defineConformanceSuite(title: string, cases: readonly ConformanceCase[],
  more?: (references: () => ConformanceReference[]) => void): void {
  const python = conformanceAvailability();
  const tokenizerPresent = existsSync(join(TOKENIZER_SOURCE, "tokenizer.json"));
  const skipReason = !mlxAvailable ? mlxSkipReason : !python.available ? python.reason
    : !tokenizerPresent ? `the tiny models' tokenizer is missing (${TOKENIZER_SOURCE})` : "";
  if (skipReason) console.warn(`[mlx-node] ${title} skipped: ${skipReason}`);

  describe.skipIf(skipReason !== "")(title, () => {
    let references: ConformanceReference[] = [];
    beforeAll(async () => {
      const { device } = await MlxBackend.runtimeInfo();
      const result = conformanceReferences(cases.map((c) => c.spec), TOKENIZER_SOURCE, python.mlxLm, device);
      references = result.references;
      if (result.made) console.log(`[conformance] mlx-lm ${python.mlxLm} made ${result.made} references in ${(result.ms / 1000).toFixed(1)} s`);
    }, 600_000);

    cases.forEach((c, i) => {
      it(c.name, async () => {
        const ref = references[i];
        const mlx = new MlxBackend();
        await mlx.load(ref.modelDir, c.engine);
        try {
          // One uncached forward over prompt + greedy[:-1]: rows 0..63 against mlx-lm's prefill, the
          // rest against the logits of its cached decode steps.
          const logits = await mlx.logits([...ref.prompt, ...ref.greedy.slice(0, -1)]);
          const diff = maxAbsDiff(logits, ref.logits);
          const generated = await mlx.generate(ref.prompt, { maxTokens: ref.greedy.length, temperature: 0, ignoreEos: true });
          const agree = generated.tokens.filter((t, k) => t === ref.greedy[k]).length;
          let note = "";
          if (ref.plain) {
            // A deliberate divergence: the engine matches the patched mlx-lm; plain mlx-lm must be
            // clearly farther, or the case no longer exercises what it claims to.
            const plainDiff = maxAbsDiff(logits, ref.plain.logits, ref.prompt.map((_, r) => r));
            note = `, vs plain mlx-lm ${plainDiff.toExponential(2)}`;
            expect(plainDiff, "the case should show the divergence from plain mlx-lm").toBeGreaterThan(Math.max(10 * diff, BOUNDS.F32));
          }
          console.log(`[${c.name}] max |logit diff| ${diff.toExponential(2)} (bound ${c.bound}), greedy ${agree}/${ref.greedy.length}${note}`);
          expect(diff).toBeLessThanOrEqual(c.bound);
          expect(generated.tokens).toEqual(ref.greedy);
        } finally {
          await mlx.unload();
        }
      });
    });
    more?.(() => references);
  });
}
