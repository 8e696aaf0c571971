/**
 * The GGUF batching investigation of issue #13, alone (bench/batching.ts holds the measurements):
 *
 *   node dist/bench/gguf-batching.js settings <model.gguf> [tokens=32] [repeats=3] [threads=default,1,2]
 *     aggregate decode at 1 and 8 concurrent with each thread setting, and CPU ms per token
 *   node dist/bench/gguf-batching.js interleaved <gguf|mlx> <model> [turns=6] [repeats=3]
 *     turn-k TTFT of two interleaved conversations ÷ one conversation alone
 *   node dist/bench/gguf-batching.js rows <model.gguf> [tokens=32] [levels=1,2,4,8,16] [rounds=2] [threads=1]
 *     at each concurrency: the rows of every llama.cpp decode, and its CPU time by rows
 */
import { basename } from "node:path";
import { benchGgufBatchSettings, benchGgufDecodeRows, benchInterleaved, formatGgufBatchSettings, formatGgufDecodeRows, formatInterleaved } from "./batching.js";

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
} else if (mode === "rows" && args[0]) {
  const rows = await benchGgufDecodeRows(args[0], {
    tokens: Number(args[1] ?? 32), levels: (args[2] ?? "1,2,4,8,16").split(",").map(Number), rounds: Number(args[3] ?? 2), threads: Number(args[4] ?? 1),
  });
  console.log(formatGgufDecodeRows(basename(args[0]), rows));
  console.log(JSON.stringify(rows));
} else {
  console.error("usage: node dist/bench/gguf-batching.js settings <model.gguf> [tokens] [repeats] [threads] | interleaved <gguf|mlx> <model> [turns] [repeats] | rows <model.gguf> [tokens] [levels] [rounds] [threads]");
  process.exit(2);
}
