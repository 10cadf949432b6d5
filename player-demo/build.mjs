// Builds the SDK (dist/swarmcast.js + type declarations), the demo page
// (dist/demo/), the p2p-media-loader test page (dist/e2e-p2pml/), and with --tests the unit tests (dist/test/*.test.js).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { readdirSync, mkdirSync, copyFileSync } from "node:fs";

const tests = process.argv.includes("--tests");
const common = { bundle: true, format: "esm", target: "es2022", sourcemap: true, logLevel: "warning" };

if (tests) {
  const entries = readdirSync("test").filter((f) => f.endsWith(".test.ts")).map((f) => `test/${f}`);
  await build({ ...common, entryPoints: entries, outdir: "dist/test", platform: "node", outExtension: { ".js": ".js" } });
} else {
  await build({ ...common, entryPoints: ["src/index.ts"], outfile: "dist/swarmcast.js", platform: "browser", external: ["hls.js"] });
  await build({ ...common, entryPoints: ["demo/demo.ts"], outfile: "dist/demo/demo.js", platform: "browser", minify: true });
  mkdirSync("dist/demo", { recursive: true });
  copyFileSync("demo/index.html", "dist/demo/index.html");
  // The page of the p2p-media-loader browser test (e2e/p2pml.spec.ts):
  // hls.js with the published p2p-media-loader engine, nothing of ours.
  await build({ ...common, entryPoints: ["e2e/p2pml/page.ts"], outfile: "dist/e2e-p2pml/page.js", platform: "browser", conditions: ["p2pml:core-as-bundle"] });
  copyFileSync("e2e/p2pml/index.html", "dist/e2e-p2pml/index.html");
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
}
