// raw node-llama-cpp load, no defence: node raw.mjs file
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 0 });
const model = await llama.loadModel({ modelPath: process.argv[2], gpuLayers: 0 });
const ctx = await model.createContext({ contextSize: 256, threads: 1 });
await ctx.getSequence().evaluateWithoutGeneratingNewTokens([1]);
console.log("survived");
