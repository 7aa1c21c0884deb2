// Bundles the test pages' scripts with esbuild into dist/ (run by install.sh).
// The official Pipecat client packages are bundled only into the test page
// for them; the server's own /client/ page is plain JS with no build step.
import { build } from "esbuild";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: {
    "official-client": join(here, "src/official-client.js"),
    "raw-client": join(here, "src/raw-client.js"),
  },
  outdir: join(here, "dist"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2022",
  sourcemap: "inline",
  logLevel: "warning",
  // daily-js is pulled in by the transport's default media manager, which
  // the test page never constructs; keep its code out of the page entirely.
  alias: { "@daily-co/daily-js": join(here, "src/no-daily.js") },
});
console.log("bundled dist/official-client.js, dist/raw-client.js");
