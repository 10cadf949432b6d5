// @swarmcast/player: live HLS segments from a WebRTC swarm for hls.js.
//
//   const hls = new Hls();
//   const swarm = attachSwarmcast(hls, { tracker, token, stream });
//
// Playlists still come from the origin; media segments come from peers or,
// before the playback deadline, from the origin over HTTP. Every segment is
// checked against the origin's SHA-256 before the player gets it.

import { Swarm, type SwarmConfig, type SwarmStats, type PeerView } from "./driver.js";
import { fragmentLoader, type LoaderClass } from "./loader.js";
import { startupMark } from "./marks.js";

export { Swarm, fragmentLoader };
export type { SwarmConfig, SwarmStats, PeerView };
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
 * element for startup time, stalls and latency, and stops when it is
 * destroyed. Returns the swarm (an EventTarget: "stats", "peers",
 * "segment", "tracker", "warning").
 */
export function attachSwarmcast(hls: HlsLike, cfg: SwarmConfig): Swarm {
  const swarm = new Swarm(cfg);
  hls.config.fLoader = fragmentLoader(swarm, hls.config.loader as LoaderClass, () => hls.media);
  const started = performance.now();
  // User-timing marks of the startup (DevTools' performance panel shows them).
  startupMark("attach");
  let stallStart: number | undefined;
  let playing = false;
  const watch = (video: HTMLMediaElement) => {
    video.addEventListener("playing", () => {
      if (!playing) {
        playing = true;
        swarm.player.startupMs = performance.now() - started;
        startupMark("playing");
        swarm.releaseLinks();
      }
      if (stallStart !== undefined) {
        swarm.player.stallMs += performance.now() - stallStart;
        stallStart = undefined;
      }
    });
    video.addEventListener("waiting", () => {
      if (playing && stallStart === undefined) {
        stallStart = performance.now();
        swarm.player.stalls++;
      }
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
