/**
 * The GBNF grammar (llama.cpp's grammar format) of a compiled schema: the same language as the
 * automaton (automaton.ts), so that the GGUF backend can let llama.cpp's native grammar sampler
 * do the masking while our automaton follows along to know when the document is complete and
 * how much budget finishing it needs.
 *
 * node-llama-cpp's own `createGrammarForJsonSchema` is not used because its language differs:
 * it makes every property required, lets integers take exponents (`1e-5` parses to a
 * non-integer), and demands "\n\n\n\n" after the document.
 */
import { MAX_EXPONENT_DIGITS, MAX_FRACTION_DIGITS, MAX_INT_DIGITS, type CompiledJsonSchema, type ObjectNode, type SchemaNode } from "./schema.js";

/** GBNF text for `schema`; the start rule is `root`. */
export function jsonSchemaToGbnf(schema: CompiledJsonSchema): string {
  const rules = new Map<string, string>();
  const ws = `" "?`;
  const int = `("0" | [1-9] [0-9]{0,${MAX_INT_DIGITS - 1}})`;
  rules.set("string", `"\\"" ( [^"\\\\\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\\""`);
  rules.set("integer", `"-"? ${int}`);
  rules.set("number", `"-"? ${int} ("." [0-9]{1,${MAX_FRACTION_DIGITS}})? ([eE] [-+]? [0-9]{1,${MAX_EXPONENT_DIGITS}})?`);

  const value = (node: SchemaNode): string => {
    switch (node.kind) {
      case "string":
        return "string";
      case "number":
        return node.integer ? "integer" : "number";
      case "literal":
        return `(${node.values.map(literal).join(" | ")})`;
      case "array": {
        const name = `array${node.id}`;
        if (!node.items) rules.set(name, `"[" "]"`);
        else {
          const item = value(node.items);
          rules.set(name, `"[" ( ${item} ( "," ${ws} ${item} )* )? "]"`);
        }
        return name;
      }
      case "object":
        return objectRules(node, rules, value, ws);
    }
  };
  rules.set("root", `${ws} ${value(schema.root)}`);
  return [...rules].map(([name, body]) => `${name} ::= ${body}`).join("\n") + "\n";
}

/**
 * Declared properties in order, each optional one skippable, required ones not. Two rules per
 * index i: `first_i`, the properties from i on when none was written yet (no leading comma),
 * and `rest_i`, the same after one was (each with a leading comma).
 */
function objectRules(node: ObjectNode, rules: Map<string, string>, value: (n: SchemaNode) => string, ws: string): string {
  const name = `object${node.id}`;
  const props = node.properties;
  const kv = props.map((p) => `${literal(new TextDecoder().decode(p.key))} ":" ${ws} ${value(p.node)}`);
  const rest = (i: number): string => (i >= props.length ? "" : `${name}-rest${i}`);
  const first = (i: number): string => (i >= props.length ? "" : `${name}-first${i}`);
  for (let i = props.length - 1; i >= 0; i--) {
    const after = rest(i + 1);
    const withThis = `"," ${ws} ${kv[i]} ${after}`.trim();
    rules.set(rest(i), props[i].required ? withThis : `( "," ${ws} ${kv[i]} )? ${after}`.trim());
    const startThis = `${kv[i]} ${after}`.trim();
    const skip = first(i + 1);
    rules.set(first(i), props[i].required ? startThis : skip ? `( ${startThis} | ${skip} )` : `( ${startThis} )?`);
  }
  rules.set(name, props.length === 0 ? `"{" "}"` : `"{" ${first(0)} "}"`);
  return name;
}

/** A GBNF string literal for exact text. */
function literal(text: string): string {
  let out = '"';
  for (const c of text) {
    const code = c.codePointAt(0) as number;
    if (c === '"' || c === "\\") out += `\\${c}`;
    else if (code < 0x20) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += c;
  }
  return `${out}"`;
}
