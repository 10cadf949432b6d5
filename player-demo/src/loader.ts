// The hls.js fragment loader (`fLoader`): media segments come from the
// swarm (verified against the origin's hash) or HTTP; playlists and
// anything the swarm has no record of go to hls.js's own loader. It does
// not change any latency setting of the player: it only needs to know when
// the player will play a fragment (the fragment's start minus the current
// time), which becomes that segment's deadline in the viewer logic.

import type { Swarm } from "./driver.js";
import { startupMark } from "./marks.js";

/** What hls.js passes to a loader (the subset used here, typed loosely so that any hls.js 1.x fits). */
interface Ctx {
  url: string;
  frag?: { start: number; sn: number | "initSegment" };
  rangeStart?: number;
  rangeEnd?: number;
  [k: string]: unknown;
}
interface Stats {
  aborted: boolean;
  loaded: number;
  retry: number;
  total: number;
  chunkCount: number;
  bwEstimate: number;
  loading: { start: number; first: number; end: number };
  parsing: { start: number; end: number };
  buffering: { start: number; first: number; end: number };
}
interface Callbacks {
  onSuccess(resp: { url: string; data: ArrayBuffer }, stats: Stats, ctx: Ctx, details: unknown): void;
  onError(err: { code: number; text: string }, ctx: Ctx, details: unknown, stats: Stats): void;
  onTimeout(stats: Stats, ctx: Ctx, details: unknown): void;
  onAbort?(stats: Stats, ctx: Ctx, details: unknown): void;
}
interface LoaderLike {
  load(ctx: Ctx, config: unknown, cb: Callbacks): void;
  abort(): void;
  destroy(): void;
  stats: Stats;
  context: Ctx | null;
}
export type LoaderClass = new (config: unknown) => LoaderLike;

function newStats(): Stats {
  return {
    aborted: false,
    loaded: 0,
    retry: 0,
    total: 0,
    chunkCount: 0,
    bwEstimate: 0,
    loading: { start: 0, first: 0, end: 0 },
    parsing: { start: 0, end: 0 },
    buffering: { start: 0, first: 0, end: 0 },
  };
}

/** `/live/{stream}/{rendition}/{seq}.{ext}` → rendition and seq. */
export function parseSegmentUrl(url: string): { rendition: string; seq: number } | undefined {
  const m = /\/live\/[A-Za-z0-9_-]{1,64}\/([A-Za-z0-9_-]{1,16})\/(0|[1-9][0-9]{0,15})\.[a-z0-9]+(\?.*)?$/.exec(url);
  return m ? { rendition: m[1], seq: Number(m[2]) } : undefined;
}

/**
 * A loader class for hls.js's `fLoader` that uses `swarm`. `Fallback` is
 * hls.js's own loader class (`hls.config.loader`); `media` returns the
 * video element (or null before it is attached).
 */
export function fragmentLoader(swarm: Swarm, Fallback: LoaderClass, media: () => HTMLMediaElement | null): LoaderClass {
  return class SwarmcastFragmentLoader implements LoaderLike {
    stats = newStats();
    context: Ctx | null = null;
    private aborted = false;
    private fallback: LoaderLike | undefined;
    constructor(private readonly config: unknown) {}

    load(ctx: Ctx, config: unknown, cb: Callbacks): void {
      this.context = ctx;
      this.stats.loading.start = performance.now();
      const seg = parseSegmentUrl(ctx.url);
      // hls.js passes rangeStart = rangeEnd = 0 for a whole fragment.
      const ranged = (ctx.rangeStart ?? 0) > 0 || (ctx.rangeEnd ?? 0) > 0;
      const frag = ctx.frag;
      let pending: Promise<Uint8Array> | undefined;
      if (seg && !ranged && frag && typeof frag.sn === "number") {
        // Before playback starts the player needs every fragment now (a
        // startup that waited for the swarm would be slower than HTTP);
        // once it plays, a fragment is needed when the playhead gets there.
        const video = media();
        const playing = video !== null && !video.paused && video.readyState >= 3 && video.currentTime > 0;
        const ahead = playing ? Math.max(0, frag.start - video.currentTime) / Math.max(0.1, video.playbackRate || 1) : 0;
        pending = swarm.get(seg.rendition, seg.seq, performance.now() + ahead * 1000, ctx.url);
        if (!playing) startupMark(`fragment ${frag.sn} ${pending ? "swarm" : "http"}`);
      }
      if (!pending) {
        this.viaFallback(ctx, config, cb);
        return;
      }
      pending.then(
        (data) => {
          if (this.aborted) return;
          const t = performance.now();
          const s = this.stats;
          s.loading.first = s.loading.first || t;
          s.loading.end = t;
          s.loaded = s.total = data.length;
          s.chunkCount = 1;
          if (swarm.player.startupMs === undefined) startupMark(`fragment ${String(frag?.sn)} ready`);
          const copy = data.slice().buffer as ArrayBuffer; // hls.js may transfer it to a worker
          cb.onSuccess({ url: ctx.url, data: copy }, s, ctx, null);
        },
        (e: unknown) => {
          if (!this.aborted) cb.onError({ code: 0, text: String(e) }, ctx, null, this.stats);
        },
      );
    }

    private viaFallback(ctx: Ctx, config: unknown, cb: Callbacks): void {
      const inner = new Fallback(this.config);
      this.fallback = inner;
      this.stats = inner.stats;
      inner.load(ctx, config, {
        ...cb,
        onSuccess: (resp, stats, c, details) => {
          swarm.countDirectHttp(resp.data instanceof ArrayBuffer ? resp.data.byteLength : 0);
          if (swarm.player.startupMs === undefined && c.frag) startupMark(`fragment ${String(c.frag.sn)} ready`);
          cb.onSuccess(resp, stats, c, details);
        },
      });
    }

    abort(): void {
      // hls.js's own loader calls back into hls.js on abort, which may
      // destroy this loader: abort once.
      if (this.aborted) return;
      this.aborted = true;
      this.stats.aborted = true;
      this.fallback?.abort();
    }

    destroy(): void {
      const inner = this.fallback;
      this.fallback = undefined;
      this.aborted = true;
      inner?.destroy();
      this.context = null;
    }
  };
}
