// Tracker messages (proto/src/tracker.rs): JSON objects with `v` (1) and
// `type`. The SDK encodes client messages exactly as the Rust side does
// (same field order, optional fields left out) and decodes server messages
// with the same checks. test/tracker.test.ts runs proto/vectors/tracker.json.

export const VERSION = 1;
export const MAX_MESSAGE = 32 * 1024;
export const MAX_LIST = 512;
export const MAX_SDP = 16 * 1024;
/** Largest ICE candidate line accepted in a signal. */
export const MAX_CANDIDATE = 1024;
/** Largest free-text field (error message, region label, sdp_mid, ICE server URL). */
export const MAX_TEXT = 256;
/** Most ICE servers in a welcome, and most URLs per server. */
export const MAX_ICE = 16;

export interface SegmentMeta {
  id: string; // "stream/rendition/seq"
  size: number;
  sha256: string; // hex
  duration_ms: number;
  published_at_ms: number;
}

export interface SegmentRef {
  rendition: string;
  seq: number;
}

export type Signal =
  | { kind: "offer"; sdp: string }
  | { kind: "answer"; sdp: string }
  | { kind: "candidate"; candidate: string; sdp_mid?: string; sdp_mline_index?: number }
  | { kind: "end_of_candidates" };

export type ClientKind = "native" | "browser" | "relay" | "publisher";
export type ReportReason = "hash_mismatch" | "protocol" | "flood";

export interface StatsReport {
  http_bytes: number;
  p2p_bytes: number;
  uploaded_bytes: number;
  stalls: number;
  stall_ms: number;
  latency_ms?: number;
  peers: number;
  startup_ms?: number;
}

export type ClientMsg =
  | { type: "hello"; token: string; stream: string; peer_id: string; kind: ClientKind; upload_kbps: number; region?: string; cell?: number }
  | { type: "have"; segments: SegmentRef[] }
  | { type: "lost"; segments: SegmentRef[] }
  | { type: "have_map"; rendition: string; base_seq: number; bitmap: string }
  | { type: "want_peers"; count: number }
  | { type: "peer_closed"; peer_id: string }
  | { type: "report_peer"; peer_id: string; reason: ReportReason }
  | { type: "signal"; to: string; signal: Signal }
  | { type: "publish"; meta: SegmentMeta }
  | ({ type: "stats" } & StatsReport)
  | { type: "cell_report"; members: number }
  | { type: "ping"; nonce: number }
  | { type: "pong"; nonce: number };

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

export interface PeerInfo {
  peer_id: string;
  kind: ClientKind;
  region?: string;
  initiator: boolean;
}

export type ServerMsg =
  | {
      type: "welcome";
      peer_id: string;
      config: { max_peers: number; window_segments: number; ping_interval_ms: number; idle_timeout_ms: number; ice_servers: IceServer[] };
    }
  | { type: "peers"; peers: PeerInfo[] }
  | { type: "peer_left"; peer_id: string }
  | { type: "signal"; from: string; signal: Signal }
  | { type: "segment"; meta: SegmentMeta }
  | { type: "fetch"; meta: SegmentMeta }
  | { type: "stripes"; rendition: string; sources: StripeSource[]; children: string[] }
  | { type: "error"; code: string; message: string }
  | { type: "ping"; nonce: number }
  | { type: "pong"; nonce: number }
  | { type: "redirect"; cell: number };

/** Most cells one stream is split into (proto's MAX_CELLS). */
export const MAX_CELLS = 65_535;

/** Where one stripe of each new segment comes from (native peers' plan; the
 * browser core decodes it and fetches as before). */
export type StripeSource = { from: "origin" } | { from: "swarm" } | { from: "peer"; peer_id: string };

/** Most stripes in a plan. */
export const MAX_STRIPES = 16;

/** A message that is not valid; `code` is the tracker's error code. */
export class MessageError extends Error {
  constructor(
    readonly code: "malformed" | "unsupported_version" | "too_large",
    message: string,
  ) {
    super(message);
  }
}

const ID_RE = /^[A-Za-z0-9_-]+$/;
const KINDS: ClientKind[] = ["native", "browser", "relay", "publisher"];
/** The tracker's error codes (Rust `ErrorCode`). */
const ERROR_CODES = [
  "unsupported_version",
  "malformed",
  "too_large",
  "unauthorized",
  "token_expired",
  "not_joined",
  "unknown_peer",
  "peer_id_taken",
  "rate_limited",
  "forbidden",
  "overloaded",
  "internal",
];
/** Unicode category Cc (Rust `char::is_control`). */
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

function bad(msg: string): never {
  throw new MessageError("malformed", msg);
}
function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) bad(`${what} is not an object`);
  return v as Record<string, unknown>;
}
function str(o: Record<string, unknown>, k: string, max = MAX_MESSAGE): string {
  const v = o[k];
  if (typeof v !== "string") bad(`${k} is not a string`);
  if (new TextEncoder().encode(v).length > max) bad(`${k} is over ${max} bytes`);
  return v;
}
function optStr(o: Record<string, unknown>, k: string, max = MAX_MESSAGE): string | undefined {
  return o[k] === undefined || o[k] === null ? undefined : str(o, k, max);
}
/** Free text (Rust `check_text`): at most MAX_TEXT bytes, no control character. */
function freeText(v: unknown, what: string): string {
  if (typeof v !== "string") bad(`${what} is not a string`);
  if (new TextEncoder().encode(v).length > MAX_TEXT) bad(`${what} is over ${MAX_TEXT} bytes`);
  if (CONTROL_RE.test(v)) bad(`${what} holds a control character`);
  return v;
}
function optFreeText(o: Record<string, unknown>, k: string): string | undefined {
  return o[k] === undefined || o[k] === null ? undefined : freeText(o[k], k);
}
function uint(o: Record<string, unknown>, k: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) bad(`${k} is not an unsigned integer`);
  return v;
}
function optUint(o: Record<string, unknown>, k: string, max?: number): number | undefined {
  return o[k] === undefined || o[k] === null ? undefined : uint(o, k, max);
}
function id(o: Record<string, unknown>, k: string, max = 64): string {
  const v = str(o, k);
  if (v.length === 0 || v.length > max || !ID_RE.test(v)) bad(`${k} is not a valid id`);
  return v;
}
function list(o: Record<string, unknown>, k: string, max = MAX_LIST): unknown[] {
  const v = o[k];
  if (!Array.isArray(v)) bad(`${k} is not a list`);
  if (v.length > max) bad(`${k} has over ${max} entries`);
  return v;
}

/**
 * The tracker URL a client of `stream` connects to: `url` with `stream=ID`
 * in its query unless it has a `stream` parameter already, and `cell=N`
 * after a redirect to cell N (as `url_for` in proto/src/tracker.rs): a
 * load balancer in front of several tracker nodes routes by them.
 */
export function urlWithStream(url: string, stream: string, cell?: number): string {
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  const fragment = hash < 0 ? "" : url.slice(hash);
  const q = base.indexOf("?");
  const path = q < 0 ? base : base.slice(0, q);
  const is = (kv: string, key: string) => kv === key || kv.startsWith(`${key}=`);
  // As url_for: a cell already there is replaced, the stream added once.
  const params = (q < 0 ? "" : base.slice(q + 1)).split("&").filter((kv) => kv !== "" && !is(kv, "cell"));
  if (!params.some((kv) => is(kv, "stream"))) params.push(`stream=${stream}`);
  if (cell !== undefined) params.push(`cell=${cell}`);
  return `${path}${params.length > 0 ? "?" : ""}${params.join("&")}${fragment}`;
}

export function parseMeta(v: unknown): SegmentMeta {
  const o = obj(v, "meta");
  const idText = str(o, "id", 200);
  const parts = idText.split("/");
  // As Rust's SegmentId: seq is 1..=20 decimal digits (leading zeros allowed)
  // and the id is kept in its canonical form (`s/360p/007` is `s/360p/7`).
  // Above 2^53 a JS number cannot hold the seq: refused.
  if (
    parts.length !== 3 ||
    !ID_RE.test(parts[0]) ||
    parts[0].length > 64 ||
    !ID_RE.test(parts[1]) ||
    parts[1].length > 16 ||
    !/^[0-9]{1,20}$/.test(parts[2]) ||
    !Number.isSafeInteger(Number(parts[2]))
  ) {
    bad("meta.id is not stream/rendition/seq");
  }
  const sha = str(o, "sha256", 64);
  if (!/^[0-9a-fA-F]{64}$/.test(sha)) bad("meta.sha256 is not 64 hex digits");
  return {
    id: `${parts[0]}/${parts[1]}/${Number(parts[2])}`,
    size: uint(o, "size"),
    sha256: sha.toLowerCase(),
    duration_ms: uint(o, "duration_ms", 0xffff_ffff),
    published_at_ms: uint(o, "published_at_ms"),
  };
}

/** Splits a segment id into its parts. */
export function segmentRef(meta: SegmentMeta): { stream: string; rendition: string; seq: number } {
  const [stream, rendition, seq] = meta.id.split("/");
  return { stream, rendition, seq: Number(seq) };
}

function parseSignal(v: unknown): Signal {
  const o = obj(v, "signal");
  switch (o.kind) {
    case "offer":
    case "answer":
      return { kind: o.kind, sdp: str(o, "sdp", MAX_SDP) };
    case "candidate": {
      const s: Signal = { kind: "candidate", candidate: str(o, "candidate", MAX_CANDIDATE) };
      const mid = optFreeText(o, "sdp_mid");
      const idx = optUint(o, "sdp_mline_index", 0xffff);
      if (mid !== undefined) s.sdp_mid = mid;
      if (idx !== undefined) s.sdp_mline_index = idx;
      return s;
    }
    case "end_of_candidates":
      return { kind: "end_of_candidates" };
    default:
      return bad("unknown signal kind");
  }
}

function parsePeer(v: unknown): PeerInfo {
  const o = obj(v, "peer");
  const kind = str(o, "kind") as ClientKind;
  if (!KINDS.includes(kind)) bad("unknown kind");
  if (typeof o.initiator !== "boolean") bad("initiator is not a boolean");
  const p: PeerInfo = { peer_id: id(o, "peer_id"), kind, initiator: o.initiator };
  const region = optFreeText(o, "region");
  if (region !== undefined) p.region = region;
  return p;
}

/** Decodes a server message; throws MessageError. */
export function decodeServer(text: string): ServerMsg {
  // The limit counts UTF-8 bytes; a string has at least as many bytes as UTF-16 units.
  const size = text.length > MAX_MESSAGE ? text.length : new TextEncoder().encode(text).length;
  if (size > MAX_MESSAGE) throw new MessageError("too_large", `message of ${size} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    bad("not JSON");
  }
  const o = obj(raw, "message");
  // Missing, null or not a number: malformed; any number but 1 (2, -1, 1.5): unsupported.
  if (typeof o.v !== "number") bad("v is missing or not a number");
  if (o.v !== VERSION) throw new MessageError("unsupported_version", `version ${o.v}`);
  switch (o.type) {
    case "welcome": {
      const c = obj(o.config, "config");
      return {
        type: "welcome",
        peer_id: id(o, "peer_id"),
        config: {
          max_peers: uint(c, "max_peers", 0xffff),
          window_segments: uint(c, "window_segments", 0xffff_ffff),
          ping_interval_ms: uint(c, "ping_interval_ms", 0xffff_ffff),
          idle_timeout_ms: uint(c, "idle_timeout_ms", 0xffff_ffff),
          ice_servers: (c.ice_servers === undefined ? [] : list(c, "ice_servers", MAX_ICE)).map((s) => {
            const so = obj(s, "ice server");
            const out: IceServer = { urls: list(so, "urls", MAX_ICE).map((u) => freeText(u, "ice server url")) };
            const user = optStr(so, "username");
            const cred = optStr(so, "credential");
            if (user !== undefined) out.username = user;
            if (cred !== undefined) out.credential = cred;
            return out;
          }),
        },
      };
    }
    case "peers":
      return { type: "peers", peers: list(o, "peers").map(parsePeer) };
    case "peer_left":
      return { type: "peer_left", peer_id: id(o, "peer_id") };
    case "signal":
      return { type: "signal", from: id(o, "from"), signal: parseSignal(o.signal) };
    case "segment":
    case "fetch":
      return { type: o.type, meta: parseMeta(o.meta) };
    case "stripes": {
      const sources = list(o, "sources", MAX_STRIPES).map((v): StripeSource => {
        const so = obj(v, "stripe source");
        switch (so.from) {
          case "origin":
          case "swarm":
            return { from: so.from };
          case "peer":
            return { from: "peer", peer_id: id(so, "peer_id") };
          default:
            return bad("unknown stripe source");
        }
      });
      if (sources.length === 0) bad("stripes has no source");
      const children = (o.children === undefined ? [] : list(o, "children")).map((c) => id({ c }, "c"));
      return { type: "stripes", rendition: id(o, "rendition", 16), sources, children };
    }
    case "error": {
      const code = str(o, "code", 64);
      if (!ERROR_CODES.includes(code)) bad("unknown error code");
      return { type: "error", code, message: str(o, "message", MAX_TEXT) };
    }
    case "ping":
    case "pong":
      return { type: o.type, nonce: uint(o, "nonce") };
    case "redirect": {
      const cell = uint(o, "cell", MAX_CELLS);
      if (cell === 0) bad("cell 0 is the stream's home");
      return { type: "redirect", cell };
    }
    default:
      return bad("unknown type");
  }
}

/** Encodes a client message exactly as the Rust side does. */
export function encodeClient(m: ClientMsg): string {
  // JSON.stringify keeps insertion order: build each object in the Rust
  // field order, leaving out absent optional fields.
  const body: Record<string, unknown> = { v: VERSION, type: m.type };
  switch (m.type) {
    case "hello":
      Object.assign(body, { token: m.token, stream: m.stream, peer_id: m.peer_id, kind: m.kind, upload_kbps: m.upload_kbps });
      if (m.region !== undefined) body.region = m.region;
      if (m.cell !== undefined) body.cell = m.cell;
      break;
    case "have":
    case "lost":
      body.segments = m.segments.map((s) => ({ rendition: s.rendition, seq: s.seq }));
      break;
    case "have_map":
      Object.assign(body, { rendition: m.rendition, base_seq: m.base_seq, bitmap: m.bitmap });
      break;
    case "want_peers":
      body.count = m.count;
      break;
    case "peer_closed":
      body.peer_id = m.peer_id;
      break;
    case "report_peer":
      Object.assign(body, { peer_id: m.peer_id, reason: m.reason });
      break;
    case "signal": {
      const s: Record<string, unknown> = { kind: m.signal.kind };
      if (m.signal.kind === "offer" || m.signal.kind === "answer") s.sdp = m.signal.sdp;
      if (m.signal.kind === "candidate") {
        s.candidate = m.signal.candidate;
        if (m.signal.sdp_mid !== undefined) s.sdp_mid = m.signal.sdp_mid;
        if (m.signal.sdp_mline_index !== undefined) s.sdp_mline_index = m.signal.sdp_mline_index;
      }
      Object.assign(body, { to: m.to, signal: s });
      break;
    }
    case "publish":
      body.meta = { id: m.meta.id, size: m.meta.size, sha256: m.meta.sha256, duration_ms: m.meta.duration_ms, published_at_ms: m.meta.published_at_ms };
      break;
    case "stats":
      Object.assign(body, { http_bytes: m.http_bytes, p2p_bytes: m.p2p_bytes, uploaded_bytes: m.uploaded_bytes, stalls: m.stalls, stall_ms: m.stall_ms });
      if (m.latency_ms !== undefined) body.latency_ms = m.latency_ms;
      body.peers = m.peers;
      if (m.startup_ms !== undefined) body.startup_ms = m.startup_ms;
      break;
    case "cell_report":
      body.members = m.members;
      break;
    case "ping":
    case "pong":
      body.nonce = m.nonce;
      break;
  }
  return JSON.stringify(body);
}
