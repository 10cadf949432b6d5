// A p2p-media-loader page, unchanged but for its tracker URL, against
// Swarmcast: two Chromium pages (one context each) play the origin's live
// test stream with hls.js + the published p2p-media-loader-hlsjs 2.x, whose
// WebTorrent tracker client announces to our tracker's /announce. The pages
// must find each other through our tracker and exchange segments.
import { test, expect, type Page } from "@playwright/test";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { LiveEvent } from "./event.js";
import type { Counts } from "./p2pml/counts.js";


const DIST = resolve(import.meta.dirname, "../dist/e2e-p2pml");
const ev = new LiveEvent();
const counts = (p: Page): Promise<Counts> => p.evaluate(() => (window as unknown as { p2pml: Counts }).p2pml);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The site hosting the page: a static server on loopback (Chromium's local
 * network access checks refuse a page that is not itself served from a
 * local address when it opens a WebSocket to one). The stream comes from
 * the origin cross-origin, with the origin's CORS headers, as on a site.
 */
let site: Server;
let siteUrl = "";

test.describe.serial("p2p-media-loader against our tracker", () => {
  test.beforeAll(async () => {
    await ev.start("360p");
    site = createServer((req, res) => {
      const file = (req.url ?? "").split("?")[0].split("/").pop() ?? "";
      if (file !== "index.html" && file !== "page.js") {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": file.endsWith(".html") ? "text/html" : "text/javascript" });
      res.end(readFileSync(resolve(DIST, file)));
    });
    await new Promise<void>((ok) => site.listen(0, "127.0.0.1", ok));
    siteUrl = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
    await ev.waitLive("360p", 5);
  });
  test.afterAll(() => {
    site?.close();
    ev.stop();
  });

  test("two pages find each other through /announce and exchange segments", async ({ browser }) => {
    const tracker = `ws://${ev.tracker.addr}/announce`;
    const pages: Page[] = [];
    // The first page plays near the live edge (all from HTTP at first); the
    // second further behind, so that the segments it needs next are already
    // held by the first and are not yet urgent.
    for (const sync of [2, 6]) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
      page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") console.log(`console ${m.type()}: ${m.text()}`); });
      const q = new URLSearchParams({ tracker, src: `${ev.originUrl}/live/test/360p/index.m3u8`, sync: String(sync), hd: "1" });
      await page.goto(`${siteUrl}/index.html?${q}`);
      pages.push(page);
      await sleep(3_000);
    }
    let c: Counts[] = [];
    for (let i = 0; i < 60; i++) {
      await sleep(1_000);
      c = await Promise.all(pages.map(counts));
      if (c.some((x) => x.p2pBytes > 0) && c.every((x) => x.currentTime > 4)) break;
    }
    console.log(JSON.stringify(c));
    const wt = (await (await fetch(`http://${ev.tracker.addr}/v1/webtorrent/stats`)).json()) as Record<string, number>;
    console.log(JSON.stringify(wt));
    for (const x of c) {
      expect(x.errors).toEqual([]);
      expect(x.currentTime).toBeGreaterThan(4);
      expect(x.peersConnected).toBeGreaterThan(0);
    }
    // Bytes moved page to page: one downloaded over p2p, the other uploaded.
    expect(c[0].p2pBytes + c[1].p2pBytes).toBeGreaterThan(0);
    expect(c[0].uploadedBytes + c[1].uploadedBytes).toBeGreaterThan(0);
    // Our tracker saw both, relayed the offers and matched the answers.
    expect(wt.offers_relayed).toBeGreaterThan(0);
    expect(wt.answers_relayed).toBeGreaterThan(0);
    expect(wt.peers).toBe(2);
    for (const p of pages) await p.context().close();
  });
});
