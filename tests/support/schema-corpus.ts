/**
 * Real-world JSON Schemas for guaranteed JSON: the shapes of OpenAI's documented Structured
 * Outputs and function-calling examples, schemas generated here from Zod (Zod 4's
 * `z.toJSONSchema`, and openai's `zodResponseFormat` on Zod 3, which uses zod-to-json-schema),
 * schemas Pydantic generates (tests/python/pydantic_schemas.py, when Pydantic is installed),
 * nested and recursive ones, and the shell-command answer of fixtures/shell-commands.json.
 */
import { zodResponseFormat } from "openai/helpers/zod";
import { z as z3 } from "zod";
import { z } from "zod/v4";
import type { JsonSchema } from "../../lib/json-schema/validate.js";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pythonModules, pythonScripts, runPython } from "./python.js";

const str = { type: "string" };
const int = { type: "integer" };
const num = { type: "number" };
const bool = { type: "boolean" };
const strict = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type: "object", properties, required: Object.keys(properties), additionalProperties: false, ...extra,
});

/** Hand-written schemas in the shapes OpenAI documents and users write. */
const handWritten: Record<string, JsonSchema> = {
  "openai: math reasoning": strict({ steps: { type: "array", items: strict({ explanation: str, output: str }) }, final_answer: str }),
  "openai: research paper extraction": strict({ title: str, authors: { type: "array", items: str }, abstract: str, keywords: { type: "array", items: str } }),
  "openai: recursive UI component": {
    type: "object",
    properties: {
      type: { type: "string", enum: ["div", "button", "header", "section", "field", "form"] },
      label: str,
      children: { type: "array", items: { $ref: "#" } },
      attributes: { type: "array", items: strict({ name: str, value: str }) },
    },
    required: ["type", "label", "children", "attributes"],
    additionalProperties: false,
  },
  "openai: recursive linked list ($defs)": {
    type: "object",
    properties: { linked_list: { $ref: "#/$defs/linked_list_node" } },
    $defs: { linked_list_node: strict({ value: num, next: { anyOf: [{ $ref: "#/$defs/linked_list_node" }, { type: "null" }] } }) },
    required: ["linked_list"],
    additionalProperties: false,
  },
  "openai: content moderation": strict({ is_violating: bool, category: { type: ["string", "null"], enum: ["violence", "sexual", "self_harm", null] }, explanation_if_violating: { type: ["string", "null"] } }),
  "openai: get_weather parameters": strict({ location: { type: "string", description: "City and country e.g. Bogotá, Colombia" }, units: { type: ["string", "null"], enum: ["celsius", "fahrenheit"] } }),
  "openai: calendar event": strict({ name: str, date: { type: "string", format: "date" }, participants: { type: "array", items: str } }),
  "openai: query builder": strict({
    table_name: { type: "string", enum: ["orders", "customers", "products"] },
    columns: { type: "array", items: { type: "string", enum: ["id", "status", "expected_delivery_date", "delivered_at", "shipped_at", "ordered_at", "canceled_at"] } },
    conditions: { type: "array", items: strict({ column: str, operator: { type: "string", enum: ["=", ">", "<", ">=", "<=", "!="] }, value: { anyOf: [str, num, strict({ column_name: str })] } }) },
    order_by: { type: "string", enum: ["asc", "desc"] },
  }),
  "openai: json_object mode ({type: object})": { type: "object" },
  "shell-command answer": strict({ command: str, explanation: str, risk: { enum: ["low", "medium", "high"] } }),
  "shell: argv with bounds": strict({ program: { type: "string", pattern: "^[a-z][a-z0-9_-]{0,15}$" }, args: { type: "array", items: { type: "string", maxLength: 12 }, maxItems: 4 }, timeout_s: { type: "integer", minimum: 1, maximum: 600 } }),
  "nullable type arrays": strict({ a: { type: ["string", "null"] }, b: { type: ["integer", "null"] }, c: { type: ["boolean", "null"] } }),
  "anyOf scalars": { anyOf: [{ type: "string", maxLength: 8 }, { type: "integer" }, { type: "null" }] },
  "oneOf with discriminator": {
    oneOf: [
      strict({ kind: { const: "circle" }, radius: { type: "number", exclusiveMinimum: 0, maximum: 100 } }),
      strict({ kind: { const: "rect" }, w: { type: "number", minimum: 0, maximum: 100 }, h: { type: "number", minimum: 0, maximum: 100 } }),
    ],
  },
  "allOf of objects": { allOf: [{ type: "object", properties: { id: int }, required: ["id"] }, { type: "object", properties: { name: str, email: { type: "string", format: "email" } }, required: ["name"] }] },
  "enum of mixed JSON values": { enum: ["auto", 0, 1.5, true, null, { mode: "x" }, [1, 2]] },
  "const and optional properties": { type: "object", properties: { version: { const: 2 }, note: str, flags: { type: "array", items: bool } }, required: ["version"] },
  "string lengths": strict({ code: { type: "string", minLength: 3, maxLength: 3 }, name: { type: "string", minLength: 2, maxLength: 20 } }),
  "patterns": strict({ sku: { type: "string", pattern: "^[A-Z]{2,3}-[0-9]{4}$" }, hex: { type: "string", pattern: "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$" }, slug: { type: "string", pattern: "^[a-z0-9]+(?:-[a-z0-9]+)*$" } }),
  "unanchored pattern": { type: "string", pattern: "ab+c", maxLength: 10 },
  "formats: date, time, date-time, duration": strict({ d: { type: "string", format: "date" }, t: { type: "string", format: "time" }, dt: { type: "string", format: "date-time" }, p: { type: "string", format: "duration" } }),
  "formats: email, uuid, uri, hostname": strict({ e: { type: "string", format: "email" }, u: { type: "string", format: "uuid" }, link: { type: "string", format: "uri" }, host: { type: "string", format: "hostname" } }),
  "formats: ipv4, ipv6": strict({ v4: { type: "string", format: "ipv4" }, v6: { type: "string", format: "ipv6" } }),
  "number bounds": strict({ p: { type: "number", minimum: 0, maximum: 1 }, t: { type: "number", exclusiveMinimum: -273.15, maximum: 1000 }, n: { type: "integer", minimum: -5, exclusiveMaximum: 5 }, even: { type: "integer", multipleOf: 2, minimum: 0, maximum: 100 } }),
  "array bounds and tuples": strict({ top3: { type: "array", items: str, minItems: 3, maxItems: 3 }, point: { type: "array", prefixItems: [num, num], items: false, minItems: 2 }, some: { type: "array", items: int, minItems: 1 } }),
  "draft-07 tuple (items list)": { $schema: "http://json-schema.org/draft-07/schema#", type: "array", items: [str, int], additionalItems: false, minItems: 2 },
  "map of numbers (additionalProperties schema)": { type: "object", additionalProperties: { type: "number" }, minProperties: 1, maxProperties: 4 },
  "declared plus extra properties": { type: "object", properties: { id: int }, required: ["id"], additionalProperties: { type: "string", maxLength: 5 } },
  "deeply nested": strict({ a: strict({ b: strict({ c: strict({ d: { type: "array", items: strict({ e: { enum: ["x", "y"] } }) } }) }) }) }),
  "recursive tree (definitions)": { definitions: { node: { type: "object", properties: { name: str, children: { type: "array", items: { $ref: "#/definitions/node" }, maxItems: 3 } }, required: ["name"] } }, $ref: "#/definitions/node" },
  "mutually recursive": { $defs: { expr: { anyOf: [{ type: "number" }, { $ref: "#/$defs/op" }] }, op: strict({ op: { enum: ["+", "*"] }, args: { type: "array", items: { $ref: "#/$defs/expr" }, minItems: 2, maxItems: 2 } }) }, $ref: "#/$defs/expr" },
  "annotations everywhere": { $schema: "https://json-schema.org/draft/2020-12/schema", $id: "https://example.com/p", title: "P", description: "d", $comment: "c", type: "object", properties: { x: { type: "integer", default: 1, examples: [1, 2], title: "X" } }, required: ["x"] },
};

/** Schemas generated here by Zod 4 (`z.toJSONSchema`) and by openai's Zod 3 helper. */
function fromZod(): Record<string, JsonSchema> {
  const out: Record<string, JsonSchema> = {};
  const zod4 = (name: string, schema: z.ZodType) => (out[`zod 4: ${name}`] = z.toJSONSchema(schema) as JsonSchema);
  zod4("user", z.object({ name: z.string().min(1).max(30), age: z.number().int().min(0).max(120), role: z.enum(["admin", "user"]), nickname: z.string().optional() }));
  zod4("event with uuid and datetime", z.object({ id: z.uuid(), at: z.iso.datetime(), day: z.iso.date(), tags: z.array(z.string()).max(3) }));
  zod4("nullable and union", z.object({ score: z.number().min(0).max(10).nullable(), value: z.union([z.string(), z.number(), z.boolean()]), state: z.literal("ok") }));
  zod4("discriminated union", z.discriminatedUnion("type", [z.object({ type: z.literal("text"), text: z.string() }), z.object({ type: z.literal("image"), url: z.url() })]));
  zod4("record and tuple", z.object({ counts: z.record(z.string(), z.number().int()), pair: z.tuple([z.string(), z.number()]) }));
  const helper = (name: string, schema: z3.ZodTypeAny) => (out[`openai zodResponseFormat: ${name}`] = zodResponseFormat(schema, "answer").json_schema.schema as JsonSchema);
  helper("calendar event", z3.object({ name: z3.string(), date: z3.string(), participants: z3.array(z3.string()) }));
  helper("nullable fields", z3.object({ title: z3.string(), rating: z3.number().nullable(), tags: z3.array(z3.enum(["a", "b", "c"])) }));
  helper("nested steps", z3.object({ steps: z3.array(z3.object({ explanation: z3.string(), output: z3.string() })), final_answer: z3.string() }));
  return out;
}

/** Schemas Pydantic generates, or none (with the reason) when Pydantic is not installed. */
export function fromPydantic(): { schemas: Record<string, JsonSchema>; skipped?: string } {
  const gate = pythonModules(["pydantic"]);
  if (!gate.available) return { schemas: {}, skipped: gate.reason };
  if (!existsSync(join(pythonScripts, "pydantic_schemas.py"))) return { schemas: {}, skipped: `no ${pythonScripts}/pydantic_schemas.py` };
  const printed = JSON.parse(runPython("pydantic_schemas.py", [])) as Record<string, JsonSchema>;
  return { schemas: Object.fromEntries(Object.entries(printed).map(([k, v]) => [`pydantic: ${k}`, v])) };
}

/** The corpus: name → schema. */
export function schemaCorpus(): { schemas: Record<string, JsonSchema>; skipped?: string } {
  const pydantic = fromPydantic();
  return { schemas: { ...handWritten, ...fromZod(), ...pydantic.schemas }, skipped: pydantic.skipped };
}
