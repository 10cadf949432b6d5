// The swarm core (src/core.ts) driven in virtual time: a port of
// swarm-core/tests/virtual_time.rs, the same scenarios with the same
// assertions, so the TypeScript core and the Rust one are held to the same
// behaviour. A few cores joined by simulated data channels (latency + rate),
// an HTTP origin (latency + rate), and a clock that jumps from event to
// event. No sockets, no sleeps.
//
// One difference of shape: the TS core asks its driver to hash a complete
// assembly (`verify`); the simulator hashes with node:crypto at once, at the
// same virtual time, and answers `handleVerified`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

import { Core, uploadSlotsFor, viewerConfig, type CoreConfig, type DropReason, type Millis, type Source } from "../src/core.js";
import { segmentRef, type SegmentMeta } from "../src/tracker.js";
import { chunks, MAX_CHUNK_DATA, type Frame } from "../src/wire.js";

const R = "360p";

function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Rust's `SegmentMeta::matches`: exactly the segment this record describes. */
function matches(meta: SegmentMeta, data: Uint8Array): boolean {
  return data.length === meta.size && sha256Hex(data) === meta.sha256;
}

function segment(seq: number, size: number, rendition = R): { meta: SegmentMeta; data: Uint8Array } {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + seq * 13) & 0xff;
  const meta: SegmentMeta = {
    id: `s/${rendition}/${seq}`,
    size,
    sha256: sha256Hex(data),
    duration_ms: 2000,
    published_at_ms: 0,
  };
  return { meta, data };
}

type Ev =
  // `frame: null` is the end marker of a Serve (Rust: a `Have` with seq u64::MAX).
  | { kind: "frame"; to: string; from: string; frame: Frame | null }
  | { kind: "http"; node: string; req: number; data: Uint8Array; last: boolean }
  | { kind: "published"; node: string; meta: SegmentMeta; first: boolean };

/** How a node behaves when it serves. */
type Behaviour =
  | { kind: "honest" }
  /** Flips a byte of every chunk it sends. */
  | { kind: "corrupt" }
  /** Sends chunks this many times slower than the link allows. */
  | { kind: "slow"; factor: number };

const HONEST: Behaviour = { kind: "honest" };
const CORRUPT: Behaviour = { kind: "corrupt" };
const slow = (factor: number): Behaviour => ({ kind: "slow", factor });

interface Node {
  core: Core;
  behaviour: Behaviour;
  completed: [SegmentMeta, Uint8Array, Source, Millis][];
  dropped: [string, DropReason][];
  httpGets: [Millis, number, number][];
  evicted: number[];
  sent: [string, Frame][];
}

/** A min-heap of (time, order) → event: time order, ties in insertion order. */
class Queue {
  private heap: { t: Millis; order: number; ev: Ev }[] = [];
  private less(i: number, j: number): boolean {
    const a = this.heap[i];
    const b = this.heap[j];
    return a.t < b.t || (a.t === b.t && a.order < b.order);
  }
  private swap(i: number, j: number): void {
    [this.heap[i], this.heap[j]] = [this.heap[j], this.heap[i]];
  }
  push(t: Millis, order: number, ev: Ev): void {
    this.heap.push({ t, order, ev });
    let i = this.heap.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  peek(): Millis | undefined {
    return this.heap[0]?.t;
  }
  pop(): Ev {
    const top = this.heap[0];
    const last = this.heap.pop();
    if (last === undefined || top === undefined) throw new Error("pop of an empty queue");
    if (this.heap.length > 0) {
      this.heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.heap.length && this.less(l, m)) m = l;
        if (r < this.heap.length && this.less(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top.ev;
  }
}

interface Serving {
  server: string;
  client: string;
  seq: number;
  cancelled: boolean;
}

const link = (a: string, b: string) => `${a}\u0000${b}`;
const serveKey = (server: string, client: string, seq: number) => `${server}\u0000${client}\u0000${seq}`;

class Sim {
  now: Millis = 0;
  nodes = new Map<string, Node>();
  links = new Set<string>();
  origin = new Map<number, Uint8Array>();
  queue = new Queue();
  order = 0;
  /** Serves in progress: (server, client, seq) -> cancelled? */
  serving = new Map<string, Serving>();
  httpCancelled = new Set<string>();
  linkMs: Millis = 5;
  /** Peer link rate, bytes per ms. */
  linkRate = 5_000;
  httpMs: Millis = 20;
  /** HTTP rate, bytes per ms. */
  httpRate = 1_000;

  add(id: string, cfg: CoreConfig, behaviour: Behaviour): void {
    const seed = this.nodes.size + 1;
    this.nodes.set(id, { core: new Core(cfg, seed), behaviour, completed: [], dropped: [], httpGets: [], evicted: [], sent: [] });
  }

  node(id: string): Node {
    const n = this.nodes.get(id);
    assert.ok(n, `no node ${id}`);
    return n;
  }

  /** Node ids in order (Rust keeps them in a BTreeMap). */
  ids(): string[] {
    return [...this.nodes.keys()].sort();
  }

  connect(a: string, b: string): void {
    this.links.add(link(a, b));
    this.links.add(link(b, a));
    const now = this.now;
    this.node(a).core.handlePeerUp(now, b);
    this.node(b).core.handlePeerUp(now, a);
    this.pump(a);
    this.pump(b);
  }

  disconnect(a: string, b: string): void {
    this.links.delete(link(a, b));
    this.links.delete(link(b, a));
    const now = this.now;
    this.nodes.get(a)?.core.handlePeerDown(now, b);
    this.nodes.get(b)?.core.handlePeerDown(now, a);
    this.pump(a);
    this.pump(b);
  }

  at(t: Millis, ev: Ev): void {
    this.order += 1;
    this.queue.push(t, this.order, ev);
  }

  /** The origin publishes `seq` now; the tracker tells every node (the `first` ones as first fetchers). */
  publish(seq: number, size: number, first: string[]): SegmentMeta {
    const { meta, data } = segment(seq, size);
    this.origin.set(seq, data);
    for (const id of this.ids()) {
      this.at(this.now + 10, { kind: "published", node: id, meta: { ...meta }, first: first.includes(id) });
    }
    return meta;
  }

  /** Carries out a node's actions. */
  pump(id: string): void {
    for (;;) {
      const now = this.now;
      const node = this.nodes.get(id);
      if (!node) return;
      const action = node.core.pollAction();
      if (!action) return;
      switch (action.type) {
        case "send": {
          node.sent.push([action.peer, action.frame]);
          if (this.links.has(link(id, action.peer))) {
            this.at(now + this.linkMs, { kind: "frame", to: action.peer, from: id, frame: action.frame });
          }
          break;
        }
        case "serve": {
          const { peer, rendition, seq, data, from, to } = action;
          const behaviour = node.behaviour;
          this.serving.set(serveKey(id, peer, seq), { server: id, client: peer, seq, cancelled: false });
          const k = behaviour.kind === "slow" ? behaviour.factor : 1;
          let t = now + this.linkMs;
          for (const f of chunks(rendition, seq, data, from)) {
            assert.ok(f.type === "chunk");
            if (f.offset >= to) break;
            let bytes = f.data;
            if (behaviour.kind === "corrupt") {
              bytes = bytes.slice();
              bytes[0] ^= 0xff;
            }
            assert.ok(bytes.length <= MAX_CHUNK_DATA);
            t += Math.ceil((bytes.length * k) / this.linkRate);
            this.at(t, { kind: "frame", to: peer, from: id, frame: { ...f, data: bytes } });
          }
          // The upload ends when its last chunk has left.
          this.at(t, { kind: "frame", to: id, from: peer, frame: null });
          break;
        }
        case "stop_serving":
          this.serving.set(serveKey(id, action.peer, action.seq), { server: id, client: action.peer, seq: action.seq, cancelled: true });
          break;
        case "http_get": {
          const { req, meta, from } = action;
          const seq = segmentRef(meta).seq;
          node.httpGets.push([now, seq, from]);
          const whole = this.origin.get(seq);
          assert.ok(whole, `the origin has no segment ${seq}`);
          const data = whole.subarray(from);
          let t = now + this.httpMs;
          const pieces: Uint8Array[] = [];
          for (let o = 0; o < data.length; o += 64 * 1024) pieces.push(data.subarray(o, Math.min(o + 64 * 1024, data.length)));
          pieces.forEach((p, i) => {
            t += Math.ceil(p.length / this.httpRate);
            this.at(t, { kind: "http", node: id, req, data: p, last: i + 1 === pieces.length });
          });
          break;
        }
        case "http_cancel":
          this.httpCancelled.add(`${id}\u0000${action.req}`);
          break;
        case "verify":
          // The browser hashes with WebCrypto, asynchronously; here at once.
          node.core.handleVerified(now, segmentRef(action.meta).seq, sha256Hex(action.data) === action.meta.sha256);
          break;
        case "complete":
          node.completed.push([action.meta, action.data, action.source, now]);
          break;
        case "evicted":
          node.evicted.push(action.seq);
          break;
        case "drop_peer":
          node.dropped.push([action.peer, action.reason]);
          this.disconnect(id, action.peer);
          break;
      }
    }
  }

  /** Runs until `until`, delivering events and timeouts in time order. */
  run(until: Millis): void {
    let steps = 0;
    for (;;) {
      steps += 1;
      assert.ok(steps < 1_000_000, `the simulation does not advance (at ${this.now} ms)`);
      let nextTimeout: [Millis, string] | undefined;
      for (const id of this.ids()) {
        const t = this.node(id).core.pollTimeout();
        if (t === undefined) continue;
        const when = Math.max(t, this.now);
        if (nextTimeout === undefined || when < nextTimeout[0]) nextTimeout = [when, id];
      }
      const nextEvent = this.queue.peek();
      let t: Millis;
      if (nextEvent !== undefined && nextTimeout !== undefined) t = Math.min(nextEvent, nextTimeout[0]);
      else if (nextEvent !== undefined) t = nextEvent;
      else if (nextTimeout !== undefined) t = nextTimeout[0];
      else break;
      if (t > until) break;
      this.now = t;
      if (nextEvent === t) {
        this.deliver(this.queue.pop());
      } else if (nextTimeout !== undefined) {
        const id = nextTimeout[1];
        this.node(id).core.handleTimeout(this.now);
        this.pump(id);
      }
    }
    this.now = until;
  }

  deliver(ev: Ev): void {
    const now = this.now;
    switch (ev.kind) {
      case "published":
        this.nodes.get(ev.node)?.core.handlePublished(now, ev.meta, ev.first);
        this.pump(ev.node);
        return;
      case "frame": {
        const { to, from, frame } = ev;
        if (!this.links.has(link(from, to))) return;
        // The end marker of a Serve (see pump): the upload is done.
        if (frame === null) {
          for (const [k, s] of [...this.serving]) {
            if (s.server === to && s.client === from) {
              this.serving.delete(k);
              this.node(to).core.handleUploadDone(now, from, s.seq);
            }
          }
          this.pump(to);
          return;
        }
        if (frame.type === "chunk" && this.serving.get(serveKey(from, to, frame.seq))?.cancelled === true) {
          return; // cancelled: stop sending
        }
        this.nodes.get(to)?.core.handleFrame(now, from, frame);
        this.pump(to);
        return;
      }
      case "http": {
        if (this.httpCancelled.has(`${ev.node}\u0000${ev.req}`)) return;
        const n = this.nodes.get(ev.node);
        if (n) {
          n.core.handleHttpData(now, ev.req, ev.data);
          if (ev.last) n.core.handleHttpDone(now, ev.req);
        }
        this.pump(ev.node);
        return;
      }
    }
  }
}

function viewer(): CoreConfig {
  return viewerConfig(R);
}

/** Drains a core's actions (Rust: `while core.poll_action().is_some() {}`), answering `verify` at once. */
function drain(core: Core, now: Millis): void {
  for (let a = core.pollAction(); a !== undefined; a = core.pollAction()) {
    if (a.type === "verify") core.handleVerified(now, segmentRef(a.meta).seq, matches(a.meta, a.data));
  }
}

test("a first fetcher fetches over HTTP at once and the swarm shares it", () => {
  const sim = new Sim();
  for (const id of ["a", "b", "c"]) sim.add(id, viewer(), HONEST);
  sim.connect("a", "b");
  sim.connect("b", "c");
  const meta = sim.publish(0, 300_000, ["a"]);
  sim.run(10_000);
  // a asked the origin as soon as it heard of the segment.
  assert.deepEqual(sim.node("a").httpGets, [[10, 0, 0]]);
  for (const id of ["a", "b", "c"]) {
    const n = sim.node(id);
    assert.equal(n.completed.length, 1, id);
    const [m, data, , at] = n.completed[0];
    assert.deepEqual(m, meta);
    assert.ok(matches(m, data));
    // Well before the deadline (publish + 4 s).
    assert.ok(at < 4_000, `${id} completed at ${at}`);
  }
  // b and c never touched HTTP: b got it from a, c from b.
  assert.deepEqual(sim.node("b").httpGets, []);
  assert.deepEqual(sim.node("c").httpGets, []);
  assert.equal(sim.node("b").completed[0][2], "peers");
  assert.equal(sim.node("c").core.stats.p2pBytes, 300_000);
  assert.equal(sim.node("b").core.stats.uploadedBytes, 300_000);
});

test("with no holder, HTTP starts at the last safe moment", () => {
  const sim = new Sim();
  sim.add("alone", viewer(), HONEST);
  sim.publish(0, 200_000, []);
  sim.run(10_000);
  const n = sim.node("alone");
  // Deadline 10 + 4000; margin 500; 200 KB at the assumed 500 B/ms = 400 ms.
  assert.deepEqual(n.httpGets, [[10 + 4000 - 500 - 400, 0, 0]]);
  const [, , source, at] = n.completed[0];
  assert.equal(source, "http");
  assert.ok(at <= 4010, `completed at ${at}, after the deadline`);
  assert.equal(n.core.stats.late, 0);
});

test("a slow peer is abandoned and the rest comes by HTTP range", () => {
  const sim = new Sim();
  sim.add("seed", viewer(), slow(50));
  sim.add("v", viewer(), HONEST);
  sim.connect("seed", "v");
  sim.publish(0, 400_000, ["seed"]);
  sim.run(20_000);
  const v = sim.node("v");
  const [meta, data, source, at] = v.completed[0];
  assert.ok(matches(meta, data));
  assert.equal(source, "mixed", "part from the peer, the rest over HTTP");
  assert.ok(at <= 4010, `completed at ${at}, after the deadline`);
  assert.equal(v.core.stats.slowTransfers, 1);
  // HTTP resumed where the peer stopped.
  const [, , from] = v.httpGets[0];
  assert.ok(from > 0 && from < 400_000, `resumed from byte ${from}`);
  assert.equal(v.core.stats.late, 0);
});

test("corrupted bytes are never delivered and their sender is dropped", () => {
  const sim = new Sim();
  sim.add("evil", viewer(), CORRUPT);
  sim.add("v", viewer(), HONEST);
  sim.add("w", viewer(), HONEST);
  sim.connect("evil", "v");
  sim.connect("v", "w");
  // evil really holds the segment (it fetched it over HTTP first).
  sim.publish(0, 100_000, ["evil"]);
  sim.run(10_000);
  const v = sim.node("v");
  assert.deepEqual(v.dropped, [["evil", "hash_mismatch"]]);
  assert.equal(v.core.stats.hashFailures, 1);
  // v completed only with the origin's bytes, and so did w (through v).
  assert.equal(v.completed.length, 1);
  for (const id of ["v", "w"]) {
    const n = sim.node(id);
    const [meta, data, , at] = n.completed[0];
    assert.ok(matches(meta, data), `${id} delivered bytes that do not match`);
    assert.ok(at <= 4010, `${id} completed at ${at}`);
  }
});

test("a neighbour lost mid-transfer is replaced before the deadline", () => {
  const sim = new Sim();
  sim.linkRate = 200; // 1 MB takes 5 s over this link
  sim.add("a", viewer(), HONEST);
  sim.add("b", viewer(), HONEST);
  sim.add("v", viewer(), HONEST);
  sim.connect("a", "v");
  sim.connect("b", "v");
  sim.publish(0, 100_000, ["a", "b"]);
  // Let a and b get it from the origin and v start from one of them.
  sim.run(300);
  sim.linkRate = 200;
  sim.run(350);
  const serving = [...sim.serving.values()].map((s) => s.server);
  const victim = serving[0] ?? "a";
  sim.disconnect(victim, "v");
  sim.nodes.delete(victim);
  sim.run(10_000);
  const v = sim.node("v");
  const [meta, data, , at] = v.completed[0];
  assert.ok(matches(meta, data));
  assert.ok(at <= 4010, `completed at ${at}`);
  assert.equal(v.core.stats.late, 0);
});

test("requests are served within slots and hostile ones refused", () => {
  const cfg = viewer();
  cfg.uploadSlots = 1;
  cfg.maxRequestsPerSec = 20;
  const core = new Core(cfg, 1);
  const { meta, data } = segment(5, 50_000);
  core.handlePublished(0, { ...meta }, true);
  const get = core.pollAction();
  assert.ok(get?.type === "http_get", "a first fetch");
  core.handleHttpData(100, get.req, data);
  core.handleHttpDone(100, get.req);
  drain(core, 100);
  for (const p of ["p1", "p2", "p3"]) core.handlePeerUp(100, p);
  drain(core, 100);
  const req = (seq: number, offset: number, length: number): Frame => ({ type: "request", rendition: R, seq, offset, length });
  core.handleFrame(200, "p1", req(5, 0, 0));
  let a = core.pollAction();
  assert.ok(a?.type === "serve" && a.from === 0 && a.to === 50_000, JSON.stringify(a?.type));
  // The only slot is taken: busy.
  core.handleFrame(200, "p2", req(5, 0, 0));
  a = core.pollAction();
  assert.ok(a?.type === "send" && a.frame.type === "reject" && a.frame.reason === "busy");
  core.handleUploadDone(300, "p1", 5);
  // A range, then one outside the segment, then a segment outside the window.
  core.handleFrame(300, "p2", req(5, 40_000, 100));
  a = core.pollAction();
  assert.ok(a?.type === "serve" && a.from === 40_000 && a.to === 40_100);
  core.handleFrame(300, "p3", req(5, 60_000, 0));
  a = core.pollAction();
  assert.ok(a?.type === "send" && a.frame.type === "reject" && a.frame.reason === "bad_request");
  core.handleFrame(300, "p3", req(999, 0, 0));
  a = core.pollAction();
  assert.ok(a?.type === "send" && a.frame.type === "reject" && a.frame.reason === "not_found");
  assert.equal(core.stats.rejectedRequests, 3);
  // A flood of requests gets the neighbour dropped.
  for (let i = 0; i < 30; i++) core.handleFrame(400, "p3", req(999, 0, 0));
  let dropped = false;
  for (let x = core.pollAction(); x !== undefined; x = core.pollAction()) {
    dropped ||= x.type === "drop_peer" && x.peer === "p3" && x.reason === "flood";
  }
  assert.ok(dropped);
  // Chunks nobody asked for are ignored; a lying total drops the sender.
  core.handleFrame(500, "p2", { type: "chunk", rendition: R, seq: 5, offset: 0, total: 10, data: new TextEncoder().encode("x") });
  assert.equal(core.pollAction(), undefined);
});

test("the window keeps the newest segments", () => {
  const cfg = viewer();
  cfg.windowSegments = 3;
  const sim = new Sim();
  sim.add("v", cfg, HONEST);
  for (let seq = 0; seq < 6; seq++) {
    sim.publish(seq, 10_000, ["v"]);
    sim.run(sim.now + 2000);
  }
  const v = sim.node("v");
  assert.equal(v.completed.length, 6);
  assert.deepEqual(v.evicted, [0, 1, 2]);
  assert.deepEqual(
    v.core.window().map((m) => segmentRef(m).seq),
    [3, 4, 5],
  );
  assert.equal(v.core.segment(2), undefined);
  assert.notEqual(v.core.segment(5), undefined);
});

test("a viewer ignores renditions it does not play", () => {
  const core = new Core(viewer(), 1);
  const { meta } = segment(0, 1000, "720p");
  core.handlePublished(0, meta, true);
  assert.equal(core.pollAction(), undefined);
  core.handleTimeout(10_000);
  assert.equal(core.stats.late, 0);
  // The TS core keeps one rendition: nothing of 720p (nor anything else) was kept.
  assert.deepEqual(core.window(), []);
});

test("the player position pulls deadlines in", () => {
  const sim = new Sim();
  sim.add("v", viewer(), HONEST);
  sim.publish(0, 100_000, []);
  sim.run(20);
  // The local player asks for it now: HTTP starts at once, not at 3.4 s.
  const now = sim.now;
  sim.node("v").core.handlePlayhead(now, 0, now);
  sim.pump("v");
  sim.run(5_000);
  assert.equal(sim.node("v").httpGets[0][0], 20);
});

// ---- parity with the Rust core beyond the scenarios ---------------------------

test("parity: a frame about another rendition still runs the scheduler, as in Rust", () => {
  // Rust's handle_frame stores a have / have_map of any rendition and then
  // schedules; a scheduling pass at that moment starts what is due.
  const core = new Core(viewer(), 1);
  const { meta } = segment(0, 200_000);
  core.handlePublished(0, meta, false); // HTTP due at 4000 - 500 - 400 = 3100
  core.handlePeerUp(0, "p");
  drain(core, 0);
  core.handleFrame(3200, "p", { type: "have", rendition: "720p", seq: 7 });
  const a = core.pollAction();
  assert.ok(a?.type === "http_get" && a.from === 0, `got ${a?.type}`);
  core.handleFrame(3300, "p", { type: "have_map", rendition: "720p", base_seq: 0, bitmap: new Uint8Array([0xff]) });
  assert.equal(core.pollAction(), undefined);
});

test("parity: a not_found reject for another rendition leaves the neighbour's record of this one alone", () => {
  const cfg = viewer();
  cfg.downloadsPerPeer = 1;
  const core = new Core(cfg, 1);
  const s1 = segment(1, 10_000);
  const s2 = segment(2, 10_000);
  core.handlePublished(0, s1.meta, false);
  core.handlePublished(0, s2.meta, false);
  core.handlePeerUp(0, "p");
  drain(core, 0);
  core.handleFrame(10, "p", { type: "have", rendition: R, seq: 1 });
  core.handleFrame(10, "p", { type: "have", rendition: R, seq: 2 });
  let a = core.pollAction();
  assert.ok(a?.type === "send" && a.frame.type === "request" && a.frame.seq === 1, "seq 1 first (one download per peer)");
  assert.equal(core.pollAction(), undefined);
  // p has no 720p/2: nothing to do with 360p/2.
  core.handleFrame(20, "p", { type: "reject", rendition: "720p", seq: 2, reason: "not_found" });
  assert.equal(core.pollAction(), undefined);
  // p delivers seq 1; its slot is free and it still has seq 2.
  for (const f of chunks(R, 1, s1.data)) core.handleFrame(30, "p", f);
  const requests: number[] = [];
  for (a = core.pollAction(); a !== undefined; a = core.pollAction()) {
    if (a.type === "verify") core.handleVerified(30, segmentRef(a.meta).seq, matches(a.meta, a.data));
    if (a.type === "send" && a.frame.type === "request") requests.push(a.frame.seq);
  }
  assert.notEqual(core.segment(1), undefined);
  assert.deepEqual(requests, [2]);
});

test("upload slots follow the uplink (as Rust's upload_slots)", () => {
  const cfg = viewerConfig("720p");
  const [size, dur] = [625_000, 2000];
  assert.equal(uploadSlotsFor(cfg, size, dur), 6);
  for (const [rate, slots] of [[1000, 1], [100, 1], [2500, 4], [125_000, 6]]) {
    assert.equal(uploadSlotsFor({ ...cfg, uploadRate: rate }, size, dur), slots, `uplink ${rate} B/ms`);
  }
});
