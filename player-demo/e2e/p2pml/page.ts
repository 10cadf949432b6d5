// A page as sites that use p2p-media-loader build it, unchanged but for the
// tracker it announces to: hls.js with the published p2p-media-loader-hlsjs
// engine, its WebTorrent tracker client pointed at Swarmcast's tracker. The
// browser test (e2e/p2pml.spec.ts) reads window.p2pml.
import Hls from "hls.js";
import { HlsJsP2PEngine } from "p2p-media-loader-hlsjs";
import type { Counts } from "./counts.js";


const q = new URLSearchParams(location.search);
const counts: Counts = { httpBytes: 0, p2pBytes: 0, uploadedBytes: 0, peersConnected: 0, peersOpen: 0, errors: [], currentTime: 0 };
(window as unknown as { p2pml: Counts }).p2pml = counts;

const HlsWithP2P = HlsJsP2PEngine.injectMixin(Hls);
const video = document.querySelector("video") as HTMLVideoElement;
const hls = new HlsWithP2P({
  // How far behind live this viewer plays, in target durations.
  liveSyncDurationCount: Number(q.get("sync") ?? 3),
  p2p: {
    core: {
      announceTrackers: [q.get("tracker") ?? ""],
      // Loopback only: host candidates, no STUN.
      rtcConfig: { iceServers: [] },
      // Live: segments more than this many seconds ahead of the playhead
      // may come from peers (15 s, the default, is all of a live window
      // at the default latency).
      highDemandTimeWindow: Number(q.get("hd") ?? 15),
    },
    onHlsJsCreated(h) {
      h.p2pEngine.addEventListener("onChunkDownloaded", (bytes, source) => {
        if (source === "p2p") counts.p2pBytes += bytes;
        else counts.httpBytes += bytes;
      });
      h.p2pEngine.addEventListener("onChunkUploaded", (bytes) => {
        counts.uploadedBytes += bytes;
      });
      h.p2pEngine.addEventListener("onPeerConnect", () => {
        counts.peersConnected += 1;
        counts.peersOpen += 1;
      });
      h.p2pEngine.addEventListener("onPeerClose", () => {
        counts.peersOpen -= 1;
      });
      const text = (x: unknown): string => (x instanceof Error ? x.message : JSON.stringify(x));
      h.p2pEngine.addEventListener("onTrackerError", (e) => {
        counts.errors.push(`tracker error: ${text(e.error)}`);
      });
      h.p2pEngine.addEventListener("onTrackerWarning", (e) => {
        counts.errors.push(`tracker warning: ${text(e.warning)}`);
      });
    },
  },
});
hls.on(Hls.Events.ERROR, (_e, d) => {
  if (d.fatal) counts.errors.push(`hls: ${d.details}`);
});
video.addEventListener("timeupdate", () => {
  counts.currentTime = video.currentTime;
});
hls.attachMedia(video);
hls.loadSource(q.get("src") ?? "");
void video.play().catch(() => undefined);
