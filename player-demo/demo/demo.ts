// The demo page: hls.js with the Swarmcast loader and a stats panel.
// Query string: tracker (ws URL), token, stream (default "test"),
// rendition (default: the first of the master playlist), origin (default:
// this page's origin), p2p=0 for HTTP only.
import Hls from "hls.js";
import { attachSwarmcast, type SwarmStats } from "../src/index.js";

const q = new URLSearchParams(location.search);
const origin = q.get("origin") ?? location.origin;
const stream = q.get("stream") ?? "test";
const rendition = q.get("rendition");
const src = rendition ? `${origin}/live/${stream}/${rendition}/index.m3u8` : `${origin}/live/${stream}/master.m3u8`;
const video = document.getElementById("video") as HTMLVideoElement;
const $ = (id: string) => document.getElementById(id) as HTMLElement;
const log = (m: string) => {
  const line = document.createElement("div");
  line.textContent = `${new Date().toISOString().slice(11, 19)} ${m}`;
  $("log").prepend(line);
};

const hls = new Hls();
const swarm = attachSwarmcast(hls, {
  tracker: q.get("tracker") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname}:7000/v1/ws`,
  token: q.get("token") ?? "",
  stream,
  origin,
  httpOnly: q.get("p2p") === "0",
});
hls.loadSource(src);
hls.attachMedia(video);
hls.on(Hls.Events.ERROR, (_e, d) => {
  log(`hls.js ${d.fatal ? "fatal " : ""}${d.details}`);
  // A stream that is not live yet (or an origin restarting): try again.
  if (d.fatal && d.type === Hls.ErrorTypes.NETWORK_ERROR) setTimeout(() => hls.loadSource(src), 2000);
  else if (d.fatal && d.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
});
swarm.addEventListener("warning", (e) => log((e as CustomEvent).detail.message));
swarm.addEventListener("tracker", (e) => log(`tracker ${(e as CustomEvent).detail.connected ? "connected" : "disconnected"}`));

const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
const history: { http: number; p2p: number }[] = [];
let last = { http: 0, p2p: 0 };

function draw(): void {
  const c = $("chart") as HTMLCanvasElement;
  const g = c.getContext("2d");
  if (!g) return;
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(1, ...history.map((h) => h.http + h.p2p));
  const w = c.width / 60;
  history.slice(-60).forEach((h, i) => {
    const hp = (h.p2p / max) * (c.height - 20);
    const hh = (h.http / max) * (c.height - 20);
    g.fillStyle = "#4cd964";
    g.fillRect(i * w, c.height - hp, w - 1, hp);
    g.fillStyle = "#f5a623";
    g.fillRect(i * w, c.height - hp - hh, w - 1, hh);
  });
  g.fillStyle = "#aaa";
  g.font = "20px system-ui";
  g.fillText("bytes per 2 s: HTTP (orange) vs peers (green)", 8, 22);
}

function render(s: SwarmStats): void {
  history.push({ http: s.httpBytes - last.http, p2p: s.p2pBytes - last.p2p });
  last = { http: s.httpBytes, p2p: s.p2pBytes };
  $("offload").textContent = `${(s.offload * 100).toFixed(1)} %`;
  $("latency").textContent = s.latencyMs === undefined ? "–" : `${(s.latencyMs / 1000).toFixed(1)} s`;
  $("http").textContent = mb(s.httpBytes);
  $("p2p").textContent = mb(s.p2pBytes);
  $("up").textContent = mb(s.uploadedBytes);
  $("qoe").textContent = `${s.startupMs === undefined ? "–" : (s.startupMs / 1000).toFixed(1) + " s"} / ${s.stalls}`;
  const rows = s.peers.map((p) => `<tr><td>${p.id}</td><td>${p.kind}</td><td>${p.open ? "open" : "connecting"}</td></tr>`);
  $("peers").innerHTML = rows.join("");
  draw();
}
swarm.addEventListener("stats", (e) => render((e as CustomEvent).detail as SwarmStats));

// For tests and curious people: the figures as JSON.
(window as unknown as Record<string, unknown>).swarmcast = {
  stats: () => ({ ...swarm.stats(), currentTime: video.currentTime, paused: video.paused }),
};
