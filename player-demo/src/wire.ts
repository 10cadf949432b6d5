// The peer wire protocol (proto/src/wire.rs): binary frames on one
// pre-negotiated, ordered, reliable RTCDataChannel (negotiated: true, id 0,
// label "swarmcast", protocol "swarmcast/1"). Integers are big-endian.
// Layout: type byte, segment reference (rendition_len u8, rendition,
// seq u64), then the type's fields. Decoding never throws on hostile input:
// it returns a FrameError. The golden vectors in proto/vectors/frames.json
// are checked by test/wire.test.ts.

export const MAX_FRAME = 16 * 1024;
export const MAX_SEGMENT_SIZE = 64 * 1024 * 1024;
export const MAX_BITMAP = 1024;
export const MAX_RENDITION_LEN = 16;
export const MAX_CHUNK_HEADER = 1 + 1 + MAX_RENDITION_LEN + 8 + 4 + 4;
export const MAX_CHUNK_DATA = MAX_FRAME - MAX_CHUNK_HEADER;

const T_HAVE_MAP = 0x01;
const T_HAVE = 0x02;
const T_REQUEST = 0x03;
const T_CHUNK = 0x04;
const T_CANCEL = 0x05;
const T_REJECT = 0x06;

export type RejectReason = "busy" | "not_found" | "bad_request";
const REASONS: RejectReason[] = ["busy", "not_found", "bad_request"];

export type Frame =
  | { type: "have_map"; rendition: string; base_seq: number; bitmap: Uint8Array }
  | { type: "have"; rendition: string; seq: number }
  | { type: "request"; rendition: string; seq: number; offset: number; length: number }
  | { type: "chunk"; rendition: string; seq: number; offset: number; total: number; data: Uint8Array }
  | { type: "cancel"; rendition: string; seq: number }
  | { type: "reject"; rendition: string; seq: number; reason: RejectReason };

/** Why bytes are not a frame; `code` matches the Rust error names in the vectors. */
export class FrameError extends Error {
  constructor(
    readonly code:
      | "empty"
      | "too_large"
      | "truncated"
      | "trailing"
      | "unknown_type"
      | "unknown_reason"
      | "bad_rendition"
      | "segment_too_large"
      | "chunk_overrun"
      | "bitmap_too_large",
    message: string,
  ) {
    super(message);
  }
}

const ID_RE = /^[A-Za-z0-9_-]+$/;

/** A rendition id: 1..=16 bytes of [A-Za-z0-9_-]. */
export function validRendition(r: string): boolean {
  return r.length >= 1 && r.length <= MAX_RENDITION_LEN && ID_RE.test(r);
}

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array, readonly view: DataView) {}
  need(n: number): void {
    if (this.buf.length - this.pos < n) {
      throw new FrameError("truncated", `frame truncated: needed ${n} bytes, have ${this.buf.length - this.pos}`);
    }
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const hi = this.view.getUint32(this.pos);
    const lo = this.view.getUint32(this.pos + 4);
    this.pos += 8;
    // Sequence numbers above 2^53 are not representable; such frames are
    // refused as a bad segment reference rather than silently rounded.
    if (hi > 0x1fffff) {
      throw new FrameError("bad_rendition", "sequence number above 2^53");
    }
    return hi * 0x1_0000_0000 + lo;
  }
  take(n: number): Uint8Array {
    this.need(n);
    const s = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  segment(): [string, number] {
    const n = this.u8();
    this.need(n);
    const bytes = this.buf.subarray(this.pos, this.pos + n);
    let r = "";
    for (const b of bytes) r += String.fromCharCode(b);
    if (!validRendition(r)) {
      throw new FrameError("bad_rendition", `bad rendition id (${n} bytes)`);
    }
    this.pos += n;
    return [r, this.u64()];
  }
}

/** Decodes one frame; throws FrameError. Chunk data and bitmaps are views of `buf`. */
export function decodeFrame(buf: Uint8Array): Frame {
  const len = buf.length;
  if (len === 0) throw new FrameError("empty", "empty frame");
  if (len > MAX_FRAME) throw new FrameError("too_large", `frame of ${len} bytes is over the 16384-byte limit`);
  const r = new Reader(buf, new DataView(buf.buffer, buf.byteOffset, buf.byteLength));
  const ty = r.u8();
  if (ty < T_HAVE_MAP || ty > T_REJECT) {
    throw new FrameError("unknown_type", `unknown frame type 0x${ty.toString(16).padStart(2, "0")}`);
  }
  const [rendition, seq] = r.segment();
  let frame: Frame;
  switch (ty) {
    case T_HAVE_MAP: {
      const n = r.u16();
      if (n > MAX_BITMAP) throw new FrameError("bitmap_too_large", `bitmap of ${n} bytes`);
      frame = { type: "have_map", rendition, base_seq: seq, bitmap: r.take(n) };
      break;
    }
    case T_HAVE:
      frame = { type: "have", rendition, seq };
      break;
    case T_REQUEST:
      frame = { type: "request", rendition, seq, offset: r.u32(), length: r.u32() };
      break;
    case T_CHUNK: {
      const offset = r.u32();
      const total = r.u32();
      if (total > MAX_SEGMENT_SIZE) throw new FrameError("segment_too_large", `segment total ${total} is over the cap`);
      const data = r.take(buf.length - r.pos);
      if (offset + data.length > total) {
        throw new FrameError("chunk_overrun", `chunk at offset ${offset} with ${data.length} bytes overruns total ${total}`);
      }
      frame = { type: "chunk", rendition, seq, offset, total, data };
      break;
    }
    case T_CANCEL:
      frame = { type: "cancel", rendition, seq };
      break;
    default: {
      const b = r.u8();
      const reason = REASONS[b - 1];
      if (reason === undefined) {
        throw new FrameError("unknown_reason", `unknown reject reason 0x${b.toString(16).padStart(2, "0")}`);
      }
      frame = { type: "reject", rendition, seq, reason };
    }
  }
  if (r.pos !== buf.length) throw new FrameError("trailing", `${buf.length - r.pos} trailing bytes after the frame`);
  return frame;
}

function encodedLen(f: Frame): number {
  const seg = 1 + 1 + f.rendition.length + 8;
  switch (f.type) {
    case "have_map":
      return seg + 2 + f.bitmap.length;
    case "have":
    case "cancel":
      return seg;
    case "request":
      return seg + 8;
    case "chunk":
      return seg + 8 + f.data.length;
    case "reject":
      return seg + 1;
  }
}

/** Encodes one frame; throws FrameError for frames the decoder would refuse. */
export function encodeFrame(f: Frame): Uint8Array {
  if (!validRendition(f.rendition)) throw new FrameError("bad_rendition", "bad rendition id");
  const len = encodedLen(f);
  if (len > MAX_FRAME) throw new FrameError("too_large", `frame of ${len} bytes is over the 16384-byte limit`);
  const out = new Uint8Array(len);
  const v = new DataView(out.buffer);
  const ty = { have_map: T_HAVE_MAP, have: T_HAVE, request: T_REQUEST, chunk: T_CHUNK, cancel: T_CANCEL, reject: T_REJECT }[f.type];
  out[0] = ty;
  out[1] = f.rendition.length;
  for (let i = 0; i < f.rendition.length; i++) out[2 + i] = f.rendition.charCodeAt(i);
  let p = 2 + f.rendition.length;
  const seq = f.type === "have_map" ? f.base_seq : f.seq;
  v.setUint32(p, Math.floor(seq / 0x1_0000_0000));
  v.setUint32(p + 4, seq >>> 0);
  p += 8;
  switch (f.type) {
    case "have_map":
      if (f.bitmap.length > MAX_BITMAP) throw new FrameError("bitmap_too_large", "bitmap too large");
      v.setUint16(p, f.bitmap.length);
      out.set(f.bitmap, p + 2);
      break;
    case "request":
      v.setUint32(p, f.offset);
      v.setUint32(p + 4, f.length);
      break;
    case "chunk":
      if (f.total > MAX_SEGMENT_SIZE) throw new FrameError("segment_too_large", "segment too large");
      if (f.offset + f.data.length > f.total) throw new FrameError("chunk_overrun", "chunk overruns its total");
      v.setUint32(p, f.offset);
      v.setUint32(p + 4, f.total);
      out.set(f.data, p + 8);
      break;
    case "reject":
      out[p] = REASONS.indexOf(f.reason) + 1;
      break;
    default:
      break;
  }
  return out;
}

/** The chunk frames of `segment[from..]`, each within MAX_FRAME. */
export function* chunks(rendition: string, seq: number, segment: Uint8Array, from = 0): Generator<Frame> {
  for (let off = Math.min(from, segment.length); off < segment.length; off += MAX_CHUNK_DATA) {
    yield {
      type: "chunk",
      rendition,
      seq,
      offset: off,
      total: segment.length,
      data: segment.subarray(off, Math.min(off + MAX_CHUNK_DATA, segment.length)),
    };
  }
}
