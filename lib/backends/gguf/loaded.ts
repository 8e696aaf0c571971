/**
 * A loaded GGUF model and its llama.cpp sequences: which idle sequence a request runs on (the
 * prompt cache), and which thread count decodes.
 */
import type { LlamaContext, LlamaContextSequence, LlamaModel } from "node-llama-cpp";
import { GgufError } from "../../errors.js";
import type { TokenPieces } from "../../logprobs.js";
import type { Lockstep } from "./lockstep.js";
import type { DecodeThreadTuner, GgufThreadCounts } from "./threads.js";

/** Shortest shared prefix copied from another sequence rather than evaluated (see pickSlot). */
const MIN_COPIED_PREFIX = 8;

/**
 * Thread counts chosen by measurement in this process, by model file: loading the same file again
 * does not measure again. Decode's is measured; prefill's falls to it when more threads stalled.
 */
export const measuredThreads = new Map<string, GgufThreadCounts>();

/** One llama.cpp sequence: a running request's, or, idle, a prompt-cache entry. */
export interface Slot {
  sequence: LlamaContextSequence;
  busy: boolean;
  /** Settles when the last run on this sequence has stopped touching it; never rejects. */
  lastRun: Promise<void>;
  /** When a run last took this sequence, for least-recently-used choice. */
  usedAt: number;
  /** Runs copying this sequence's state into theirs right now: it must not change meanwhile. */
  readers: number;
}

/**
 * node-llama-cpp's sequence-to-sequence KV copy (llama.cpp's `llama_memory_seq_cp`): present in
 * the pinned 3.22.1 but not in its public types. Without it a request sharing only part of an idle
 * sequence's tokens evaluates its prompt in full rather than cutting that sequence's state.
 */
export type CopyableSequence = LlamaContextSequence & {
  _copyStateFromOtherSequence?(other: LlamaContextSequence, upToTokenIndex: number): Promise<boolean>;
};

export interface Loaded {
  model: LlamaModel;
  context: LlamaContext;
  slots: Slot[];
  /** Whether idle sequences' KV state is reused by later requests (`promptCacheBytes` > 0). */
  reuse: boolean;
  /** KV bytes of one sequence (llama.cpp's estimate), for the prompt-cache budget and reports. */
  sequenceBytes: number;
  vocabSize: number;
  /** Token texts for `logprobs`, made on first use. */
  pieces?: TokenPieces;
  /** Prefill's count, and decode's before measurement. */
  threads: GgufThreadCounts;
  /** Whether counts can change between batches (see setContextThreads); when not, decode's count is used throughout. */
  canSwitchThreads: boolean;
  /** The model file's path, size and modification time: the key of {@link measuredThreads}. */
  fileKey: string;
  /** Size of the model file. */
  fileBytes: number;
  /** Measures the decode count on this machine; undefined when the threads were given or nothing is measured. */
  tuner: DecodeThreadTuner | undefined;
  bos: number | undefined;
  eos: number | undefined;
  /** Makes concurrent runs' token requests land in one llama.cpp batch. */
  lockstep: Lockstep;
}

/**
 * The idle sequence to run `prompt` on, and maybe one to copy a shared prefix from. A run cuts
 * its sequence's state back to the prefix shared with the prompt, so other conversations' states
 * are kept where possible: a sequence the prompt extends (the longest) is used as it is; else a
 * never-used sequence, else the least recently used, starting from a copy of the idle sequence
 * sharing the longest prefix (when node-llama-cpp can copy; else that sequence itself).
 */
export function pickSlot(loaded: Loaded, prompt: readonly number[]): { slot: Slot; source?: Slot } {
  let extended: Slot | undefined;
  let partial: Slot | undefined;
  let empty: Slot | undefined;
  let oldest: Slot | undefined;
  let extendedBy = 0;
  let partialBy = 0;
  for (const slot of loaded.slots) {
    if (slot.busy) continue;
    const held = slot.sequence.contextTokens;
    if (held.length === 0) {
      if (slot.readers === 0) empty ??= slot;
      continue;
    }
    if (slot.readers === 0 && (!oldest || slot.usedAt < oldest.usedAt)) oldest = slot;
    if (!loaded.reuse) continue;
    const shared = sharedPrefix(held, prompt);
    if (shared === held.length && slot.readers === 0) {
      if (shared > extendedBy) [extended, extendedBy] = [slot, shared];
    } else if (shared > partialBy) [partial, partialBy] = [slot, shared];
  }
  if (extended) return { slot: extended };
  // Erasing or copying a sequence's state takes node-llama-cpp's context lock, which its batch loop
  // holds for as long as any sequence has decodes queued: while others run, a request that needs
  // either would wait for the whole batch to end. An empty sequence joins the next batch at once.
  if (empty && loaded.slots.some((slot) => slot.busy)) return { slot: empty };
  const target = empty ?? oldest;
  // The queue lets at most maxBatch requests run, and there are at least that many sequences.
  if (!target) throw new GgufError("no idle llama.cpp sequence (more requests running than maxBatch)");
  // A copy is cut to the shared prefix after it is made, in a second turn of the lock, which a batch
  // started meanwhile (a request arriving in the same tick) holds until it ends: only a prefix
  // worth that (MIN_COPIED_PREFIX tokens) is copied.
  // A prompt the partial sequence holds whole (asked again, or regenerated) runs there: its tail goes.
  if (partial && partial.readers === 0 && partialBy >= prompt.length - 1) return { slot: partial };
  if (!partial || partial === target || partialBy < MIN_COPIED_PREFIX) return { slot: target };
  if (typeof (target.sequence as CopyableSequence)._copyStateFromOtherSequence !== "function") return { slot: partial.readers === 0 ? partial : target };
  return { slot: target, source: partial };
}

export function sharedPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** KV bytes one more sequence of `contextSize` tokens costs, by llama.cpp's own estimate. */
export async function kvBytesPerSequence(model: LlamaModel, contextSize: number): Promise<number> {
  const estimate = (sequences: number) => model.fileInsights.estimateContextResourceRequirementsV2({ contextSize, modelGpuLayers: 0, sequences });
  const [one, two] = await Promise.all([estimate(1), estimate(2)]);
  return Math.max(1, two.cpuRam - one.cpuRam);
}

/** True when one request runs (the caller's). */
export function runningAlone(loaded: Loaded): boolean {
  return loaded.slots.filter((slot) => slot.busy).length <= 1;
}

/** The decode thread count of a loaded model: measured (or being measured), else the default. */
export function decodeThreads(loaded: Loaded): number {
  // The tuner times single requests: while several run, its trial counts would slow them all.
  const tuner = loaded.tuner?.measuring && !runningAlone(loaded) ? undefined : loaded.tuner;
  return tuner?.next() ?? loaded.threads.decode;
}
