// Browser benchmark: BROWSERS pages (one context each) + NATIVES native edge
// peers watch the test stream for SECONDS at hls.js's default latency,
// first with the swarm, then with the swarm switched off (pages `p2p=0`,
// natives `--no-swarm`), in the same run. Prints and writes (BENCH_JSON)
// offload, origin copies per segment, stalls, startup, live latency, CPU.
//
//   cd player-demo && SWARMCAST_BIN_DIR=../target/release \
//     unshare -n -- sh -c 'ip link set lo up && npx playwright test -c playwright.bench.config.ts'
import { test, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { readFileSync, writeFileSync } from "node:fs";
import { LiveEvent, type Proc } from "../e2e/event.js";

const BROWSERS = Number(process.env.BROWSERS ?? 6);
const NATIVES = Number(process.env.NATIVES ?? 2);
const SECONDS = Number(process.env.SECONDS_PER_EVENT ?? 180);
const WARMUP = 20;
const REJOINS = Number(process.env.REJOINS ?? 3);
const PAIRS = Number(process.env.PAIRS ?? 8);

interface PageStats {
  currentTime: number;
  httpBytes: number;
  p2pBytes: number;
  stalls: number;
  stallMs: number;
  startupMs?: number;
  latencyMs?: number;
  segments: number;
  hashFailures: number;
}

/** A joiner's startup steps: ms after `swarmcast:attach`, by mark or resource. */
type Timeline = Record<string, number>;
const timeline = (p: Page): Promise<Timeline> =>
  p.evaluate(() => {
    const t0 = performance.getEntriesByName("swarmcast:attach")[0]?.startTime ?? 0;
    const out: Record<string, number> = {};
    for (const e of performance.getEntriesByType("mark")) {
      if (e.name.startsWith("swarmcast:") && !(e.name in out)) out[e.name.slice(10)] = Math.round(e.startTime - t0);
    }
    for (const e of performance.getEntriesByType("resource") as PerformanceResourceTiming[]) {
      const m = /\/([^/]+\.(m3u8|ts))$/.exec(new URL(e.name).pathname);
      if (m && e.startTime >= t0 && !(`get ${m[1]}` in out)) {
        out[`get ${m[1]}`] = Math.round(e.startTime - t0);
        out[`got ${m[1]}`] = Math.round(e.responseEnd - t0);
      }
    }
    return out;
  });

/** Opens a new page (its own context) in slot `i`, waits for its startup; returns startup ms and its timeline. */
async function join(browser: Browser, ev: LiveEvent, ctxs: BrowserContext[], pages: Page[], i: number, extra: string) {
  await ctxs[i].close();
  ctxs[i] = await browser.newContext({ permissions: ["camera", "microphone"] });
  pages[i] = await ctxs[i].newPage();
  await pages[i].goto(ev.pageUrl(extra));
  for (let t = 0; t < 150; t++) {
    await sleep(100);
    const st = await stats(pages[i]);
    if (st.startupMs !== undefined) return { startupMs: st.startupMs, steps: await timeline(pages[i]) };
  }
  return undefined;
}

const stats = (p: Page): Promise<PageStats> => p.evaluate(() => (window as unknown as { swarmcast: { stats(): PageStats } }).swarmcast.stats());
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (v: number[]) => (v.length ? [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] : NaN);

/** Busy and total jiffies of the whole machine. */
function cpu(): [number, number] {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  const total = f.reduce((a, b) => a + b, 0);
  return [total - idle, total];
}

async function event(browser: Browser, swarm: boolean) {
  const ev = new LiveEvent();
  await ev.start("360p");
  const natives: Proc[] = [];
  for (let i = 0; i < NATIVES; i++) natives.push(await ev.edge(swarm ? [] : ["--no-swarm"]));
  await ev.waitLive();
  const ctxs: BrowserContext[] = [];
  const pages: Page[] = [];
  for (let i = 0; i < BROWSERS; i++) {
    const ctx = await browser.newContext({ permissions: ["camera", "microphone"] });
    const page = await ctx.newPage();
    await page.goto(ev.pageUrl(swarm ? "" : "&p2p=0"));
    ctxs.push(ctx);
    pages.push(page);
  }
  await sleep(WARMUP * 1000);
  const egress = () => ev.metric(ev.origin, "swarmcast_origin_egress_bytes_total", 'kind="segment"');
  const sizes = new Map<number, number>();
  const poll = async () => {
    const idx = (await (await fetch(`${ev.originUrl}/live/test/360p/index.json`)).json()) as { segments: { id: string; size: number }[] };
    for (const s of idx.segments) sizes.set(Number(s.id.split("/")[2]), s.size);
  };
  await poll();
  const firstSeq = Math.max(...sizes.keys()) + 1;
  const e0 = await egress();
  const c0 = cpu();
  const s0 = await Promise.all(pages.map(stats));
  const late0 = await Promise.all(natives.map((n) => ev.metric(n, "swarmcast_edge_late_segments_total")));
  for (let t = 0; t < SECONDS; t += 10) {
    await sleep(10_000);
    await poll();
    process.stderr.write(`\r${swarm ? "swarm" : "http "} ${t + 10}/${SECONDS} s`);
  }
  process.stderr.write("\n");
  const e1 = await egress();
  const c1 = cpu();
  const s1 = await Promise.all(pages.map(stats));
  const late1 = await Promise.all(natives.map((n) => ev.metric(n, "swarmcast_edge_late_segments_total")));
  const lastSeq = Math.max(...sizes.keys());
  // Segments published in the span (the newest may still be in flight; egress covers what was fetched).
  const published = [...sizes.entries()].filter(([q]) => q >= firstSeq && q <= lastSeq).reduce((n, [, s]) => n + s, 0);
  const tracker = (await ev.stats()) as { offload: number; http_bytes: number; p2p_bytes: number };
  const http = s1.reduce((n, s, i) => n + s.httpBytes - s0[i].httpBytes, 0);
  const p2p = s1.reduce((n, s, i) => n + s.p2pBytes - s0[i].p2pBytes, 0);
  // More startup samples: each page is closed and a new one joins the
  // running event, REJOINS times (one at a time, the others keep playing).
  const rejoin: number[] = [];
  for (let round = 0; round < REJOINS; round++) {
    for (let i = 0; i < pages.length; i++) {
      const j = await join(browser, ev, ctxs, pages, i, swarm ? "" : "&p2p=0");
      if (j) rejoin.push(j.startupMs);
      await sleep(3000);
    }
  }
  // Paired joins into the same running event (swarm events only): a page
  // with the swarm and a page without it join one after the other, in
  // alternating order, so both see the same machine and the same swarm.
  const paired: { swarm: number[]; http: number[]; steps: { mode: string; startupMs: number; steps: Timeline }[] } = { swarm: [], http: [], steps: [] };
  for (let k = 0; swarm && k < PAIRS; k++) {
    const order = k % 2 === 0 ? ["swarm", "http"] : ["http", "swarm"];
    for (const mode of order) {
      const j = await join(browser, ev, ctxs, pages, (2 * k + (mode === "swarm" ? 0 : 1)) % pages.length, mode === "swarm" ? "" : "&p2p=0");
      if (j) {
        (mode === "swarm" ? paired.swarm : paired.http).push(j.startupMs);
        paired.steps.push({ mode, ...j });
      }
      await sleep(3000);
    }
  }
  const r = {
    mode: swarm ? "swarm" : "http",
    browsers: BROWSERS,
    natives: NATIVES,
    seconds: SECONDS,
    segments: lastSeq - firstSeq + 1,
    origin_egress_bytes: e1 - e0,
    origin_copies_per_segment: published > 0 ? (e1 - e0) / published : NaN,
    offload_browsers: http + p2p > 0 ? p2p / (http + p2p) : 0,
    offload_all_tracker: tracker.offload,
    stalls_browsers: s1.reduce((n, s, i) => n + s.stalls - s0[i].stalls, 0),
    stall_ms_browsers: s1.reduce((n, s, i) => n + s.stallMs - s0[i].stallMs, 0),
    late_segments_natives: late1.reduce((n, v, i) => n + v - late0[i], 0),
    played_seconds_min: Math.min(...s1.map((s, i) => s.currentTime - s0[i].currentTime)),
    startup_ms_p50: median(s1.map((s) => s.startupMs ?? NaN).filter(Number.isFinite)),
    startup_ms: s1.map((s) => Math.round(s.startupMs ?? -1)),
    rejoin_startup_ms_p50: median(rejoin),
    rejoin_startup_ms: rejoin.map(Math.round),
    paired_startup_ms_p50: { swarm: median(paired.swarm), http: median(paired.http) },
    paired_startup_ms: { swarm: paired.swarm.map(Math.round), http: paired.http.map(Math.round) },
    paired_steps: paired.steps,
    latency_ms_p50: median(s1.map((s) => s.latencyMs ?? NaN).filter(Number.isFinite)),
    hash_failures: s1.reduce((n, s) => n + s.hashFailures, 0),
    cpu_cores: ((c1[0] - c0[0]) / (c1[1] - c0[1])) * 2,
  };
  for (const c of ctxs) await c.close();
  ev.stop();
  await sleep(2000);
  return r;
}

test("browsers and native peers, swarm vs HTTP only", async ({ browser }) => {
  const swarm = await event(browser, true);
  const http = await event(browser, false);
  const report = {
    date: new Date().toISOString(),
    swarm,
    http,
    startup_ratio: swarm.startup_ms_p50 / http.startup_ms_p50,
    rejoin_startup_ratio: swarm.rejoin_startup_ms_p50 / http.rejoin_startup_ms_p50,
    paired_startup_ratio: swarm.paired_startup_ms_p50.swarm / swarm.paired_startup_ms_p50.http,
    latency_diff_ms: swarm.latency_ms_p50 - http.latency_ms_p50,
  };
  console.log(JSON.stringify(report, null, 2));
  if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(report, null, 2));
});
