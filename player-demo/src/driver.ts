// The browser driver of the viewer logic (as edge-peer/src/driver.rs is for
// the Rust core): it owns one core per rendition the player asks for, the
// tracker connection, the links to neighbours and the HTTP fallback, and
// carries out the cores' actions. Everything runs on the page's event loop.

import { Core, viewerConfig, type Action, type CoreConfig } from "./core.js";
import { Link } from "./link.js";
import { startupMark } from "./marks.js";
import { decodeServer, encodeClient, MessageError, segmentRef, urlWithStream, type ClientMsg, type IceServer, type SegmentMeta, type ServerMsg } from "./tracker.js";
import type { Frame } from "./wire.js";

export interface SwarmConfig {
  /** Tracker WebSocket URL (ws:// or wss://), e.g. "wss://tracker.example/v1/ws". */
  tracker: string;
  /** A viewer token for the stream (from your backend). */
  token: string;
  /** The stream id. */
  stream: string;
  /** Origin (or CDN) base URL for the HTTP fallback; derived from the playlist URL when absent. */
  origin?: string;
  /** STUN/TURN servers (the tracker's welcome may add more). */
  iceServers?: IceServer[];
  /** Most neighbours at once (default 8). */
  maxPeers?: number;
  /** Upload capacity offered to the swarm, kbit/s (default 10000; 0 = download only). */
  uploadKbps?: number;
  /** Upload budget, bytes per second (default 0 = no limit beyond the slots). */
  uploadLimit?: number;
  /** Segments kept per rendition (default 30). */
  cacheSegments?: number;
  /** Region label told to the tracker. */
  region?: string;
  /** The swarm switched off: every segment over HTTP (a reference for measurements). */
  httpOnly?: boolean;
}

export interface PeerView {
  id: string;
  kind: string;
  open: boolean;
}

export interface SwarmStats {
  peerId: string | undefined;
  trackerConnected: boolean;
  httpBytes: number;
  p2pBytes: number;
  uploadedBytes: number;
  /** p2p / (p2p + http) */
  offload: number;
  peers: PeerView[];
  segments: number;
  hashFailures: number;
  peersDropped: number;
  /** Rebufferings: a `waiting` out of media, or one that lasted STALL_MIN_MS (index.ts). */
  stalls: number;
  /** Every `waiting` after startup, stalls or not. */
  waits: number;
  stallMs: number;
  startupMs: number | undefined;
  latencyMs: number | undefined;
  linkSetupMs: number[];
  /** The last fragments the player asked for, and the waits (for diagnosis). */
  trace: TraceEntry[];
}

/** One fragment the player asked for, or one `waiting` of the video, in ms since the swarm started. */
export interface TraceEntry {
  kind: "fragment" | "wait" | "stall";
  seq?: number;
  /** When the player asked (fragment) or the video waited (wait, stall). */
  at: number;
  /** When the player will play it (fragment). */
  neededAt?: number;
  /** When it was delivered (fragment) or the video played again (wait, stall). */
  doneAt?: number;
  source?: string;
  /** The video's position at the wait. */
  position?: number;
  /** The video's buffered ranges at the wait, "start-end" each. */
  buffered?: string;
  readyState?: number;
}
/** Trace entries kept. */
const TRACE_MAX = 64;

interface Waiter {
  resolve(d: Uint8Array): void;
  reject(e: Error): void;
}

function hex(buf: ArrayBuffer): string {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function randomId(): string {
  const b = new Uint8Array(8);
  crypto.getRandomValues(b);
  return "web-" + [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

const now = (): number => Math.floor(performance.now());
/** Longest wait for the player's start before links are set up, ms. */
const LINK_DELAY_MS = 2000;

export class Swarm extends EventTarget {
  readonly peerId = randomId();
  private ws: WebSocket | undefined;
  private trackerUp = false;
  private backoff = 250;
  private iceServers: IceServer[];
  private readonly cores = new Map<string, Core>();
  private readonly links = new Map<string, Link>();
  private readonly kinds = new Map<string, string>();
  private readonly open = new Set<string>();
  private readonly http = new Map<string, AbortController>(); // `${rendition}/${req}`
  private readonly waiters = new Map<string, Waiter[]>(); // `${rendition}/${seq}`
  private readonly known = new Map<string, SegmentMeta>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private report: ReturnType<typeof setInterval> | undefined;
  private stopped = false;
  private origin: string | undefined;
  private directHttpBytes = 0;
  private uploaded = 0;
  private readonly setupMs: number[] = [];
  private readonly created = performance.now();
  private linksReleased = false;
  private deferred: ServerMsg[] = [];
  private deferTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly traceLog: TraceEntry[] = [];
  /** The stream's cell this player was redirected to (a stream spread over tracker nodes). */
  private cell: number | undefined;
  private redirects = 0;
  /** Set by the player glue. */
  player = { stalls: 0, waits: 0, stallMs: 0, startupMs: undefined as number | undefined, latencyMs: undefined as number | undefined };

  constructor(readonly cfg: SwarmConfig) {
    super();
    this.iceServers = cfg.iceServers ?? [];
    this.origin = cfg.origin?.replace(/\/$/, "");
    this.connect();
    this.report = setInterval(() => this.sendStats(), 2000);
  }

  // ---- tracker ----

  private connect(): void {
    if (this.stopped) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(urlWithStream(this.cfg.tracker, this.cfg.stream, this.cell));
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.sendTracker({
        type: "hello",
        token: this.cfg.token,
        stream: this.cfg.stream,
        peer_id: this.peerId,
        kind: "browser",
        upload_kbps: this.cfg.httpOnly ? 0 : (this.cfg.uploadKbps ?? 10_000),
        ...(this.cfg.region ? { region: this.cfg.region } : {}),
        ...(this.cell !== undefined ? { cell: this.cell } : {}),
      });
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== "string") return;
      let msg: ServerMsg;
      try {
        msg = decodeServer(m.data);
      } catch (e) {
        this.emit("warning", { message: e instanceof MessageError ? `tracker sent ${e.code}: ${e.message}` : String(e) });
        return;
      }
      this.onTracker(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.trackerUp = false;
      this.emit("tracker", { connected: false });
      this.retry();
    };
  }

  private retry(): void {
    if (this.stopped) return;
    const wait = this.backoff * (0.5 + Math.random());
    this.backoff = Math.min(this.backoff * 2, 10_000);
    setTimeout(() => this.connect(), wait);
  }

  private sendTracker(m: ClientMsg): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeClient(m));
  }

  private onTracker(msg: ServerMsg): void {
    switch (msg.type) {
      case "redirect": {
        // The stream is split into cells over tracker nodes: join the one
        // named, at once (a loop of redirects falls back to the backoff).
        this.cell = msg.cell;
        const ws = this.ws;
        this.ws = undefined;
        ws?.close();
        if (++this.redirects <= 4) this.connect();
        else this.retry();
        break;
      }
      case "welcome":
        if (this.player.startupMs === undefined) startupMark("welcome");
        this.trackerUp = true;
        this.backoff = 250;
        this.redirects = 0;
        if (msg.config.ice_servers.length > 0) this.iceServers = [...(this.cfg.iceServers ?? []), ...msg.config.ice_servers];
        this.emit("tracker", { connected: true });
        // After a reconnect the tracker relearns what we hold.
        for (const [r, core] of this.cores) {
          const held = core.window().map((m) => segmentRef(m).seq).filter((q) => core.segment(q));
          if (held.length > 0) {
            const base = held[0];
            const bits = new Uint8Array(Math.floor((held[held.length - 1] - base) / 8) + 1);
            for (const q of held) bits[(q - base) >> 3] |= 0x80 >> ((q - base) & 7);
            this.sendTracker({ type: "have_map", rendition: r, base_seq: base, bitmap: [...bits].map((b) => b.toString(16).padStart(2, "0")).join("") });
          }
        }
        break;
      case "segment":
      case "fetch": {
        const { rendition, seq } = segmentRef(msg.meta);
        this.known.set(`${rendition}/${seq}`, msg.meta);
        this.trimKnown();
        const core = this.cores.get(rendition);
        if (core) {
          core.handlePublished(now(), msg.meta, msg.type === "fetch" || this.cfg.httpOnly === true);
          this.drain(rendition);
        }
        break;
      }
      case "peers":
        if (this.cfg.httpOnly) break;
        if (this.deferLinks(msg)) break;
        for (const p of msg.peers) {
          this.kinds.set(p.peer_id, p.kind);
          if (!this.links.has(p.peer_id) && this.links.size < (this.cfg.maxPeers ?? 8)) this.newLink(p.peer_id, p.initiator);
        }
        break;
      case "signal": {
        if (this.cfg.httpOnly) break;
        if (this.deferLinks(msg)) break;
        if (!this.links.has(msg.from) && msg.signal.kind === "offer" && this.links.size < (this.cfg.maxPeers ?? 8)) {
          this.newLink(msg.from, false);
        }
        void this.links.get(msg.from)?.remote(msg.signal);
        break;
      }
      case "peer_left":
        this.links.get(msg.peer_id)?.close("peer left");
        break;
      case "ping":
        this.sendTracker({ type: "pong", nonce: msg.nonce });
        break;
      case "error":
        this.emit("warning", { message: `tracker: ${msg.code}: ${msg.message}` });
        // A cell that refuses or lets go of this player (it lost the
        // stream's home): the next connection asks the home again.
        if (this.cell !== undefined && !["unauthorized", "token_expired", "unsupported_version", "rate_limited", "unknown_peer"].includes(msg.code)) this.cell = undefined;
        break;
      default:
        break;
    }
  }

  /**
   * Until the player has started (or for at most LINK_DELAY_MS), links
   * wait: setting up several peer connections (ICE, DTLS) competes with
   * the player's own startup for the CPU, and startup must not be slower
   * than HTTP-only. Returns true when `msg` was queued.
   */
  private deferLinks(msg: ServerMsg): boolean {
    if (this.linksReleased) return false;
    if (this.player.startupMs !== undefined || performance.now() - this.created > LINK_DELAY_MS) {
      this.releaseLinks();
      return false;
    }
    this.deferred.push(msg);
    if (this.deferTimer === undefined) this.deferTimer = setTimeout(() => this.releaseLinks(), LINK_DELAY_MS);
    return true;
  }

  /** Lets the queued introductions and offers through (the player glue calls it on `playing`). */
  releaseLinks(): void {
    if (this.linksReleased) return;
    this.linksReleased = true;
    if (this.deferTimer !== undefined) clearTimeout(this.deferTimer);
    const queued = this.deferred;
    this.deferred = [];
    for (const m of queued) this.onTracker(m);
  }

  private trimKnown(): void {
    const max = 8 * (this.cfg.cacheSegments ?? 30);
    while (this.known.size > max) {
      const first = this.known.keys().next().value as string;
      this.known.delete(first);
    }
  }

  // ---- links ----

  private newLink(peer: string, initiator: boolean): void {
    const link = new Link(peer, initiator, this.iceServers, {
      signal: (s) => this.sendTracker({ type: "signal", to: peer, signal: s }),
      open: (ms) => {
        this.open.add(peer);
        this.setupMs.push(Math.round(ms));
        for (const [r, core] of this.cores) {
          core.handlePeerUp(now(), peer);
          this.drain(r);
        }
        this.emit("peers", {});
      },
      frame: (f) => this.onFrame(peer, f),
      badFrame: (why) => this.emit("warning", { message: `bad frame from ${peer}: ${why}` }),
      uploadDone: (r, seq) => {
        const core = this.cores.get(r);
        if (core) {
          core.handleUploadDone(now(), peer, seq);
          this.drain(r);
        }
      },
      closed: () => {
        this.links.delete(peer);
        const wasOpen = this.open.delete(peer);
        for (const [r, core] of this.cores) {
          core.handlePeerDown(now(), peer);
          this.drain(r);
        }
        this.sendTracker({ type: "peer_closed", peer_id: peer });
        if (wasOpen && this.links.size < (this.cfg.maxPeers ?? 8)) this.sendTracker({ type: "want_peers", count: 1 });
        this.emit("peers", {});
      },
    });
    this.links.set(peer, link);
  }

  private onFrame(peer: string, f: Frame): void {
    const core = this.cores.get(f.rendition);
    if (!core) {
      // A rendition we do not play: we hold none of it.
      if (f.type === "request") this.links.get(peer)?.send({ type: "reject", rendition: f.rendition, seq: f.seq, reason: "not_found" });
      return;
    }
    core.handleFrame(now(), peer, f);
    this.drain(f.rendition);
  }

  // ---- the cores ----

  private core(rendition: string): Core {
    let core = this.cores.get(rendition);
    if (!core) {
      const cfg: CoreConfig = {
        ...viewerConfig(rendition),
        windowSegments: this.cfg.cacheSegments ?? 30,
        uploadBudget: this.cfg.uploadLimit ?? 0,
        uploadRate: (this.cfg.uploadKbps ?? 10_000) / 8, // kbit/s → bytes per ms
      };
      core = new Core(cfg, Math.floor(Math.random() * 2 ** 31));
      this.cores.set(rendition, core);
      for (const p of this.open) core.handlePeerUp(now(), p);
      // Records already heard of (the live edge at join).
      for (const [k, meta] of this.known) {
        if (k.startsWith(`${rendition}/`)) core.handlePublished(now(), meta, this.cfg.httpOnly === true);
      }
      this.drain(rendition);
    }
    return core;
  }

  /** Carries out a core's actions. */
  private drain(rendition: string): void {
    const core = this.cores.get(rendition);
    if (!core) return;
    for (let a = core.pollAction(); a !== undefined; a = core.pollAction()) this.act(rendition, core, a);
    this.arm();
  }

  private act(rendition: string, core: Core, a: Action): void {
    switch (a.type) {
      case "send":
        this.links.get(a.peer)?.send(a.frame);
        break;
      case "serve": {
        const link = this.links.get(a.peer);
        if (link) {
          this.uploaded += a.to - a.from;
          link.serve(a.rendition, a.seq, a.data, a.from, a.to);
        } else core.handleUploadDone(now(), a.peer, a.seq);
        break;
      }
      case "stop_serving":
        this.links.get(a.peer)?.stop(a.rendition, a.seq);
        break;
      case "http_get":
        void this.httpGet(rendition, a.req, a.meta, a.from);
        break;
      case "http_cancel":
        this.http.get(`${rendition}/${a.req}`)?.abort();
        this.http.delete(`${rendition}/${a.req}`);
        break;
      case "verify": {
        const seq = segmentRef(a.meta).seq;
        crypto.subtle.digest("SHA-256", a.data as Uint8Array<ArrayBuffer>).then(
          (d) => {
            core.handleVerified(now(), seq, hex(d) === a.meta.sha256);
            this.drain(rendition);
          },
          () => {
            core.handleVerified(now(), seq, false);
            this.drain(rendition);
          },
        );
        break;
      }
      case "complete": {
        const seq = segmentRef(a.meta).seq;
        this.sendTracker({ type: "have", segments: [{ rendition, seq }] });
        const key = `${rendition}/${seq}`;
        for (const w of this.waiters.get(key) ?? []) w.resolve(a.data);
        const t = this.traceLog.find((e) => e.kind === "fragment" && e.seq === seq && e.doneAt === undefined);
        if (t) {
          t.doneAt = this.since();
          t.source = a.source;
        }
        this.waiters.delete(key);
        this.emit("segment", { rendition, seq, source: a.source, bytes: a.data.length });
        break;
      }
      case "evicted":
        this.sendTracker({ type: "lost", segments: [{ rendition: a.rendition, seq: a.seq }] });
        break;
      case "drop_peer":
        this.sendTracker({ type: "report_peer", peer_id: a.peer, reason: a.reason });
        this.emit("warning", { message: `dropped ${a.peer}: ${a.reason}` });
        this.links.get(a.peer)?.close(`dropped: ${a.reason}`);
        break;
    }
  }

  private async httpGet(rendition: string, req: number, meta: SegmentMeta, from: number): Promise<void> {
    const key = `${rendition}/${req}`;
    const ctl = new AbortController();
    this.http.set(key, ctl);
    const core = this.cores.get(rendition);
    if (!core) return;
    const { stream, seq } = segmentRef(meta);
    try {
      const url = `${this.origin ?? ""}/live/${stream}/${rendition}/${seq}.ts`;
      const resp = await fetch(url, { signal: ctl.signal, headers: from > 0 ? { Range: `bytes=${from}-` } : {}, cache: "no-store" });
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      const reader = resp.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        core.handleHttpData(now(), req, value);
      }
      this.http.delete(key);
      core.handleHttpDone(now(), req);
    } catch (e) {
      if (ctl.signal.aborted) return;
      this.http.delete(key);
      core.handleHttpFailed(now(), req);
      this.emit("warning", { message: `HTTP ${meta.id}: ${String(e)}` });
    }
    this.drain(rendition);
  }

  private arm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    let next: number | undefined;
    for (const core of this.cores.values()) {
      const t = core.pollTimeout();
      if (t !== undefined) next = next === undefined ? t : Math.min(next, t);
    }
    if (next === undefined || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      for (const [r, core] of this.cores) {
        core.handleTimeout(now());
        this.drain(r);
      }
      this.arm();
    }, Math.max(0, next - now()));
  }

  // ---- what the loader asks ----

  /**
   * The bytes of segment `seq` of `rendition`, verified against the
   * origin's hash, from the swarm or HTTP; `neededAt` (performance.now()
   * ms) is when the player will play it. Resolves with `undefined` when
   * the swarm has no record of it (the loader then uses plain HTTP).
   */
  get(rendition: string, seq: number, neededAt: number, fragmentUrl: string): Promise<Uint8Array> | undefined {
    if (this.origin === undefined) {
      const m = /^(.*)\/live\/[^/]+\/[^/]+\/[^/]+$/.exec(fragmentUrl);
      if (m) this.origin = m[1];
    }
    const core = this.core(rendition);
    const held = core.segment(seq);
    const entry: TraceEntry = { kind: "fragment", seq, at: this.since(), neededAt: Math.round(neededAt - this.created) };
    this.trace(entry);
    if (held) {
      entry.doneAt = entry.at;
      entry.source = "held";
      return Promise.resolve(held.data);
    }
    if (!core.window().some((m) => segmentRef(m).seq === seq)) {
      // The player's own loader fetches it.
      entry.doneAt = entry.at;
      entry.source = "player http";
      return undefined;
    }
    const key = `${rendition}/${seq}`;
    const p = new Promise<Uint8Array>((resolve, reject) => {
      const list = this.waiters.get(key) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(key, list);
    });
    core.handlePlayhead(now(), seq, Math.floor(Math.max(now(), neededAt)));
    this.drain(rendition);
    return p;
  }

  private since(): number {
    return Math.round(performance.now() - this.created);
  }

  /** Records a trace entry (the player glue records stalls). */
  trace(e: TraceEntry): void {
    this.traceLog.push(e);
    if (this.traceLog.length > TRACE_MAX) this.traceLog.shift();
  }

  /** ms since this swarm started. */
  clock(): number {
    return this.since();
  }

  /** Counts bytes the loader fetched itself (segments the swarm had no record of). */
  countDirectHttp(bytes: number): void {
    this.directHttpBytes += bytes;
  }

  stats(): SwarmStats {
    let http = this.directHttpBytes;
    let p2p = 0;
    let segments = 0;
    let hashFailures = 0;
    let dropped = 0;
    for (const c of this.cores.values()) {
      http += c.stats.httpBytes;
      p2p += c.stats.p2pBytes;
      segments += c.stats.segments;
      hashFailures += c.stats.hashFailures;
      dropped += c.stats.peersDropped;
    }
    return {
      peerId: this.peerId,
      trackerConnected: this.trackerUp,
      httpBytes: http,
      p2pBytes: p2p,
      uploadedBytes: this.uploaded,
      offload: http + p2p === 0 ? 0 : p2p / (http + p2p),
      peers: [...this.links.keys()].map((id) => ({ id, kind: this.kinds.get(id) ?? "unknown", open: this.open.has(id) })),
      segments,
      hashFailures,
      peersDropped: dropped,
      stalls: this.player.stalls,
      waits: this.player.waits,
      stallMs: Math.round(this.player.stallMs),
      startupMs: this.player.startupMs,
      latencyMs: this.player.latencyMs,
      linkSetupMs: [...this.setupMs],
      trace: this.traceLog.map((e) => ({ ...e })),
    };
  }

  private sendStats(): void {
    const s = this.stats();
    this.sendTracker({
      type: "stats",
      http_bytes: s.httpBytes,
      p2p_bytes: s.p2pBytes,
      uploaded_bytes: s.uploadedBytes,
      stalls: s.stalls,
      stall_ms: s.stallMs,
      ...(s.latencyMs !== undefined ? { latency_ms: Math.round(s.latencyMs) } : {}),
      peers: this.open.size,
      ...(s.startupMs !== undefined ? { startup_ms: Math.round(s.startupMs) } : {}),
    });
    this.emit("stats", s);
  }

  private emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Closes every link and the tracker connection. */
  destroy(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.report !== undefined) clearInterval(this.report);
    for (const l of [...this.links.values()]) l.close("destroyed");
    for (const c of this.http.values()) c.abort();
    for (const ws of this.waiters.values()) for (const w of ws) w.reject(new Error("destroyed"));
    this.ws?.close();
  }
}
