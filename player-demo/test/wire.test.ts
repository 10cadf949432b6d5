// The peer wire codec (src/wire.ts) against the golden vectors of
// proto/vectors/frames.json (the same file the Rust crate checks), plus
// hostile input: random bytes, truncations, and the chunker.

import { test } from "node:test";
import { mulberry32 as prng } from "../src/prng.js";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  FrameError,
  MAX_CHUNK_DATA,
  MAX_FRAME,
  MAX_SEGMENT_SIZE,
  chunks,
  decodeFrame,
  encodeFrame,
  type Frame,
} from "../src/wire.js";

// ---- vector file ------------------------------------------------------------

type ByteString = string | { prefix_hex: string; fill_byte: number; len: number };

interface Case {
  name: string;
  hex: ByteString;
  frame?: Record<string, unknown>;
  error?: string;
}

const VECTORS = new URL("../../../proto/vectors/frames.json", import.meta.url);
const cases: Case[] = JSON.parse(readFileSync(VECTORS, "utf8"));

const CASE_KEYS = new Set(["name", "hex", "frame", "error"]);
const FILL_KEYS = new Set(["prefix_hex", "fill_byte", "len"]);
/** The fields of each frame type (README: `frame` holds `type` and every field, nothing else). */
const FRAME_FIELDS: Record<string, string[]> = {
  have_map: ["rendition", "base_seq", "bitmap"],
  have: ["rendition", "seq"],
  request: ["rendition", "seq", "offset", "length"],
  chunk: ["rendition", "seq", "offset", "total", "data"],
  cancel: ["rendition", "seq"],
  reject: ["rendition", "seq", "reason"],
};
const ERROR_CODES = new Set([
  "empty",
  "too_large",
  "truncated",
  "trailing",
  "unknown_type",
  "unknown_reason",
  "bad_rendition",
  "segment_too_large",
  "chunk_overrun",
  "bitmap_too_large",
]);

function fromHex(s: string, what: string): Uint8Array {
  assert.match(s, /^([0-9a-f]{2})*$/, `${what}: not lowercase hex of whole bytes`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function toHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

/** A byte string of the vector file: hex, or a fill object. Unknown keys fail. */
function bytesOf(v: unknown, what: string): Uint8Array {
  if (typeof v === "string") return fromHex(v, what);
  assert.ok(typeof v === "object" && v !== null && !Array.isArray(v), `${what}: not a byte string`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) assert.ok(FILL_KEYS.has(k), `${what}: unknown key ${JSON.stringify(k)} in a fill object`);
  const { prefix_hex, fill_byte, len } = o;
  assert.equal(typeof prefix_hex, "string", `${what}: prefix_hex`);
  assert.ok(typeof fill_byte === "number" && Number.isInteger(fill_byte) && fill_byte >= 0 && fill_byte <= 255, `${what}: fill_byte`);
  assert.ok(typeof len === "number" && Number.isInteger(len) && len >= 0, `${what}: len`);
  const prefix = fromHex(prefix_hex as string, `${what}.prefix_hex`);
  assert.ok(prefix.length <= len, `${what}: prefix longer than len`);
  const out = new Uint8Array(len).fill(fill_byte);
  out.set(prefix);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

/** The vector's `frame` as a Frame (byte strings as Uint8Array). Unknown or missing keys fail. */
function frameOf(v: Record<string, unknown>, what: string): Frame {
  const type = v.type;
  assert.ok(typeof type === "string" && type in FRAME_FIELDS, `${what}: unknown frame type ${JSON.stringify(type)}`);
  const fields = FRAME_FIELDS[type];
  for (const k of Object.keys(v)) {
    assert.ok(k === "type" || fields.includes(k), `${what}: unknown key ${JSON.stringify(k)} in a ${type} frame`);
  }
  for (const k of fields) assert.ok(k in v, `${what}: ${type} frame without ${k}`);
  const out: Record<string, unknown> = { type };
  for (const k of fields) out[k] = k === "bitmap" || k === "data" ? bytesOf(v[k], `${what}.${k}`) : v[k];
  return out as unknown as Frame;
}

/** A frame as plain JSON values (bytes as hex), for deep comparison. */
function plain(f: Frame): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(f)) out[k] = v instanceof Uint8Array ? toHex(v) : v;
  return out;
}

function frameError(f: () => unknown): FrameError {
  try {
    f();
  } catch (e) {
    if (e instanceof FrameError) return e;
    throw new assert.AssertionError({ message: `threw something other than a FrameError: ${String(e)}` });
  }
  throw new assert.AssertionError({ message: "did not throw" });
}

// ---- golden vectors -----------------------------------------------------------

test("frames.json: every case decodes (and encodes) as the vector says", () => {
  assert.ok(Array.isArray(cases) && cases.length > 0);
  const names = new Set<string>();
  let valid = 0;
  let invalid = 0;
  for (const c of cases) {
    for (const k of Object.keys(c)) assert.ok(CASE_KEYS.has(k), `${c.name}: unknown key ${JSON.stringify(k)}`);
    assert.equal(typeof c.name, "string");
    assert.ok(!names.has(c.name), `duplicate case name ${c.name}`);
    names.add(c.name);
    assert.ok("hex" in c, `${c.name}: no hex`);
    assert.ok(("frame" in c) !== ("error" in c), `${c.name}: needs exactly one of frame and error`);
    const bytes = bytesOf(c.hex, `${c.name}.hex`);
    if (c.frame !== undefined) {
      const expected = frameOf(c.frame, c.name);
      let got: Frame;
      try {
        got = decodeFrame(bytes);
      } catch (e) {
        assert.fail(`${c.name}: decoding failed: ${e instanceof FrameError ? e.code : ""} ${String(e)}`);
      }
      assert.deepEqual(plain(got), plain(expected), `${c.name}: decoded frame`);
      assert.equal(toHex(encodeFrame(expected)), toHex(bytes), `${c.name}: encoding`);
      assert.equal(toHex(encodeFrame(got)), toHex(bytes), `${c.name}: re-encoding the decoded frame`);
      valid++;
    } else {
      assert.ok(typeof c.error === "string" && ERROR_CODES.has(c.error), `${c.name}: unknown error name ${JSON.stringify(c.error)}`);
      const e = frameError(() => decodeFrame(bytes));
      assert.equal(e.code, c.error, `${c.name}: error code (${e.message})`);
      invalid++;
    }
  }
  assert.equal(valid + invalid, cases.length, "every case was checked");
  assert.ok(valid > 0 && invalid > 0);
  console.log(`frames.json: ${valid} valid and ${invalid} invalid of ${cases.length} cases`);
});

test("frames.json: every truncation of a valid frame is refused (a chunk cut in its data is a shorter chunk)", () => {
  let checked = 0;
  for (const c of cases) {
    if (c.frame === undefined) continue;
    const bytes = bytesOf(c.hex, c.name);
    const full = decodeFrame(bytes);
    const header = full.type === "chunk" ? bytes.length - full.data.length : bytes.length;
    for (let n = 0; n < bytes.length; n++) {
      const cut = bytes.slice(0, n);
      if (n < header) {
        const e = frameError(() => decodeFrame(cut));
        assert.equal(e.code, n === 0 ? "empty" : "truncated", `${c.name} cut to ${n} bytes`);
      } else {
        const f = decodeFrame(cut);
        assert.equal(f.type, "chunk");
        if (f.type === "chunk" && full.type === "chunk") {
          assert.equal(f.offset, full.offset);
          assert.equal(f.total, full.total);
          assert.ok(sameBytes(f.data, full.data.subarray(0, n - header)), `${c.name} cut to ${n} bytes: data`);
        }
      }
      checked++;
    }
  }
  assert.ok(checked > 1000);
});

// ---- hostile input ---------------------------------------------------------


/** Decodes hostile bytes: only FrameError may be thrown, and what decodes re-encodes to the same bytes. */
function checkHostile(buf: Uint8Array, what: string): boolean {
  let f: Frame;
  try {
    f = decodeFrame(buf);
  } catch (e) {
    assert.ok(e instanceof FrameError, `${what}: threw ${String(e)}`);
    assert.ok(ERROR_CODES.has(e.code), `${what}: unknown code ${e.code}`);
    return false;
  }
  assert.ok(buf.length >= 1 && buf.length <= MAX_FRAME);
  assert.equal(toHex(encodeFrame(f)), toHex(buf), `${what}: a decoded frame has one encoding`);
  return true;
}

test("random bytes never throw anything but FrameError", () => {
  const rand = prng(0x5ca1ab1e);
  const int = (n: number) => Math.floor(rand() * n);
  let decoded = 0;
  const N = 4000;
  for (let i = 0; i < N; i++) {
    // Half of all lengths small (where the headers are), the rest anywhere in 0..=17000.
    const len = i % 2 === 0 ? int(64) : int(17001);
    const buf = new Uint8Array(len);
    for (let j = 0; j < len; j++) buf[j] = int(256);
    // Most buffers get a plausible head so the decoder goes deep.
    if (len > 0 && i % 4 !== 3) buf[0] = 1 + int(6);
    if (len > 1 && i % 4 < 2) {
      const rl = 1 + int(16);
      buf[1] = rl;
      for (let j = 2; j < Math.min(len, 2 + rl); j++) buf[j] = "abc360p_-XYZ"[int(12)].charCodeAt(0);
      // Sequence numbers below 2^53 most of the time.
      if (len > 2 + rl + 2 && i % 8 < 6) buf[2 + rl] = buf[3 + rl] = 0;
    }
    if (checkHostile(buf, `random buffer #${i} (${len} bytes)`)) decoded++;
  }
  // The plausible heads must let some frames through, or the loop tests little.
  assert.ok(decoded > 10, `only ${decoded} random buffers decoded`);
});

test("mutated valid vectors never throw anything but FrameError", () => {
  const rand = prng(42);
  const int = (n: number) => Math.floor(rand() * n);
  const valid = cases.filter((c) => c.frame !== undefined).map((c) => bytesOf(c.hex, c.name));
  for (let i = 0; i < 3000; i++) {
    const src = valid[i % valid.length];
    const buf = src.slice();
    const edits = 1 + int(3);
    for (let e = 0; e < edits; e++) buf[int(buf.length)] = int(256);
    checkHostile(buf, `mutation #${i}`);
    // Also grown by a few bytes.
    const grown = new Uint8Array(src.length + 1 + int(4));
    grown.set(src);
    checkHostile(grown, `growth #${i}`);
  }
});

test("the encoder refuses what the decoder would refuse", () => {
  const cases: [Frame, string][] = [
    [{ type: "have", rendition: "", seq: 1 }, "bad_rendition"],
    [{ type: "have", rendition: "a".repeat(17), seq: 1 }, "bad_rendition"],
    [{ type: "have", rendition: "a/b", seq: 1 }, "bad_rendition"],
    [{ type: "have", rendition: "é", seq: 1 }, "bad_rendition"],
    [{ type: "have_map", rendition: "r", base_seq: 0, bitmap: new Uint8Array(1025) }, "bitmap_too_large"],
    [{ type: "chunk", rendition: "r", seq: 0, offset: 0, total: MAX_SEGMENT_SIZE + 1, data: new Uint8Array(1) }, "segment_too_large"],
    [{ type: "chunk", rendition: "r", seq: 0, offset: 5, total: 5, data: new Uint8Array(1) }, "chunk_overrun"],
    [{ type: "chunk", rendition: "r", seq: 0, offset: 0, total: 1 << 20, data: new Uint8Array(MAX_FRAME) }, "too_large"],
  ];
  for (const [f, code] of cases) {
    assert.equal(frameError(() => encodeFrame(f)).code, code, JSON.stringify(plain(f)).slice(0, 80));
  }
});

// ---- chunks() -------------------------------------------------------------

test("chunks() covers a segment in frames within MAX_FRAME that round-trip", () => {
  for (const rendition of ["360p", "a-B_0123456789xy" /* 16 bytes: the largest header */]) {
    for (const size of [1, 100, MAX_CHUNK_DATA - 1, MAX_CHUNK_DATA, MAX_CHUNK_DATA + 1, 300_000]) {
      const seg = new Uint8Array(size);
      for (let i = 0; i < size; i++) seg[i] = (i * 7 + 13) & 0xff;
      for (const from of [0, 1, MAX_CHUNK_DATA, Math.floor(size / 2), size - 1]) {
        if (from < 0 || from >= size) continue;
        const got = new Uint8Array(size);
        let next = from;
        let count = 0;
        for (const f of chunks(rendition, 7, seg, from)) {
          const bytes = encodeFrame(f);
          assert.ok(bytes.length <= MAX_FRAME, `a chunk frame of ${bytes.length} bytes`);
          const back = decodeFrame(bytes);
          assert.deepEqual(plain(back), plain(f));
          assert.ok(back.type === "chunk");
          if (back.type !== "chunk") continue;
          assert.equal(back.rendition, rendition);
          assert.equal(back.seq, 7);
          assert.equal(back.total, size);
          assert.equal(back.offset, next, "chunks are contiguous");
          assert.ok(back.data.length > 0 && back.data.length <= MAX_CHUNK_DATA);
          if (rendition.length === 16 && back.data.length === MAX_CHUNK_DATA) assert.equal(bytes.length, MAX_FRAME);
          got.set(back.data, back.offset);
          next += back.data.length;
          count++;
        }
        assert.equal(next, size, `${rendition} ${size} from ${from}: covers to the end`);
        assert.equal(count, Math.ceil((size - from) / MAX_CHUNK_DATA));
        assert.equal(toHex(got.subarray(from)), toHex(seg.subarray(from)));
      }
    }
  }
  // Nothing to send.
  assert.equal([...chunks("r", 1, new Uint8Array(0))].length, 0);
  assert.equal([...chunks("r", 1, new Uint8Array(10), 10)].length, 0);
  assert.equal([...chunks("r", 1, new Uint8Array(10), 99)].length, 0);
});
