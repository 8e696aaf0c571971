/**
 * Guaranteed JSON on the real models: with `jsonSchema`, a shell-command request answered as
 * {command, explanation, risk} always parses and validates, on both backends. The weak models' answers
 * are not judged here (npm run bench:quality reports pass rates); only JSON validity is a gate.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { loadModel } from "../lib/backends/select.js";
import type { ChatMessage } from "../lib/chat.js";
import { parseAndValidate, type JsonSchema } from "../lib/json-schema/validate.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";
import { templateIfMissing } from "./support/real-model-chat.js";
import { realModels } from "./support/real-models.js";

const fixtures = JSON.parse(readFileSync(fileURLToPath(new URL("../fixtures/shell-commands-json.json", import.meta.url)), "utf8")) as {
  cases: { name: string; messages: ChatMessage[]; jsonSchema: JsonSchema }[];
};
// One ordinary request and one dangerous one.
const CASES = fixtures.cases.filter((c) => c.name === "find-large-files" || c.name === "dangerous-wipe-disk");

const real = realModels();
const BACKENDS = [
  { backend: "mlx" as const, available: mlxAvailable, reason: mlxSkipReason },
  { backend: "gguf" as const, available: true, reason: "" },
];

describe("JSON with jsonSchema on the real models", () => {
  for (const m of real.models) {
    for (const { backend, available, reason } of BACKENDS) {
      if (!available) console.warn(`[mlx-node] ${m.name} on ${backend} skipped: ${reason}`);
      it.skipIf(!available)(`${m.name} on ${backend}: every answer parses and validates`, async () => {
        const model = await loadModel(backend === "mlx" ? m.mlx4bit : m.gguf, { backend, contextSize: 1024 });
        try {
          // A GGUF without a chat template (Gemma 3 270M base) gets its HF directory's, as the MLX side has.
          const chatTemplate = backend === "gguf" ? await templateIfMissing(model, m.hf) : undefined;
          for (const c of CASES) {
            const { text } = await model.chat(c.messages, { jsonSchema: c.jsonSchema, maxTokens: 56, temperature: 0, chatTemplate });
            const check = parseAndValidate(text.trim(), c.jsonSchema);
            expect(check.ok, `${c.name}: ${JSON.stringify(text)}`).toBe(true);
          }
        } finally {
          await model.unload();
        }
      }, 300_000);
    }
  }
});
