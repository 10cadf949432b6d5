// The simulator's HTML report renders in Chromium: figures, table, plots.
import { test, expect } from "@playwright/test";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = process.env.SWARMCAST_BIN_DIR ?? resolve(ROOT, "target/debug");

test("the simulator's HTML report renders with its plots", async ({ page }) => {
  const dir = resolve(import.meta.dirname, "../test-results/sim");
  mkdirSync(dir, { recursive: true });
  const scenario = resolve(dir, "tiny.toml");
  writeFileSync(scenario, 'name = "tiny"\nviewers = 30\nduration_s = 60\n');
  const html = resolve(dir, "report.html");
  execFileSync(resolve(BIN, "swarmcast-load"), ["sim", "--scenario", scenario, "--html", html, "--json", resolve(dir, "report.json")], {
    stdio: ["ignore", "ignore", "inherit"],
    timeout: 120_000,
  });
  await page.goto(`file://${html}`);
  await expect(page.locator("h1")).toContainText("tiny");
  await expect(page.locator("table tr")).toHaveCount(4); // header + plan, random mesh, HTTP only
  await expect(page.locator("figure svg polyline")).toHaveCount(12); // 4 plots x 3 policies
  await page.screenshot({ path: resolve(dir, "report.png"), fullPage: true });
});
