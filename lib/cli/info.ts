/** `mlx-node info`: platform, available backends, and why the others are not. */
import { info } from "../platform.js";
import { EXIT } from "./exit-codes.js";

export async function runInfo(json: boolean): Promise<number> {
  const i = await info();
  if (json) {
    process.stdout.write(JSON.stringify(i, null, 2) + "\n");
    return EXIT.ok;
  }
  const gib = (i.totalMemoryBytes / 2 ** 30).toFixed(1);
  const lines = [
    `platform: ${i.platform}-${i.arch}, Node ${i.node}`,
    `cpu: ${i.cpuModel} (${i.logicalCores} logical cores), memory: ${gib} GiB`,
  ];
  for (const [name, status] of Object.entries(i.backends)) {
    const details = status.details ? ` (${Object.entries(status.details).map(([k, v]) => `${k} ${v}`).join(", ")})` : "";
    lines.push(status.available ? `${name}: available${details}` : `${name}: unavailable: ${status.reason}`);
  }
  process.stdout.write(lines.join("\n") + "\n");
  return EXIT.ok;
}
