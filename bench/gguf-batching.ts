/**
 * The GGUF batching investigation of issue #13, alone (bench/batching.ts holds the measurements):
 *
 *   node dist/bench/gguf-batching.js settings <model.gguf> [tokens=32] [repeats=3] [threads=default,1,2]
 *     aggregate decode at 1 and 8 concurrent with each thread setting, and CPU ms per token
 *   node dist/bench/gguf-batching.js interleaved <gguf|mlx> <model> [turns=6] [repeats=3]
 *     turn-k TTFT of two interleaved conversations ÷ one conversation alone
 */
import { basename } from "node:path";
import { benchGgufBatchSettings, benchInterleaved, formatGgufBatchSettings, formatInterleaved } from "./batching.js";

const [mode, ...args] = process.argv.slice(2);
if (mode === "settings" && args[0]) {
  const threads = (args[3] ?? "default,1,2").split(",").map((t) => (t === "default" ? "default" as const : Number(t)));
  const rows = await benchGgufBatchSettings(args[0], { tokens: Number(args[1] ?? 32), repeats: Number(args[2] ?? 3), threads });
  console.log(formatGgufBatchSettings(basename(args[0]), rows));
  console.log(JSON.stringify(rows));
} else if (mode === "interleaved" && (args[0] === "gguf" || args[0] === "mlx") && args[1]) {
  const row = await benchInterleaved(args[0], basename(args[1]), args[1], { turns: Number(args[2] ?? 6), repeats: Number(args[3] ?? 3) });
  console.log(formatInterleaved([row]));
  console.log(JSON.stringify(row));
} else {
  console.error("usage: node dist/bench/gguf-batching.js settings <model.gguf> [tokens] [repeats] [threads] | interleaved <gguf|mlx> <model> [turns] [repeats]");
  process.exit(2);
}
