// The viewer logic: a port of the Rust swarm core (swarm-core/src/lib.rs)
// with the same decisions and the same driver contract, and no I/O (no
// clock, no sockets, no timers; randomness from a seed). The Rust core and
// this one are kept identical in behaviour by running the same scenarios
// (swarm-core/tests/virtual_time.rs, test/core.test.ts).
//
// One difference of shape: the browser's SHA-256 (WebCrypto) is
// asynchronous, so a complete assembly becomes a `verify` action and the
// driver answers with `handleVerified`; the Rust core hashes in place.
//
// Decisions (as in Rust):
// - what to fetch next: wanted segments by playback deadline;
// - from whom: a neighbour that has it, a free download slot, fastest first;
// - too slow: when the observed rate cannot finish before deadline - margin;
// - HTTP: at once for a first fetcher, otherwise at the last moment at which
//   HTTP still meets the deadline (deadline - margin - size / http_rate);
// - resuming: the next source starts at the first missing byte (Range);
// - serving: within upload slots and an upload budget;
// - keeping: the newest window_segments;
// - bad neighbours: bytes not matching the origin's hash are never
//   delivered; their senders are dropped and reported.

import type { Frame, RejectReason } from "./wire.js";
import { mulberry32 as rng } from "./prng.js";
import type { SegmentMeta } from "./tracker.js";
import { segmentRef } from "./tracker.js";

export type Millis = number;

export interface CoreConfig {
  rendition: string;
  windowSegments: number;
  playbackDelayMs: Millis;
  marginMs: Millis;
  httpRate: number; // bytes per ms, until measured
  peerRate: number; // bytes per ms, until measured
  downloadsPerPeer: number;
  maxDownloads: number;
  uploadSlots: number; // at most
  uploadRate: number; // this node's uplink, bytes per ms (0 = unknown; see uploadSlotsFor)
  uploadBudget: number; // bytes per second, 0 = unlimited
  maxRequestsPerSec: number;
}

/**
 * Uploads allowed at once for a segment of `size` bytes lasting
 * `durationMs` (as Rust's `upload_slots`): with a known uplink, as many as
 * keep each one at twice the media rate or more (at least one, at most
 * `uploadSlots`): a receiver then has the whole segment sooner and relays
 * it sooner.
 */
export function uploadSlotsFor(cfg: CoreConfig, size: number, durationMs: number): number {
  if (cfg.uploadRate <= 0 || size === 0 || durationMs === 0) return cfg.uploadSlots;
  const fit = Math.floor(cfg.uploadRate / ((2 * size) / durationMs));
  return Math.min(Math.max(fit, 1), Math.max(cfg.uploadSlots, 1));
}

/** Defaults for a viewer of `rendition` with 2-second segments (as Rust's `CoreConfig::viewer`). */
export function viewerConfig(rendition: string): CoreConfig {
  return {
    rendition,
    windowSegments: 30,
    playbackDelayMs: 4000,
    marginMs: 500,
    httpRate: 500,
    peerRate: 2000,
    downloadsPerPeer: 2,
    maxDownloads: 6,
    uploadSlots: 6,
    uploadRate: 0,
    uploadBudget: 0,
    maxRequestsPerSec: 100,
  };
}

export type Source = "http" | "peers" | "mixed";
export type DropReason = "hash_mismatch" | "protocol" | "flood";

export type Action =
  | { type: "send"; peer: string; frame: Frame }
  | { type: "serve"; peer: string; rendition: string; seq: number; data: Uint8Array; from: number; to: number }
  | { type: "stop_serving"; peer: string; rendition: string; seq: number }
  | { type: "http_get"; req: number; meta: SegmentMeta; from: number }
  | { type: "http_cancel"; req: number }
  | { type: "verify"; meta: SegmentMeta; data: Uint8Array }
  | { type: "complete"; meta: SegmentMeta; data: Uint8Array; source: Source }
  | { type: "evicted"; rendition: string; seq: number }
  | { type: "drop_peer"; peer: string; reason: DropReason };

export interface Stats {
  httpBytes: number;
  p2pBytes: number;
  uploadedBytes: number;
  segments: number;
  late: number;
  hashFailures: number;
  peersDropped: number;
  slowTransfers: number;
  rejectedRequests: number;
  protocolErrors: number;
}

interface PeerJob {
  peer: string;
  from: number;
  next: number;
  end: number;
  started: Millis;
  firstByte?: Millis;
}

interface HttpJob {
  req: number;
  from: number;
  next: number;
  started: Millis;
}

interface Assembly {
  buf: Uint8Array;
  filled: number;
  peer?: PeerJob;
  http?: HttpJob;
  fromHttp: boolean;
  fromPeers: string[];
  tried: Set<string>;
}

type Status = { kind: "missing"; a: Assembly } | { kind: "verifying"; a: Assembly } | { kind: "held"; data: Uint8Array };

interface Seg {
  meta: SegmentMeta;
  seq: number;
  deadline: Millis;
  firstFetch: boolean;
  lateCounted: boolean;
  status: Status;
}

interface Neighbour {
  has: Set<number>;
  rate?: number;
  downloads: number;
  uploads: Set<number>;
  requests: Millis[];
  busyUntil: Millis;
}

/** How often an active transfer's progress is checked. */
const CHECK_MS = 100;
/** A peer that has sent no byte this long after a request is too slow. */
const FIRST_BYTE_MS = 400;
/** A transfer's rate is judged over at least this long after its first byte (as Rust's MEASURE_MS). */
const MEASURE_MS = 300;


export class Core {
  readonly stats: Stats = {
    httpBytes: 0,
    p2pBytes: 0,
    uploadedBytes: 0,
    segments: 0,
    late: 0,
    hashFailures: 0,
    peersDropped: 0,
    slowTransfers: 0,
    rejectedRequests: 0,
    protocolErrors: 0,
  };
  private readonly segs = new Map<number, Seg>();
  private readonly peers = new Map<string, Neighbour>();
  private readonly httpReqs = new Map<number, number>();
  private nextReq = 1;
  private httpRate: number;
  private uploads = 0;
  private budgetTokens: number;
  private budgetAt = 0;
  private readonly actions: Action[] = [];
  private now = 0;
  private readonly random: () => number;

  constructor(
    readonly cfg: CoreConfig,
    seed: number,
  ) {
    this.httpRate = cfg.httpRate;
    this.budgetTokens = cfg.uploadBudget;
    this.random = rng(seed);
  }

  /** The next action to carry out. */
  pollAction(): Action | undefined {
    return this.actions.shift();
  }

  /** A held segment. */
  segment(seq: number): { meta: SegmentMeta; data: Uint8Array } | undefined {
    const s = this.segs.get(seq);
    return s && s.status.kind === "held" ? { meta: s.meta, data: s.status.data } : undefined;
  }

  /** Records of the window, oldest first. */
  window(): SegmentMeta[] {
    return this.sortedSeqs().map((q) => (this.segs.get(q) as Seg).meta);
  }

  neighbours(): string[] {
    return [...this.peers.keys()];
  }

  private sortedSeqs(): number[] {
    return [...this.segs.keys()].sort((a, b) => a - b);
  }

  /** The tracker announced a segment (`firstFetch`: fetch it over HTTP at once). */
  handlePublished(now: Millis, meta: SegmentMeta, firstFetch: boolean): void {
    const { rendition, seq } = segmentRef(meta);
    if (meta.size === 0 || meta.size > 64 * 1024 * 1024) return;
    if (rendition !== this.cfg.rendition) return;
    const existing = this.segs.get(seq);
    if (existing) {
      if (existing.meta.sha256 === meta.sha256) {
        existing.firstFetch ||= firstFetch;
        this.schedule(now);
        return;
      }
      this.segs.delete(seq);
    }
    const seqs = this.sortedSeqs();
    if (seqs.length >= this.cfg.windowSegments && seq < seqs[0]) return;
    this.segs.set(seq, {
      meta,
      seq,
      deadline: now + this.cfg.playbackDelayMs,
      firstFetch,
      lateCounted: false,
      status: { kind: "missing", a: newAssembly(meta.size) },
    });
    this.evict();
    this.schedule(now);
  }

  private evict(): void {
    const seqs = this.sortedSeqs();
    while (seqs.length > this.cfg.windowSegments) {
      const seq = seqs.shift() as number;
      const seg = this.segs.get(seq) as Seg;
      this.segs.delete(seq);
      if (seg.status.kind === "held") {
        this.actions.push({ type: "evicted", rendition: this.cfg.rendition, seq });
      } else {
        const a = seg.status.a;
        if (a.http) {
          this.httpReqs.delete(a.http.req);
          this.actions.push({ type: "http_cancel", req: a.http.req });
        }
        if (a.peer) {
          const n = this.peers.get(a.peer.peer);
          if (n) n.downloads = Math.max(0, n.downloads - 1);
          this.actions.push({ type: "send", peer: a.peer.peer, frame: { type: "cancel", rendition: this.cfg.rendition, seq } });
        }
      }
    }
  }

  /** The player needs `seq` at `neededAt` (and the next ones a duration apart). */
  handlePlayhead(now: Millis, seq: number, neededAt: Millis): void {
    for (const [s, seg] of this.segs) {
      if (s >= seq) seg.deadline = Math.min(seg.deadline, neededAt + (s - seq) * seg.meta.duration_ms);
    }
    this.schedule(now);
  }

  /** A neighbour's channel opened: it gets our have-map. */
  handlePeerUp(now: Millis, peer: string): void {
    if (!this.peers.has(peer)) {
      this.peers.set(peer, { has: new Set(), downloads: 0, uploads: new Set(), requests: [], busyUntil: 0 });
    }
    const held = this.sortedSeqs().filter((q) => (this.segs.get(q) as Seg).status.kind === "held");
    if (held.length > 0) {
      const base = held[0];
      const n = Math.floor((held[held.length - 1] - base) / 8) + 1;
      if (n <= 1024) {
        const bits = new Uint8Array(n);
        for (const q of held) {
          const i = q - base;
          bits[i >> 3] |= 0x80 >> (i & 7);
        }
        this.actions.push({ type: "send", peer, frame: { type: "have_map", rendition: this.cfg.rendition, base_seq: base, bitmap: bits } });
      }
    }
    this.schedule(now);
  }

  /** A neighbour's channel closed: its transfers resume elsewhere. */
  handlePeerDown(now: Millis, peer: string): void {
    const n = this.peers.get(peer);
    if (!n) return;
    this.peers.delete(peer);
    this.uploads = Math.max(0, this.uploads - n.uploads.size);
    for (const seg of this.segs.values()) {
      if (seg.status.kind === "missing" && seg.status.a.peer?.peer === peer) seg.status.a.peer = undefined;
    }
    this.schedule(now);
  }

  private dropPeer(now: Millis, peer: string, reason: DropReason): void {
    if (this.peers.has(peer)) {
      this.stats.peersDropped++;
      this.actions.push({ type: "drop_peer", peer, reason });
      this.handlePeerDown(now, peer);
    }
  }

  /** A decoded frame from a neighbour. */
  handleFrame(now: Millis, peer: string, frame: Frame): void {
    const n = this.peers.get(peer);
    if (!n) return;
    const mine = frame.rendition === this.cfg.rendition;
    switch (frame.type) {
      case "have_map": {
        // Another rendition's map is of no use to a viewer; the scheduler
        // still runs after every frame, as in Rust.
        if (!mine) {
          this.schedule(now);
          return;
        }
        n.has.clear();
        frame.bitmap.forEach((b, i) => {
          for (let j = 0; j < 8; j++) if (b & (0x80 >> j)) n.has.add(frame.base_seq + i * 8 + j);
        });
        trimSet(n.has, this.cfg.windowSegments);
        this.schedule(now);
        return;
      }
      case "have":
        if (!mine) {
          this.schedule(now);
          return;
        }
        n.has.add(frame.seq);
        trimSet(n.has, this.cfg.windowSegments);
        this.schedule(now);
        return;
      case "request":
        this.onRequest(now, peer, frame.rendition, frame.seq, frame.offset, frame.length);
        return;
      case "cancel":
        if (mine && n.uploads.delete(frame.seq)) {
          this.uploads = Math.max(0, this.uploads - 1);
          this.actions.push({ type: "stop_serving", peer, rendition: frame.rendition, seq: frame.seq });
        }
        return;
      case "reject": {
        let hadJob = false;
        const seg = mine ? this.segs.get(frame.seq) : undefined;
        if (seg && seg.status.kind === "missing" && seg.status.a.peer?.peer === peer) {
          seg.status.a.peer = undefined;
          // A busy neighbour may be asked again after its back-off; one that lacks it or refuses, not.
          if (frame.reason !== "busy") seg.status.a.tried.add(peer);
          hadJob = true;
        }
        if (hadJob) n.downloads = Math.max(0, n.downloads - 1);
        // `has` holds this viewer's rendition only.
        if (frame.reason === "not_found" && mine) n.has.delete(frame.seq);
        if (frame.reason === "busy") n.busyUntil = now + 500;
        this.schedule(now);
        return;
      }
      case "chunk":
        this.onChunk(now, peer, frame.rendition, frame.seq, frame.offset, frame.total, frame.data);
        return;
    }
  }

  private reject(peer: string, rendition: string, seq: number, reason: RejectReason): void {
    this.stats.rejectedRequests++;
    this.actions.push({ type: "send", peer, frame: { type: "reject", rendition, seq, reason } });
  }

  private onRequest(now: Millis, peer: string, rendition: string, seq: number, offset: number, length: number): void {
    const n = this.peers.get(peer);
    if (!n) return;
    n.requests.push(now);
    while (n.requests.length > 0 && n.requests[0] + 1000 <= now) n.requests.shift();
    if (n.requests.length > this.cfg.maxRequestsPerSec) {
      this.dropPeer(now, peer, "flood");
      return;
    }
    const seg = rendition === this.cfg.rendition ? this.segs.get(seq) : undefined;
    if (!seg || seg.status.kind !== "held") {
      this.reject(peer, rendition, seq, "not_found");
      return;
    }
    const data = seg.status.data;
    const len = data.length;
    const from = offset;
    const to = length === 0 ? len : from + length;
    if (from >= len || to > len) {
      this.reject(peer, rendition, seq, "bad_request");
      return;
    }
    if (n.uploads.has(seq) || this.uploads >= uploadSlotsFor(this.cfg, len, seg.meta.duration_ms) || !this.takeBudget(now, to - from)) {
      this.reject(peer, rendition, seq, "busy");
      return;
    }
    n.uploads.add(seq);
    this.uploads++;
    this.stats.uploadedBytes += to - from;
    this.actions.push({ type: "serve", peer, rendition, seq, data, from, to });
  }

  private takeBudget(now: Millis, bytes: number): boolean {
    const budget = this.cfg.uploadBudget;
    if (budget === 0) return true;
    const dt = Math.max(0, now - this.budgetAt) / 1000;
    this.budgetAt = now;
    this.budgetTokens = Math.min(this.budgetTokens + dt * budget, budget);
    if (this.budgetTokens <= 0) return false;
    this.budgetTokens -= bytes;
    return true;
  }

  /** An upload (a `serve`) ended, sent or not. */
  handleUploadDone(now: Millis, peer: string, seq: number): void {
    const n = this.peers.get(peer);
    if (n && n.uploads.delete(seq)) this.uploads = Math.max(0, this.uploads - 1);
    this.schedule(now);
  }

  private onChunk(now: Millis, peer: string, rendition: string, seq: number, offset: number, total: number, data: Uint8Array): void {
    const seg = rendition === this.cfg.rendition ? this.segs.get(seq) : undefined;
    if (!seg || seg.status.kind !== "missing") return;
    const a = seg.status.a;
    const job = a.peer;
    if (!job || job.peer !== peer) return; // unrequested or after a cancel
    if (total !== seg.meta.size || offset !== job.next || offset + data.length > job.end) {
      this.stats.protocolErrors++;
      this.dropPeer(now, peer, "protocol");
      return;
    }
    a.buf.set(data, offset);
    job.next += data.length;
    job.firstByte ??= now;
    a.filled = job.next;
    if (!a.fromPeers.includes(peer)) a.fromPeers.push(peer);
    this.stats.p2pBytes += data.length;
    if (job.next >= job.end) {
      const elapsed = Math.max(1, now - job.started);
      a.peer = undefined;
      const n = this.peers.get(peer);
      if (n) {
        n.downloads = Math.max(0, n.downloads - 1);
        const r = (job.end - job.from) / elapsed;
        n.rate = n.rate === undefined ? r : 0.7 * n.rate + 0.3 * r;
      }
    }
    this.finishIfComplete(now, seq);
    this.schedule(now);
  }

  /** HTTP bytes of request `req`, in order. */
  handleHttpData(now: Millis, req: number, data: Uint8Array): void {
    this.now = Math.max(this.now, now);
    const seq = this.httpReqs.get(req);
    const seg = seq === undefined ? undefined : this.segs.get(seq);
    if (!seg || seg.status.kind !== "missing") return;
    const a = seg.status.a;
    const job = a.http;
    if (!job || job.req !== req) return;
    const n = Math.min(data.length, Math.max(0, seg.meta.size - job.next));
    a.buf.set(data.subarray(0, n), job.next);
    job.next += n;
    a.fromHttp = true;
    a.filled = job.next;
    this.stats.httpBytes += n;
  }

  /** HTTP request `req` finished. */
  handleHttpDone(now: Millis, req: number): void {
    const seq = this.httpReqs.get(req);
    if (seq === undefined) return;
    this.httpReqs.delete(req);
    const seg = this.segs.get(seq);
    if (seg && seg.status.kind === "missing" && seg.status.a.http) {
      const h = seg.status.a.http;
      seg.status.a.http = undefined;
      const rate = (h.next - h.from) / Math.max(1, now - h.started);
      if (rate > 0) this.httpRate = 0.7 * this.httpRate + 0.3 * rate;
    }
    this.finishIfComplete(now, seq);
    this.schedule(now);
  }

  /** HTTP request `req` failed; retried while the deadline allows. */
  handleHttpFailed(now: Millis, req: number): void {
    const seq = this.httpReqs.get(req);
    if (seq === undefined) return;
    this.httpReqs.delete(req);
    const seg = this.segs.get(seq);
    if (seg && seg.status.kind === "missing") seg.status.a.http = undefined;
    this.schedule(now);
  }

  private finishIfComplete(now: Millis, seq: number): void {
    const seg = this.segs.get(seq);
    if (!seg || seg.status.kind !== "missing") return;
    const a = seg.status.a;
    if (a.filled < seg.meta.size) return;
    if (a.http) {
      this.httpReqs.delete(a.http.req);
      this.actions.push({ type: "http_cancel", req: a.http.req });
      a.http = undefined;
    }
    if (a.peer) {
      const n = this.peers.get(a.peer.peer);
      if (n) n.downloads = Math.max(0, n.downloads - 1);
      this.actions.push({ type: "send", peer: a.peer.peer, frame: { type: "cancel", rendition: this.cfg.rendition, seq } });
      a.peer = undefined;
    }
    seg.status = { kind: "verifying", a };
    this.actions.push({ type: "verify", meta: seg.meta, data: a.buf });
    void now;
  }

  /** The driver's answer to `verify`: does SHA-256(data) equal the origin's hash? */
  handleVerified(now: Millis, seq: number, ok: boolean): void {
    const seg = this.segs.get(seq);
    if (!seg || seg.status.kind !== "verifying") return;
    const a = seg.status.a;
    if (!ok) {
      this.stats.hashFailures++;
      const guilty = a.fromPeers;
      seg.status = { kind: "missing", a: newAssembly(seg.meta.size) };
      // Start over from the origin, which is never wrong about itself.
      seg.firstFetch = true;
      for (const p of guilty) seg.status.a.tried.add(p);
      for (const p of guilty) this.dropPeer(now, p, "hash_mismatch");
      this.schedule(now);
      return;
    }
    const source: Source = a.fromPeers.length === 0 ? "http" : a.fromHttp ? "mixed" : "peers";
    seg.status = { kind: "held", data: a.buf };
    this.stats.segments++;
    if (now > seg.deadline && !seg.lateCounted) this.stats.late++;
    this.actions.push({ type: "complete", meta: seg.meta, data: a.buf, source });
    for (const p of [...this.peers.keys()].sort()) {
      this.actions.push({ type: "send", peer: p, frame: { type: "have", rendition: this.cfg.rendition, seq } });
    }
    this.schedule(now);
  }

  /** Time of the next check, if any. */
  pollTimeout(): Millis | undefined {
    let next: Millis | undefined;
    const now = this.now;
    const note = (t: Millis) => {
      if (t > now) next = next === undefined ? t : Math.min(next, t);
    };
    for (const seg of this.segs.values()) {
      if (seg.status.kind !== "missing") continue;
      const a = seg.status.a;
      if (a.peer) {
        note(now + CHECK_MS);
        note(seg.deadline);
      } else if (!a.http) {
        note(this.httpStart(seg, a));
      }
      if (!seg.lateCounted) note(seg.deadline);
    }
    return next;
  }

  /** Checks progress and deadlines. */
  handleTimeout(now: Millis): void {
    for (const seg of this.segs.values()) {
      if (seg.status.kind === "missing" && now >= seg.deadline && !seg.lateCounted) {
        seg.lateCounted = true;
        this.stats.late++;
      }
    }
    this.schedule(now);
  }

  private httpStart(seg: Seg, a: Assembly): Millis {
    if (seg.firstFetch) return 0;
    const missing = Math.max(0, seg.meta.size - a.filled);
    const need = Math.ceil(missing / Math.max(this.httpRate, 1e-3));
    return Math.max(0, seg.deadline - (this.cfg.marginMs + need));
  }

  private schedule(now: Millis): void {
    this.now = Math.max(this.now, now);
    const todo: [Millis, number][] = [];
    let active = 0;
    for (const seg of this.segs.values()) {
      if (seg.status.kind !== "missing") continue;
      if (seg.status.a.peer || seg.status.a.http) active++;
      todo.push([seg.deadline, seg.seq]);
    }
    todo.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    for (const [, seq] of todo) {
      this.checkProgress(now, seq);
      const seg = this.segs.get(seq);
      const idle = seg !== undefined && seg.status.kind === "missing" && !seg.status.a.peer && !seg.status.a.http;
      if (idle) {
        if (active >= this.cfg.maxDownloads && !(seg as Seg).firstFetch) continue;
        if (this.start(now, seq)) active++;
      }
    }
  }

  private checkProgress(now: Millis, seq: number): void {
    const seg = this.segs.get(seq);
    if (!seg || seg.status.kind !== "missing") return;
    const a = seg.status.a;
    const job = a.peer;
    if (!job) return;
    const remaining = job.end - job.next;
    let tooSlow: boolean;
    if (job.firstByte === undefined) {
      tooSlow = now - job.started >= FIRST_BYTE_MS || now + this.cfg.marginMs >= seg.deadline;
    } else if (now - job.firstByte < MEASURE_MS) {
      tooSlow = now + this.cfg.marginMs >= seg.deadline;
    } else {
      const rate = (job.next - job.from) / Math.max(1, now - job.firstByte);
      tooSlow = rate <= 0 || now + Math.floor(remaining / rate) + this.cfg.marginMs > seg.deadline;
    }
    if (!tooSlow) return;
    a.tried.add(job.peer);
    a.peer = undefined;
    this.stats.slowTransfers++;
    const n = this.peers.get(job.peer);
    if (n) {
      n.downloads = Math.max(0, n.downloads - 1);
      n.rate = n.rate === undefined ? 0 : n.rate * 0.5;
    }
    this.actions.push({ type: "send", peer: job.peer, frame: { type: "cancel", rendition: this.cfg.rendition, seq } });
  }

  private start(now: Millis, seq: number): boolean {
    const seg = this.segs.get(seq);
    if (!seg || seg.status.kind !== "missing") return false;
    const a = seg.status.a;
    const size = seg.meta.size;
    const from = a.filled;
    const httpAt = this.httpStart(seg, a);
    if (!seg.firstFetch) {
      const holders: [string, number][] = [];
      for (const [id, n] of this.peers) {
        if (n.has.has(seq) && n.downloads < this.cfg.downloadsPerPeer && n.busyUntil <= now && !a.tried.has(id)) {
          holders.push([id, n.rate ?? this.cfg.peerRate]);
        }
      }
      // Shuffle, then fastest first (ties in random order).
      for (let i = holders.length - 1; i > 0; i--) {
        const j = Math.floor(this.random() * (i + 1));
        [holders[i], holders[j]] = [holders[j], holders[i]];
      }
      holders.sort((x, y) => y[1] - x[1]);
      const best = holders[0];
      if (best) {
        const eta = now + Math.floor((size - from) / Math.max(best[1], 1e-3)) + this.cfg.marginMs;
        if (eta <= seg.deadline || now < httpAt) return this.startPeer(now, seq, best[0], from, size);
      }
    }
    if (now >= httpAt) return this.startHttp(now, seq, from);
    return false;
  }

  private startPeer(now: Millis, seq: number, peer: string, from: number, size: number): boolean {
    const seg = this.segs.get(seq);
    if (!seg || seg.status.kind !== "missing") return false;
    seg.status.a.peer = { peer, from, next: from, end: size, started: now };
    const n = this.peers.get(peer);
    if (n) n.downloads++;
    this.actions.push({ type: "send", peer, frame: { type: "request", rendition: this.cfg.rendition, seq, offset: from, length: 0 } });
    return true;
  }

  private startHttp(now: Millis, seq: number, from: number): boolean {
    const seg = this.segs.get(seq);
    if (!seg || seg.status.kind !== "missing") return false;
    const req = this.nextReq++;
    seg.status.a.http = { req, from, next: from, started: now };
    this.httpReqs.set(req, seq);
    this.actions.push({ type: "http_get", req, meta: seg.meta, from });
    return true;
  }
}

function newAssembly(size: number): Assembly {
  return { buf: new Uint8Array(size), filled: 0, fromHttp: false, fromPeers: [], tried: new Set() };
}

function trimSet(s: Set<number>, max: number): void {
  if (s.size <= max) return;
  const sorted = [...s].sort((a, b) => a - b);
  for (const q of sorted.slice(0, s.size - max)) s.delete(q);
}
