// Copies the charting library from node_modules (installed from package-lock.json by `npm ci`) into
// plugins/fitness_pipeline/ui/static/, the only place the training page loads it from. Deterministic: the same lockfile
// gives byte-identical files. The one change to the upstream file: its sourceMappingURL comment is
// dropped (the .map is not shipped, so a browser's developer tools would ask the server for a 404).
//
//   npm ci && npm run vendor    rewrite static/chart.umd.min.js + its LICENSE
//   npm ci && npm run check     exit 1 if those differ from what the lockfile gives
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "..", "plugins", "fitness_pipeline", "ui", "static");
const chartjs = JSON.parse(readFileSync(join(modules, "chart.js", "package.json"), "utf8"));
const color = JSON.parse(readFileSync(join(modules, "@kurkle", "color", "package.json"), "utf8"));

const script = readFileSync(join(modules, "chart.js", "dist", "chart.umd.min.js"), "utf8")
  .replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n");
const license = [
  `Chart.js ${chartjs.version} (https://www.chartjs.org), dist/chart.umd.min.js, from the npm registry.`,
  `It bundles @kurkle/color ${color.version} (https://github.com/kurkle/color). Both are MIT-licensed:`,
  "",
  `--- chart.js ${chartjs.version}: LICENSE.md ---`,
  readFileSync(join(modules, "chart.js", "LICENSE.md"), "utf8").trim(),
  "",
  `--- @kurkle/color ${color.version}: LICENSE.md ---`,
  readFileSync(join(modules, "@kurkle", "color", "LICENSE.md"), "utf8").trim(),
  "",
].join("\n");

const files = { "chart.umd.min.js": script, "chart.umd.min.js.LICENSE.txt": license };
const check = process.argv.includes("--check");
let differs = false;
mkdirSync(out, { recursive: true });
for (const [name, text] of Object.entries(files)) {
  const path = join(out, name);
  const sha = createHash("sha256").update(text).digest("hex");
  if (check) {
    let current = null;
    try { current = readFileSync(path, "utf8"); } catch { /* missing */ }
    const same = current === text;
    differs ||= !same;
    console.log(`${same ? "ok     " : "DIFFERS"} static/${name}  sha256 ${sha}`);
  } else {
    writeFileSync(path, text);
    console.log(`wrote static/${name}  ${Buffer.byteLength(text)} bytes  sha256 ${sha}`);
  }
}
process.exit(differs ? 1 : 0);
