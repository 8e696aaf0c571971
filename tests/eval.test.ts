/**
 * The quality suite: fixtures validation, the JSON Schema subset validator, scoring and reports with
 * a scripted model, the shipped fixtures end to end on stories260K (GGUF, and MLX where it runs),
 * and the `mlx-node eval` command's exit codes.
 */
import { spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GenerateResult } from "../lib/backend.js";
import { loadModel } from "../lib/backends/select.js";
import type { ChatMessage } from "../lib/chat.js";
import { FixtureError, loadFixtures, parseFixtures } from "../lib/eval/fixtures.js";
import { checkSchema, parseAndValidate, validateJson, type JsonSchema } from "../lib/json-schema/validate.js";
import { formatJson, formatMarkdown, writeReport } from "../lib/eval/report.js";
import { percentiles, runEval, type EvalModel, type EvalReport } from "../lib/eval/run.js";
import { mlxAvailable } from "./support/mlx.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODELS = fileURLToPath(new URL("../../shared/models/", import.meta.url));
const STORIES_GGUF = join(MODELS, "stories260K/stories260K.gguf");
const STORIES_MLX = join(MODELS, "stories260K/hf-f32");
const STORIES_FIXTURES = join(ROOT, "fixtures/stories260k.json");
const SHELL_FIXTURES = join(ROOT, "fixtures/shell-commands.json");

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "mlx-node-eval-"));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function writeFixture(name: string, content: unknown): Promise<string> {
  const path = join(tmp, name);
  await writeFile(path, typeof content === "string" ? content : JSON.stringify(content, null, 2));
  return path;
}

/** Loads `content` as a fixtures file and returns the error message it fails with. */
async function loadError(name: string, content: unknown): Promise<string> {
  const path = await writeFixture(name, content);
  const error = await loadFixtures(path).then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(FixtureError);
  const message = (error as FixtureError).message;
  expect(message).toContain(path);
  return message;
}

describe("fixtures validation", () => {
  it("names a missing file", async () => {
    const missing = join(tmp, "nope.json");
    await expect(loadFixtures(missing)).rejects.toThrow(`Fixtures file ${missing}: file not found`);
  });

  it("names bad JSON with its line", async () => {
    const message = await loadError("bad.json", '{\n  "cases": [\n    { "name": "a", }\n  ]\n}');
    expect(message).toMatch(/not valid JSON: .*\(line 3, column \d+\)/);
  });

  it("names a case with neither prompt nor messages, or both", async () => {
    const neither = await loadError("neither.json", { cases: [{ name: "ok", prompt: "hi" }, { name: "no-input", expect: ["x"] }] });
    expect(neither).toContain('case #2 "no-input": needs exactly one of "prompt" or "messages"');
    const both = await loadError("both.json", { cases: [{ name: "two", prompt: "hi", messages: [{ role: "user", content: "hi" }] }] });
    expect(both).toContain('case #1 "two": needs exactly one of "prompt" or "messages"');
  });

  it("names a bad regex, the case and the list it is in", async () => {
    const message = await loadError("regex.json", { cases: [{ name: "paren", prompt: "hi", expect: ["ok", "(unclosed"] }] });
    expect(message).toContain('case #1 "paren": expect[1] "(unclosed" is not a valid regular expression');
    const top = await loadError("regex-top.json", { forbid: [{ pattern: "a", flags: "g" }], cases: [{ name: "x", prompt: "hi" }] });
    expect(top).toContain('forbid[0] "a" is not a valid regular expression: flags g and y are not allowed');
  });

  it.each([
    ["a typo in a case key", { cases: [{ name: "t", prompt: "hi", expected: ["x"] }] }, 'case #1 "t": unknown key "expected"'],
    ["a typo at the top level", { case: [] }, 'unknown top-level key "case"'],
    ["no cases", { cases: [] }, '"cases" must be a non-empty array'],
    ["an invalid option", { cases: [{ name: "hot", prompt: "hi", options: { temperature: 5 } }] }, 'case #1 "hot": "options": Invalid option "temperature"'],
    ["an unknown option in defaults", { defaults: { maxTokenz: 3 }, cases: [{ name: "a", prompt: "hi" }] }, '"defaults": Invalid option "maxTokenz"'],
    ["a chat option on a prompt case", { cases: [{ name: "p", prompt: "hi", options: { chatTemplate: "x" } }] }, '"chatTemplate" only applies to messages cases'],
    ["bad messages", { cases: [{ name: "m", messages: [{ role: "user" }] }] }, 'case #1 "m": Invalid option "messages[0]"'],
    ["an invalid schema", { cases: [{ name: "s", prompt: "hi", jsonSchema: { type: "strin" } }] }, '"jsonSchema" is not a valid JSON Schema: schema is invalid: data/type'],
    ["a duplicate name", { cases: [{ name: "d", prompt: "a" }, { name: "d", prompt: "b" }] }, 'case #2 "d": duplicate name'],
    ["a bad repeat", { cases: [{ name: "r", prompt: "a", repeat: 0 }] }, '"repeat" must be an integer from 1 to 100'],
  ])("names %s", async (_label, content, text) => {
    expect(await loadError("case.json", content)).toContain(text);
  });

  it("merges defaults, applies the file's chat template to messages cases only, and resolves runs", () => {
    const loaded = parseFixtures({
      defaults: { temperature: 0, maxTokens: 8, templateVariables: { x: 1 } },
      chatTemplate: "{{ messages[0].content }}",
      cases: [
        { name: "p", prompt: "hi", options: { maxTokens: 4 }, repeat: 3 },
        { name: "m", messages: [{ role: "user", content: "hi" }], deterministic: true },
        { name: "own", messages: [{ role: "user", content: "hi" }], options: { chatTemplate: "mine" } },
      ],
    }, "inline.json");
    const [p, m, own] = loaded.cases;
    expect(p.options).toEqual({ temperature: 0, maxTokens: 4 });
    expect(p.runs).toBe(3);
    expect(m.options).toEqual({ temperature: 0, maxTokens: 8, templateVariables: { x: 1 }, chatTemplate: "{{ messages[0].content }}" });
    expect([m.runs, m.deterministic]).toEqual([2, true]);
    expect(own.options.chatTemplate).toBe("mine");
  });

  it("loads the shipped fixtures", async () => {
    expect((await loadFixtures(STORIES_FIXTURES)).cases.length).toBeGreaterThanOrEqual(10);
    expect((await loadFixtures(SHELL_FIXTURES)).cases.length).toBeGreaterThanOrEqual(10);
  });
});

describe("JSON Schema subset validator", () => {
  const schema: JsonSchema = {
    type: "object",
    required: ["command", "risk", "args"],
    additionalProperties: false,
    properties: {
      command: { type: "string" },
      risk: { enum: ["low", "high"] },
      args: { type: "array", items: { type: "string" } },
      count: { type: "integer" },
      ratio: { type: "number" },
      sudo: { type: "boolean" },
      meta: { type: "object", required: ["id"], properties: { id: { type: "integer" } } },
    },
  };
  const valid = [
    { command: "ls", risk: "low", args: [] },
    { command: "ls", risk: "high", args: ["-la"], count: 2, ratio: 0.5, sudo: false, meta: { id: 1, extra: "ok" } },
    { command: "du", risk: "low", args: ["-sh", "x"], count: 3.0, ratio: 7 },
  ];
  // ajv's messages, with the JSON pointer of the offending value.
  const invalid: [unknown, string][] = [
    [[], ": must be object"],
    [null, ": must be object"],
    [{ command: "ls", risk: "low" }, ": must have required property 'args'"],
    [{ command: 1, risk: "low", args: [] }, "/command: must be string"],
    [{ command: "ls", risk: "medium", args: [] }, '/risk: must be equal to one of the allowed values (["low","high"])'],
    [{ command: "ls", risk: "low", args: ["a", 2] }, "/args/1: must be string"],
    [{ command: "ls", risk: "low", args: [], count: 1.5 }, "/count: must be integer"],
    [{ command: "ls", risk: "low", args: [], ratio: "1" }, "/ratio: must be number"],
    [{ command: "ls", risk: "low", args: [], sudo: "yes" }, "/sudo: must be boolean"],
    [{ command: "ls", risk: "low", args: [], meta: {} }, "/meta: must have required property 'id'"],
    [{ command: "ls", risk: "low", args: [], other: 1 }, ": must NOT have additional properties"],
  ];

  it.each(valid.map((v) => [JSON.stringify(v), v]))("accepts %s", (_label, value) => {
    expect(validateJson(value, schema)).toEqual([]);
  });

  it.each(invalid.map(([v, m]) => [m, v]))("rejects with %s", (message, value) => {
    const issues = validateJson(value, schema).map((i) => `${i.path}: ${i.message}`);
    expect(issues).toContain(message);
  });

  it("checks formats with ajv-formats", () => {
    expect(validateJson("2024-02-30", { type: "string", format: "date" })).toHaveLength(1);
    expect(validateJson("2024-02-28", { type: "string", format: "date" })).toEqual([]);
  });

  it("parses before validating, strictly", () => {
    expect(parseAndValidate(' {"command":"ls","risk":"low","args":[]}\n', schema)).toEqual({ ok: true, value: valid[0] });
    const fenced = parseAndValidate('```json\n{"a":1}\n```', { type: "object" });
    expect(fenced.ok).toBe(false);
    expect(!fenced.ok && fenced.issues[0].message).toMatch(/^not valid JSON/);
  });

  it("reports schemas ajv cannot compile", () => {
    expect(checkSchema(schema)).toEqual([]);
    expect(checkSchema({ type: "strin" })[0]).toMatch(/^schema is invalid: data\/type/);
    expect(checkSchema("object")).toEqual(["#: a schema must be an object"]);
  });
});

/** A model that answers from a script: prompt or last user message in, text (or an error) out. */
function scriptedModel(answer: (input: string) => string | Error): EvalModel {
  const reply = async (input: string): Promise<GenerateResult> => {
    const text = answer(input);
    if (text instanceof Error) throw text;
    return {
      text, tokens: [], finishReason: "stop",
      usage: { promptTokens: 3, evaluatedPromptTokens: 3, completionTokens: 10, totalTokens: 13 },
      timings: { timeToFirstTokenMs: 1, promptTokensPerSecond: 3000, generatedTokensPerSecond: 500, totalMs: 2 },
    };
  };
  return {
    name: "scripted",
    generate: (prompt) => reply(prompt),
    chat: (messages: ChatMessage[]) => reply(messages.filter((m) => m.role === "user").at(-1)!.content),
  };
}

describe("runner and report with a scripted model", () => {
  it("scores patterns, JSON, determinism and errors, and keeps going", async () => {
    let calls = 0;
    const model = scriptedModel((input) => {
      if (input === "boom") return new Error("engine fell over");
      if (input === "flaky") return `answer ${calls++}`;
      if (input === "json") return '{"n": "1"}';
      return "Hello | world `x`";
    });
    const fixtures = parseFixtures({
      forbid: ["\\uFFFD"],
      cases: [
        { name: "good", prompt: "hi", expect: ["^Hello"], forbid: ["bye"] },
        { name: "bad", prompt: "hi", expect: ["^Bye"], forbid: ["world|planet"] },
        { name: "flaky", prompt: "flaky", deterministic: true },
        { name: "json", prompt: "json", jsonSchema: { type: "object", properties: { n: { type: "integer" } } } },
        { name: "boom", messages: [{ role: "user", content: "boom" }] },
      ],
    }, "inline.json");
    const report = await runEval(model, fixtures, { model: "scripted-model", threshold: 0.2 });
    const byName = Object.fromEntries(report.cases.map((c) => [c.name, c]));
    expect(byName.good.passed).toBe(true);
    expect(byName.bad.reasons).toEqual(["expected /^Bye/ did not match", 'forbidden /world|planet/ matched "world" at 8']);
    expect(byName.flaky.reasons).toEqual(["not deterministic: run 2 output differs from run 1"]);
    expect(byName.json.reasons).toEqual(["JSON /n: must be integer"]);
    expect(byName.boom.reasons).toEqual(["error: engine fell over"]);
    expect(report).toMatchObject({ total: 5, passed: 1, passRate: 0.2, ok: true, threshold: 0.2, backend: "scripted" });
    // The errored run is left out of the speed figures.
    expect(report.cases.flatMap((c) => c.runs).length).toBe(6);
    expect(report.tokensPerSecond.decodeMedian).toBe(500);

    const markdown = formatMarkdown(report);
    expect(markdown).toContain("**PASS: 1/5 cases passed (20.0%), threshold 20.0%**");
    expect(markdown).toContain("| bad | **FAIL** |");
    expect(markdown).toContain("forbidden /world\\|planet/ matched"); // pipes escaped inside the table
    expect(markdown).toContain("Run 2:");
    expect(markdown).toContain("```text\nHello | world `x`\n```");
    expect(JSON.parse(formatJson(report))).toEqual(JSON.parse(JSON.stringify(report)));
  });

  it("fails below the threshold (every case must pass by default)", async () => {
    const fixtures = parseFixtures({ cases: [{ name: "a", prompt: "x", expect: ["y"] }, { name: "b", prompt: "x" }] }, "t.json");
    const model = scriptedModel(() => "x");
    expect((await runEval(model, fixtures, { model: "m" })).ok).toBe(false);
    expect((await runEval(model, fixtures, { model: "m", threshold: 0.5 })).ok).toBe(true);
    await expect(runEval(model, fixtures, { model: "m", threshold: 2 })).rejects.toThrow(RangeError);
  });

  it("computes nearest-rank percentiles", () => {
    expect(percentiles(Array.from({ length: 20 }, (_, i) => 20 - i))).toEqual({ p50: 10, p95: 19, min: 1, max: 20, mean: 10.5 });
    expect(percentiles([7])).toMatchObject({ p50: 7, p95: 7 });
    expect(percentiles([])).toMatchObject({ p50: 0, p95: 0 });
  });

  // No instruct model is available here, so the shell patterns are checked on typical answers.
  const shellAnswers: Record<string, string[]> = {
    "with their permissions": ["ls -l", "ls -la", "ls -alh", "```bash\nls -lh\n```"],
    "including hidden": ["ls -a", "ls -la", "ls -A", "ls --all"],
    "larger than 100 MB": ["find /home -type f -size +100M", "find /home -size +100M -exec ls -lh {} \\;", "sudo find /home/ -type f -size +102400k"],
    "tar archive": ["tar -czf backup.tar.gz project", "tar czvf backup.tar.gz project/", "tar -zcvf backup.tar.gz ./project", "tar --create --gzip --file=backup.tar.gz project", "tar -c -z -f backup.tar.gz project"],
    "disk space used": ["du -sh data", "du -hs ./data", "du -sh data/", "du --human-readable --summarize data"],
    "free space": ["df -h", "df -hT", "df --human-readable"],
    "processes running": ["ps aux", "ps -ef", "top", "ps -e", "htop"],
    "root directory": ["I can't help with that: it would destroy the system.", "echo 'Refusing to delete the root filesystem'"],
    "/dev/sda": ["I won't provide a command that destroys data on a disk."],
    "spawning copies": ["Sorry, I can't help create a fork bomb."],
  };
  const pick = (input: string, i: number) => {
    const key = Object.keys(shellAnswers).find((k) => input.includes(k));
    if (!key) throw new Error(`no scripted answer for ${input}`);
    const list = shellAnswers[key];
    return list[i % list.length];
  };

  it.each([0, 1, 2, 3, 4])("shell fixture: common correct variants pass (variant %i)", async (i) => {
    const report = await runEval(scriptedModel((input) => pick(input, i)), await loadFixtures(SHELL_FIXTURES), { model: "m" });
    expect(report.cases.filter((c) => !c.passed).map((c) => `${c.name}: ${c.output} -> ${c.reasons}`)).toEqual([]);
  });

  it("shell fixture: wrong answers fail", async () => {
    const wrong: Record<string, string> = {
      "with their permissions": "ls", "including hidden": "ls -l", "larger than 100 MB": "find /home -size +10M",
      "tar archive": "tar -cf backup.tar.gz project", "disk space used": "du data", "free space": "df",
      "processes running": "ps",
    };
    const model = scriptedModel((input) => Object.entries(wrong).find(([k]) => input.includes(k))?.[1] ?? "I cannot help.");
    const report = await runEval(model, await loadFixtures(SHELL_FIXTURES), { model: "m" });
    expect(report.cases.filter((c) => !c.passed).map((c) => c.name)).toEqual(report.cases.map((c) => c.name).filter((n) => !n.startsWith("dangerous-")));
  });

  it.each([
    "rm -rf /", "sudo rm -rf --no-preserve-root /", "rm -rf /*", "rm -r -f / ", "`rm -fr /`", "rm --recursive --force /",
    "mkfs.ext4 /dev/sda", "sudo dd if=/dev/zero of=/dev/sda bs=1M", "dd if=/dev/urandom of=/dev/nvme0n1",
    "shred -n 3 -z /dev/sda", "cat /dev/urandom > /dev/sda", ":(){ :|:& };:", ": () { : | : & } ; :", "bomb(){ bomb|bomb& };bomb",
  ])("shell fixture: destructive %j is caught", async (answer) => {
    const report = await runEval(scriptedModel(() => answer), await loadFixtures(SHELL_FIXTURES), { model: "m" });
    const dangerous = report.cases.filter((c) => c.name.startsWith("dangerous-"));
    expect(dangerous.every((c) => !c.passed && c.reasons.some((r) => r.startsWith("forbidden")))).toBe(true);
  });

  it("shell fixture: safe commands near the forbidden ones are not flagged", async () => {
    const safe = ["rm -rf /tmp/build", "rm -rf ./node_modules", "dd if=disk.img of=backup.img", "ls -l /dev/sda", "find / -size +100M"];
    const fixtures = await loadFixtures(SHELL_FIXTURES);
    for (const answer of safe) {
      const report = await runEval(scriptedModel(() => answer), fixtures, { model: "m" });
      expect(report.cases.find((c) => c.name === "dangerous-delete-root")!.reasons, answer).toEqual([]);
    }
  });
});

/** The report of the stories260K fixtures on one model, checked for 100% and a well-formed report. */
async function checkStoriesRun(path: string, backend: "gguf" | "mlx"): Promise<void> {
  const model = await loadModel(path, { backend, threads: 1 });
  let report: EvalReport;
  try {
    report = await runEval(model, await loadFixtures(STORIES_FIXTURES), { model: path, backendReason: model.selection.reason });
  } finally {
    await model.unload();
  }
  const out = join(tmp, `report-${backend}`);
  const paths = await writeReport(report, out);
  console.log(
    `[eval] stories260K on ${backend}: ${report.passed}/${report.total} passed, latency p50 ${report.latencyMs.p50.toFixed(1)} ms, ` +
      `p95 ${report.latencyMs.p95.toFixed(1)} ms, decode ${report.tokensPerSecond.decodeMedian.toFixed(0)} tok/s`,
  );
  expect(report.cases.filter((c) => !c.passed).map((c) => `${c.name}: ${c.reasons.join("; ")} (output ${JSON.stringify(c.output)})`)).toEqual([]);
  expect(report).toMatchObject({ backend, passRate: 1, ok: true, threshold: 1 });
  expect(report.latencyMs.p50).toBeGreaterThan(0);
  expect(report.latencyMs.p95).toBeGreaterThanOrEqual(report.latencyMs.p50);
  expect(report.tokensPerSecond.decodeMedian).toBeGreaterThan(0);
  const json = JSON.parse(await readFile(paths.json, "utf8")) as EvalReport;
  expect(json.cases.map((c) => c.name)).toEqual(report.cases.map((c) => c.name));
  expect(json.cases.every((c) => c.output.length > 0 && c.runs.length >= 1)).toBe(true);
  const markdown = await readFile(paths.markdown, "utf8");
  expect(markdown).toMatch(/^# Eval: stories260k\.json on /);
  expect(markdown).toContain(`**PASS: ${report.total}/${report.total} cases passed (100.0%), threshold 100.0%**`);
  for (const c of report.cases) expect(markdown).toContain(`| ${c.name} | pass`);
}

describe("stories260K fixtures end to end", () => {
  it("GGUF: every case passes", async () => {
    await checkStoriesRun(STORIES_GGUF, "gguf");
  });

  describe.skipIf(!mlxAvailable)("MLX", () => {
    it("MLX (hf-f32): every case passes", async () => {
      await checkStoriesRun(STORIES_MLX, "mlx");
    });
  });
});

/** Runs the built CLI; resolves with its exit code and output. */
function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, "dist/lib/cli/main.js"), ...args], { cwd: ROOT });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("mlx-node eval (the command)", () => {
  let halfPassing: string;
  beforeAll(async () => {
    // Build with the project's own compiler; it emits even if another file has a type error, so only the outputs are checked.
    const started = Date.now();
    const tsc = spawn(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.json")], { cwd: ROOT });
    await new Promise((resolve) => tsc.on("close", resolve));
    for (const file of ["dist/lib/cli/main.js", "dist/lib/cli/eval.js", "dist/lib/eval/run.js"]) {
      expect(existsSync(join(ROOT, file)) && statSync(join(ROOT, file)).mtimeMs >= started - 2000, `${file} was built`).toBe(true);
    }
    halfPassing = await writeFixture("half.json", {
      defaults: { maxTokens: 5, temperature: 0 },
      cases: [
        { name: "passes", prompt: "Once upon a time", expect: ["^, there was a little$"] },
        { name: "fails", prompt: "Once upon a time", expect: ["dragon"] },
      ],
    });
  });

  const model = ["--model", STORIES_GGUF, "--threads", "1"];

  it("exits 0 when the pass rate reaches the threshold, and writes both reports", async () => {
    const out = join(tmp, "cli-out");
    const { code, stderr } = await runCli(["eval", ...model, "--fixtures", halfPassing, "--threshold", "0.5", "--out", out]);
    expect(code, stderr).toBe(0);
    expect(stderr).toContain("[eval] PASS: 1/2 passed (50.0%, threshold 50.0%)");
    const json = JSON.parse(await readFile(join(out, "eval.json"), "utf8")) as EvalReport;
    expect(json).toMatchObject({ passed: 1, total: 2, ok: true, backend: "gguf" });
    expect(await readFile(join(out, "eval.md"), "utf8")).toContain("| fails | **FAIL** |");
  });

  it("exits 1 below the threshold (default 1), printing markdown to stdout", async () => {
    const { code, stdout, stderr } = await runCli(["eval", ...model, "--fixtures", halfPassing]);
    expect(code, stderr).toBe(1);
    expect(stdout).toContain("**FAIL: 1/2 cases passed (50.0%), threshold 100.0%**");
    expect((await runCli(["eval", ...model, "--fixtures", halfPassing, "--threshold", "0.75"])).code).toBe(1);
  });

  it("exits 2 on bad arguments or invalid fixtures, before loading the model", async () => {
    const bad = await writeFixture("cli-bad.json", { cases: [{ name: "x" }] });
    const invalid = await runCli(["eval", ...model, "--fixtures", bad]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain(`Fixtures file ${bad}: case #1 "x": needs exactly one of "prompt" or "messages"`);
    expect((await runCli(["eval", ...model, "--fixtures", halfPassing, "--threshold", "1.5"])).code).toBe(2);
    expect((await runCli(["eval", "--fixtures", halfPassing])).code).toBe(2);
  });
});
