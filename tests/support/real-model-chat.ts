/**
 * The chat template to pass a loaded real model: none when it has its own, else the one of its HF
 * directory (Gemma 3 270M is a base model whose GGUF has no tokenizer.chat_template; setup_models.py
 * writes Gemma's turn format into hf/), so both backends see the same prompt.
 */
import type { LoadedModel } from "../../lib/backends/select.js";
import { ChatTemplateError } from "../../lib/chat.js";
import { Tokenizer } from "../../lib/tokenizer.js";

export async function templateIfMissing(model: LoadedModel, hfDir: string): Promise<string | undefined> {
  try {
    await model.chat([{ role: "user", content: "hi" }], { maxTokens: 1 });
    return undefined;
  } catch (error) {
    if (!(error instanceof ChatTemplateError)) throw error;
    return (await Tokenizer.fromDirectory(hfDir)).chatTemplate;
  }
}
