/**
 * Tool calls on the real models of the tests (SmolLM2-135M-Instruct, Gemma 3 270M): neither chat
 * template teaches a tool-call syntax (neither reads the `tools` variable nor shows a call), so
 * there is no format to detect and no constrained tool round trip to run on them: a chat with
 * tools under either template is refused naming `toolCallFormat` (checked on stories260K, which
 * loads in milliseconds, given each template). This file notices when that changes.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { InvalidOptionError } from "../lib/errors.js";
import { detectToolCallFormat } from "../lib/tools.js";
import { realModels } from "./support/real-models.js";

const real = realModels();
const STORIES = join(import.meta.dirname, "..", "..", "shared", "models", "stories260K", "stories260K.gguf");
const tools = [{ type: "function" as const, function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];

describe.skipIf(!real.available)("tool calls on the real models' chat templates", () => {
  const gguf = new GgufBackend();
  beforeAll(() => gguf.load(STORIES, { contextSize: 256 }));
  afterAll(() => gguf.unload());

  for (const m of real.models) {
    it(`${m.name}: the chat template teaches no tool-call syntax; chat with tools is refused naming toolCallFormat`, async () => {
      const template = readFileSync(join(m.hf, "chat_template.jinja"), "utf8");
      expect(template).not.toMatch(/\btools\b|tool_call/);
      expect(detectToolCallFormat(template)).toBeUndefined();
      const refused = await gguf.chat([{ role: "user", content: "Weather in Oslo?" }], { chatTemplate: template, tools, maxTokens: 8 }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(InvalidOptionError);
      expect((refused as InvalidOptionError).option).toBe("toolCallFormat");
    });
  }
});
