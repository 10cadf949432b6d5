// Cells in a real browser: a tracker whose streams split into cells of two
// viewers, spread as over tracker nodes (--tier-url names the tracker
// itself, so each cell is a swarm of its own fed from the stream's home).
// A native peer and one page fill the home's cell; the next two pages are
// redirected to cell 1, reconnect with it, play, and share with each other
// only.
import { test, expect, type BrowserContext, type Page } from "@playwright/test";
import { createServer } from "node:net";
import { LiveEvent } from "./event.js";

interface PageStats {
  peerId: string;
  currentTime: number;
  p2pBytes: number;
  stalls: number;
  hashFailures: number;
  peers: { id: string; kind: string; open: boolean }[];
}

const ev = new LiveEvent();
const contexts: BrowserContext[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const stats = (p: Page): Promise<PageStats> => p.evaluate(() => (window as unknown as { swarmcast: { stats(): PageStats } }).swarmcast.stats());

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (a && typeof a === "object" ? ok(a.port) : fail(new Error("no port"))));
    });
  });
}

test.describe.serial("cells", () => {
  test.beforeAll(async () => {
    const port = await freePort();
    await ev.start("360p", [
      "--listen", `127.0.0.1:${port}`,
      "--tier-url", `ws://127.0.0.1:${port}/v1/ws`,
      "--cell-viewers", "2",
      "--stripes", "0",
    ]);
    await ev.edge();
    await ev.waitLive();
  });
  test.afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    ev.stop();
  });

  test("pages redirected to another cell play and share within it", async ({ browser }) => {
    const pages: Page[] = [];
    for (let i = 0; i < 3; i++) {
      const ctx = await browser.newContext({ permissions: ["camera", "microphone"] });
      contexts.push(ctx);
      const page = await ctx.newPage();
      page.on("pageerror", (e) => console.log(`page error: ${e.stack ?? e.message}`));
      await page.goto(ev.pageUrl());
      pages.push(page);
      // One at a time: each joins, and its cell's node reports it to the
      // home (each second; a joiner redirected in the last 2 s counts on
      // top of the report), before the next comes.
      await sleep(3_500);
    }
    await sleep(12_000);
    const before = await Promise.all(pages.map(stats));
    await sleep(20_000);
    const after = await Promise.all(pages.map(stats));
    const home = await ev.stats();
    const cell = await ev.stats(1);
    console.log(`home cells ${JSON.stringify(home.cells)}, cell 1 viewers ${cell.viewers}`);
    expect(home.cells).toEqual([2, 2]);
    expect(cell.viewers).toBe(2);
    for (const [i, s] of after.entries()) {
      console.log(`page ${i}: t=${s.currentTime.toFixed(1)} p2p=${s.p2pBytes} stalls=${s.stalls} peers=${JSON.stringify(s.peers)}`);
      expect(s.currentTime - before[i].currentTime, `page ${i} plays`).toBeGreaterThan(15);
      expect(s.stalls, `page ${i} stalls`).toBe(0);
      expect(s.hashFailures).toBe(0);
    }
    // Pages 1 and 2 are cell 1: each other's only peer, and they share.
    for (const i of [1, 2]) {
      const other = after[3 - i].peerId;
      expect(after[i].peers.map((p) => p.id), `page ${i}'s peers`).toEqual([other]);
    }
    expect(after[1].p2pBytes + after[2].p2pBytes, "bytes shared within cell 1").toBeGreaterThan(0);
  });
});
