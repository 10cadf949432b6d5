// @swarmcast/player: live HLS segments from a WebRTC swarm for hls.js.
//
//   const hls = new Hls();
//   const swarm = attachSwarmcast(hls, { tracker, token, stream });
//
// Playlists still come from the origin; media segments come from peers or,
// before the playback deadline, from the origin over HTTP. Every segment is
// checked against the origin's SHA-256 before the player gets it.

import { Swarm, type SwarmConfig, type SwarmStats, type PeerView, type TraceEntry } from "./driver.js";
import { fragmentLoader, type LoaderClass } from "./loader.js";
import { startupMark } from "./marks.js";

/** A `waiting` with less media than this buffered ahead of the playhead (s) is a stall at once. */
const STARVED_S = 0.1;
/**
 * A `waiting` with media buffered ahead counts as a stall once it lasts this
 * long (ms): hls.js's own threshold for a stalled playhead.
 */
const STALL_MIN_MS = 250;

export { Swarm, fragmentLoader };
export type { SwarmConfig, SwarmStats, PeerView, TraceEntry };
export { parseSegmentUrl } from "./loader.js";
export { decodeFrame, encodeFrame, FrameError, MAX_FRAME } from "./wire.js";
export { decodeServer, encodeClient, MessageError } from "./tracker.js";

/** The parts of an hls.js instance used here (any hls.js 1.x). */
export interface HlsLike {
  config: { loader: unknown; fLoader?: unknown };
  media: HTMLMediaElement | null;
  latency?: number;
  on(event: string, fn: (...args: unknown[]) => void): void;
}

/**
 * Puts the swarm under `hls`: sets its fragment loader, watches its video
 * element for startup time, stalls (a `waiting` out of media, or one
 * lasting STALL_MIN_MS) and latency, and stops when it is
 * destroyed. Returns the swarm (an EventTarget: "stats", "peers",
 * "segment", "tracker", "warning").
 */
export function attachSwarmcast(hls: HlsLike, cfg: SwarmConfig): Swarm {
  const swarm = new Swarm(cfg);
  hls.config.fLoader = fragmentLoader(swarm, hls.config.loader as LoaderClass, () => hls.media);
  const started = performance.now();
  // User-timing marks of the startup (DevTools' performance panel shows them).
  startupMark("attach");
  let playing = false;
  // An open `waiting`: when it began, whether it counts as a stall yet,
  // its trace entry and the timer that counts it once it lasts.
  interface Wait {
    start: number;
    counted: boolean;
    entry: TraceEntry;
    timer?: ReturnType<typeof setTimeout>;
  }
  let wait = undefined as Wait | undefined;
  const countStall = (w: Wait) => {
    if (w.counted) return;
    w.counted = true;
    w.entry.kind = "stall";
    swarm.player.stalls++;
  };
  const watch = (video: HTMLMediaElement) => {
    video.addEventListener("playing", () => {
      if (!playing) {
        playing = true;
        swarm.player.startupMs = performance.now() - started;
        startupMark("playing");
        swarm.releaseLinks();
      }
      const w = wait;
      if (w !== undefined) {
        if (w.timer !== undefined) clearTimeout(w.timer);
        if (w.counted) swarm.player.stallMs += performance.now() - w.start;
        w.entry.doneAt = swarm.clock();
        wait = undefined;
      }
    });
    video.addEventListener("waiting", () => {
      if (!playing || wait !== undefined) return;
      swarm.player.waits++;
      const b = video.buffered;
      const entry: TraceEntry = { kind: "wait", at: swarm.clock(), position: video.currentTime, buffered: ranges(b), readyState: video.readyState };
      swarm.trace(entry);
      const w: Wait = { start: performance.now(), counted: false, entry };
      wait = w;
      // Out of media: a stall at once. With media buffered ahead, the
      // decoder is catching up (Chromium does that for a few ms after
      // startup): a stall once it lasts STALL_MIN_MS.
      if (bufferedAhead(video) < STARVED_S) countStall(w);
      else w.timer = setTimeout(() => countStall(w), STALL_MIN_MS);
    });
  };
  if (hls.media) watch(hls.media);
  hls.on("hlsMediaAttached", () => {
    if (hls.media) watch(hls.media);
  });
  const latency = setInterval(() => {
    const l = hls.latency;
    if (playing && typeof l === "number" && Number.isFinite(l) && l > 0) swarm.player.latencyMs = l * 1000;
  }, 1000);
  hls.on("hlsDestroying", () => {
    clearInterval(latency);
    swarm.destroy();
  });
  return swarm;
}

function ranges(r: TimeRanges): string {
  const out: string[] = [];
  for (let i = 0; i < r.length; i++) out.push(`${r.start(i).toFixed(3)}-${r.end(i).toFixed(3)}`);
  return out.join(" ");
}

/** Seconds of media buffered ahead of the playhead. */
function bufferedAhead(v: HTMLMediaElement): number {
  const b = v.buffered;
  for (let i = 0; i < b.length; i++) if (b.start(i) <= v.currentTime + 0.05 && v.currentTime < b.end(i)) return b.end(i) - v.currentTime;
  return 0;
}
