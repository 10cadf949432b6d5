// The browser benchmark (bench/): not part of the test command.
import { defineConfig } from "@playwright/test";
import base from "./playwright.config.js";

export default defineConfig({ ...base, testDir: "bench", timeout: 1_200_000 });
