// The web player in a real browser: three Chromium pages (one context each,
// so no shared HTTP cache) and native edge peers watch the ffmpeg test
// stream through a real tracker and origin, at hls.js's default latency.
import { test, expect, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { LiveEvent, type Proc } from "./event.js";

interface PageStats {
  currentTime: number;
  paused: boolean;
  httpBytes: number;
  p2pBytes: number;
  uploadedBytes: number;
  segments: number;
  hashFailures: number;
  peersDropped: number;
  stalls: number;
  stallMs: number;
  waits: number;
  startupMs?: number;
  trace: { kind: string; seq?: number; at: number; neededAt?: number; doneAt?: number; source?: string; position?: number; buffered?: string; readyState?: number }[];
  peers: { id: string; kind: string; open: boolean }[];
}

const ev = new LiveEvent();
let native: Proc;
const viewers: { ctx: BrowserContext; page: Page }[] = [];

async function openViewer(browser: Browser): Promise<Page> {
  const ctx = await browser.newContext({ permissions: ["camera", "microphone"] });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.log(`page error: ${e.stack ?? e.message}`));
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") console.log(`console ${m.type()}: ${m.text()} ${m.location().url}`); });
  page.on("response", (r) => { if (r.status() >= 400) console.log(`HTTP ${r.status()} ${r.url()}`); });
  await page.goto(ev.pageUrl());
  viewers.push({ ctx, page });
  return page;
}

const stats = (p: Page): Promise<PageStats> => p.evaluate(() => (window as unknown as { swarmcast: { stats(): PageStats } }).swarmcast.stats());
/** The page's fragment and stall trace, a line each. */
const traceText = (s: PageStats): string =>
  s.trace
    .map((e) =>
      e.kind !== "fragment"
        ? `  ${e.kind.toUpperCase()} at ${e.at} until ${e.doneAt ?? "-"} position ${e.position?.toFixed(2)} buffered ${e.buffered} readyState ${e.readyState}`
        : `  seq ${e.seq} asked ${e.at} needed ${e.neededAt} done ${e.doneAt ?? "-"} (${e.source ?? "pending"})`,
    )
    .join("\n");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test.describe.serial("web player", () => {
  test.beforeAll(async () => {
    await ev.start("360p");
    native = await ev.edge();
    await ev.waitLive();
  });
  test.afterAll(async () => {
    for (const v of viewers) await v.ctx.close().catch(() => undefined);
    ev.stop();
  });

  test("three pages and a native peer play the live stream and share it both ways", async ({ browser }) => {
    const pages = [await openViewer(browser), await openViewer(browser), await openViewer(browser)];
    await sleep(12_000);
    const before = await Promise.all(pages.map(stats));
    await sleep(30_000);
    const after = await Promise.all(pages.map(stats));
    for (const [i, s] of after.entries()) {
      console.log((await pages[i].locator("#log").innerText()).split("\n").slice(0, 8).join(" / "));
      console.log(`page ${i}: t=${s.currentTime.toFixed(1)} http=${s.httpBytes} p2p=${s.p2pBytes} up=${s.uploadedBytes} segments=${s.segments} stalls=${s.stalls} waits=${s.waits} startup=${s.startupMs} peers=${JSON.stringify(s.peers)}`);
      if (s.waits > 0) console.log(`page ${i} trace (ms since start):\n${traceText(s)}`);
      expect(s.currentTime - before[i].currentTime, `page ${i} plays`).toBeGreaterThan(25);
      expect(s.stalls, `page ${i} stalls`).toBe(0);
      expect(s.hashFailures).toBe(0);
      expect(s.segments).toBeGreaterThan(10);
    }
    const p2p = after.reduce((n, s) => n + s.p2pBytes, 0);
    expect(p2p, "bytes flowed between peers").toBeGreaterThan(0);
    expect(after.some((s) => s.peers.some((p) => p.kind === "browser" && p.open)), "browser-browser links").toBe(true);
    expect(after.some((s) => s.peers.some((p) => p.kind === "native" && p.open)), "browser-native links").toBe(true);
    // Browser -> native and native -> browser, from the native peer's counters.
    expect(await ev.metric(native, "swarmcast_edge_bytes_total", 'source="p2p"'), "native got bytes from browsers").toBeGreaterThan(0);
    expect(await ev.metric(native, "swarmcast_edge_uploaded_bytes_total"), "native served browsers").toBeGreaterThan(0);
    await pages[0].screenshot({ path: "test-results/demo-page.png" });
  });

  test("a page that joins late catches up from peers", async ({ browser }) => {
    const late = await openViewer(browser);
    await sleep(20_000);
    const s = await stats(late);
    console.log(`late page: t=${s.currentTime.toFixed(1)} http=${s.httpBytes} p2p=${s.p2pBytes} stalls=${s.stalls}`);
    expect(s.currentTime).toBeGreaterThan(5);
    expect(s.p2pBytes).toBeGreaterThan(0);
    expect(s.stalls).toBe(0);
  });

  test("a page closed mid-transfer does not stall the others", async () => {
    const gone = viewers.splice(1, 1)[0];
    await gone.ctx.close();
    const before = await Promise.all(viewers.map((v) => stats(v.page)));
    await sleep(15_000);
    const after = await Promise.all(viewers.map((v) => stats(v.page)));
    for (const [i, s] of after.entries()) {
      expect(s.currentTime - before[i].currentTime, `viewer ${i} plays on`).toBeGreaterThan(10);
      expect(s.stalls - before[i].stalls, `viewer ${i} stalls`).toBe(0);
    }
  });

  test("a corrupting native peer is dropped by the browsers and playback continues", async () => {
    await ev.edge(["--corrupt-uploads"]);
    const before = await Promise.all(viewers.map((v) => stats(v.page)));
    let caught = 0;
    for (let i = 0; i < 12 && caught === 0; i++) {
      await sleep(5_000);
      const now = await Promise.all(viewers.map((v) => stats(v.page)));
      caught = now.reduce((n, s) => n + s.hashFailures, 0);
    }
    const after = await Promise.all(viewers.map((v) => stats(v.page)));
    console.log(`hash failures ${caught}, dropped ${after.map((s) => s.peersDropped)}`);
    expect(caught, "a browser caught corrupted bytes").toBeGreaterThan(0);
    expect(after.reduce((n, s) => n + s.peersDropped, 0)).toBeGreaterThan(0);
    expect(await ev.metric(ev.tracker, "swarmcast_tracker_peer_reports_total", 'reason="hash_mismatch"')).toBeGreaterThan(0);
    for (const [i, s] of after.entries()) {
      expect(s.currentTime - before[i].currentTime, `viewer ${i} plays on`).toBeGreaterThan(5);
      expect(s.stalls - before[i].stalls, `viewer ${i} stalls`).toBe(0);
    }
  });

  // The stall counter itself: with the origin frozen for longer than the
  // players' buffer, every page runs out of media, counts one stall, and
  // plays on once the origin is back.
  test("an origin frozen for 12 s shows as one stall on each page, and playback resumes", async () => {
    const before = await Promise.all(viewers.map((v) => stats(v.page)));
    ev.pause(ev.origin);
    await sleep(12_000);
    ev.resume(ev.origin);
    await sleep(15_000);
    const after = await Promise.all(viewers.map((v) => stats(v.page)));
    for (const [i, s] of after.entries()) {
      console.log(`viewer ${i}: stalls ${before[i].stalls} -> ${s.stalls}, stalled ${s.stallMs} ms, t ${before[i].currentTime.toFixed(1)} -> ${s.currentTime.toFixed(1)}`);
      expect(s.stalls - before[i].stalls, `viewer ${i} stalls`).toBeGreaterThanOrEqual(1);
      expect(s.stallMs, `viewer ${i} stalled time`).toBeGreaterThan(1000);
      const later = await stats(viewers[i].page);
      await sleep(3000);
      expect((await stats(viewers[i].page)).currentTime - later.currentTime, `viewer ${i} plays again`).toBeGreaterThan(1.5);
    }
  });
});
