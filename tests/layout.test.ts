/**
 * Rules of the source layout that keep the core independent: the core (the contract, guaranteed
 * JSON, tool calling, the backends) imports nothing from lib/eval/, and only lib/backends/ imports
 * node-llama-cpp (the optional dependency). Reads the sources; no model needed.
 */
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const LIB = fileURLToPath(new URL("../lib/", import.meta.url));

async function sources(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith(".ts")).map((e) => join(e.parentPath, e.name));
}

/** The module specifiers a file imports or re-exports (static and dynamic). */
function imports(text: string): string[] {
  return [...text.matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)].map((m) => m[1]!);
}

describe("source layout", () => {
  it("the core imports nothing from lib/eval/", async () => {
    const core = (await sources(LIB)).filter((file) => {
      const rel = relative(LIB, file);
      return rel === "backend.ts" || rel === "tools.ts" || rel.startsWith("json-schema/") || rel.startsWith("backends/");
    });
    expect(core.length).toBeGreaterThan(10);
    for (const file of core) {
      const bad = imports(await readFile(file, "utf8")).filter((spec) => /(^|\/)eval\//.test(spec));
      expect(bad, relative(LIB, file)).toEqual([]);
    }
  });

  it("only lib/backends/ imports node-llama-cpp", async () => {
    for (const file of await sources(LIB)) {
      const rel = relative(LIB, file);
      if (rel.startsWith("backends/")) continue;
      expect(imports(await readFile(file, "utf8")).filter((spec) => spec === "node-llama-cpp"), rel).toEqual([]);
    }
  });
});
