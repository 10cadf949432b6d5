// Tracker messages (src/tracker.ts) against the golden vectors of
// proto/vectors/tracker.json (the same file the Rust crate checks), plus
// hostile input to the server-message decoder.

import { test } from "node:test";
import { mulberry32 as prng } from "../src/prng.js";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { MAX_MESSAGE, MessageError, decodeServer, encodeClient, urlWithStream, type ClientMsg } from "../src/tracker.js";

// ---- vector file ------------------------------------------------------------

type Text = string | { prefix: string; repeat: string; count: number; suffix: string };

interface Case {
  name: string;
  direction: "client" | "server";
  json: Text;
  canonical?: boolean;
  message?: Record<string, unknown>;
  error?: string;
}

const VECTORS = new URL("../../../proto/vectors/tracker.json", import.meta.url);
const cases: Case[] = JSON.parse(readFileSync(VECTORS, "utf8"));

const CASE_KEYS = new Set(["name", "direction", "json", "canonical", "message", "error"]);
const REPEAT_KEYS = new Set(["prefix", "repeat", "count", "suffix"]);
const ERROR_CODES = new Set(["too_large", "unsupported_version", "malformed"]);

/** A text of the vector file: a string, or a repeat object. Unknown keys fail. */
function textOf(v: unknown, what: string): string {
  if (typeof v === "string") return v;
  assert.ok(typeof v === "object" && v !== null && !Array.isArray(v), `${what}: not a text`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) assert.ok(REPEAT_KEYS.has(k), `${what}: unknown key ${JSON.stringify(k)} in a repeat object`);
  const { prefix, repeat, count, suffix } = o;
  assert.equal(typeof prefix, "string", `${what}: prefix`);
  assert.equal(typeof repeat, "string", `${what}: repeat`);
  assert.equal(typeof suffix, "string", `${what}: suffix`);
  assert.ok(typeof count === "number" && Number.isInteger(count) && count >= 0, `${what}: count`);
  return (prefix as string) + (repeat as string).repeat(count as number) + (suffix as string);
}

function messageError(f: () => unknown, what = ""): MessageError {
  let r: unknown;
  try {
    r = f();
  } catch (e) {
    if (e instanceof MessageError) return e;
    throw new assert.AssertionError({ message: `${what}: threw something other than a MessageError: ${String(e)}` });
  }
  throw new assert.AssertionError({ message: `${what}: did not throw, gave ${JSON.stringify(r).slice(0, 200)}` });
}

// ---- golden vectors -----------------------------------------------------------

test("tracker.json: server messages decode as the vectors say, client messages encode canonically", () => {
  assert.ok(Array.isArray(cases) && cases.length > 0);
  const names = { client: new Set<string>(), server: new Set<string>() };
  const failures: string[] = [];
  const count: Counts = {
    serverValid: 0,
    serverInvalid: 0,
    clientCanonical: 0,
    clientNonCanonical: 0, // valid client cases a decoder must accept: the tracker's business
    clientInvalid: 0, // the tracker's business
  };
  for (const c of cases) {
    for (const k of Object.keys(c)) assert.ok(CASE_KEYS.has(k), `${c.name}: unknown key ${JSON.stringify(k)}`);
    assert.equal(typeof c.name, "string");
    assert.ok(c.direction === "client" || c.direction === "server", `${c.name}: direction ${JSON.stringify(c.direction)}`);
    assert.ok(!names[c.direction].has(c.name), `duplicate case name ${c.name}`);
    names[c.direction].add(c.name);
    assert.ok(("message" in c) !== ("error" in c), `${c.name}: needs exactly one of message and error`);
    const text = textOf(c.json, `${c.name}.json`);
    if (c.message !== undefined) {
      assert.equal(typeof c.canonical, "boolean", `${c.name}: a valid case says whether it is canonical`);
      assert.ok(typeof c.message === "object" && c.message !== null && typeof c.message.type === "string", `${c.name}: message`);
      assert.ok(!("v" in c.message), `${c.name}: message holds v`);
    } else {
      assert.ok(typeof c.error === "string" && ERROR_CODES.has(c.error), `${c.name}: unknown error ${JSON.stringify(c.error)}`);
      assert.ok(!("canonical" in c), `${c.name}: an invalid case with canonical`);
    }
    try {
      check(c, text, count);
    } catch (e) {
      failures.push(e instanceof Error ? e.message : String(e));
    }
  }
  assert.deepEqual(failures, [], "every vector passes");
  const total = count.serverValid + count.serverInvalid + count.clientCanonical + count.clientNonCanonical + count.clientInvalid;
  assert.equal(total, cases.length, `every case was counted: ${JSON.stringify(count)}`);
  assert.ok(count.serverValid > 0 && count.serverInvalid > 0 && count.clientCanonical > 0);
  console.log(`tracker.json: ${JSON.stringify(count)} of ${cases.length} cases`);
});

interface Counts {
  serverValid: number;
  serverInvalid: number;
  clientCanonical: number;
  clientNonCanonical: number;
  clientInvalid: number;
}

function check(c: Case, text: string, count: Counts): void {
    if (c.direction === "server") {
      if (c.message !== undefined) {
        let got: unknown;
        try {
          got = decodeServer(text);
        } catch (e) {
          assert.fail(`${c.name}: decoding failed: ${e instanceof MessageError ? e.code : ""} ${String(e)}`);
        }
        assert.deepEqual(got, c.message, c.name);
        count.serverValid++;
      } else {
        const e = messageError(() => decodeServer(text), c.name);
        assert.equal(e.code, c.error, `${c.name} (${e.message})`);
        count.serverInvalid++;
      }
    } else if (c.message !== undefined) {
      if (c.canonical) {
        assert.equal(encodeClient(c.message as unknown as ClientMsg), text, c.name);
        // And the README's recipe gives the same text.
        assert.equal(JSON.stringify({ v: 1, ...c.message }), text, `${c.name}: JSON.stringify`);
        count.clientCanonical++;
      } else {
        count.clientNonCanonical++;
      }
    } else {
      count.clientInvalid++;
    }
}

test("client messages: what encodeClient writes is what the canonical vectors show, optional fields left out", () => {
  assert.equal(
    encodeClient({ type: "hello", token: "t", stream: "s", peer_id: "p", kind: "browser", upload_kbps: 0 }),
    '{"v":1,"type":"hello","token":"t","stream":"s","peer_id":"p","kind":"browser","upload_kbps":0}',
  );
  assert.equal(
    encodeClient({ type: "signal", to: "b", signal: { kind: "candidate", candidate: "c", sdp_mline_index: 1 } }),
    '{"v":1,"type":"signal","to":"b","signal":{"kind":"candidate","candidate":"c","sdp_mline_index":1}}',
  );
  assert.equal(
    encodeClient({ type: "stats", http_bytes: 1, p2p_bytes: 2, uploaded_bytes: 3, stalls: 4, stall_ms: 5, peers: 6, startup_ms: 7 }),
    '{"v":1,"type":"stats","http_bytes":1,"p2p_bytes":2,"uploaded_bytes":3,"stalls":4,"stall_ms":5,"peers":6,"startup_ms":7}',
  );
  // Control characters and quotes escaped as serde_json does.
  assert.equal(
    encodeClient({ type: "signal", to: "b", signal: { kind: "offer", sdp: 'a"\\\b\f\n\r\t\u0001\u001f\u007fé' } }),
    '{"v":1,"type":"signal","to":"b","signal":{"kind":"offer","sdp":"a\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u007fé"}}',
  );
});

// ---- Rust behaviour no vector pins --------------------------------------------

test("decodeServer follows the Rust decoder where the vectors are silent", () => {
  const code = (text: string) => messageError(() => decodeServer(text), text.slice(0, 120)).code;
  // The size limit counts UTF-8 bytes, not UTF-16 units.
  const pad = (s: string) => `{"v":1,"type":"ping","nonce":1,"pad":"${s}"}`;
  const overhead = pad("").length;
  assert.deepEqual(decodeServer(pad("x".repeat(MAX_MESSAGE - overhead))), { type: "ping", nonce: 1 });
  assert.equal(code(pad("x".repeat(MAX_MESSAGE - overhead + 1))), "too_large");
  assert.equal(code(pad("é".repeat(Math.ceil((MAX_MESSAGE - overhead + 1) / 2)))), "too_large");
  assert.deepEqual(decodeServer(pad("é".repeat(Math.floor((MAX_MESSAGE - overhead) / 2)))), { type: "ping", nonce: 1 });
  // v: a number other than 1 is an unsupported version (0, 2, -1, 1.5); anything else malformed.
  for (const v of ["0", "2", "-1", "1.5", "1e300"]) assert.equal(code(`{"v":${v},"type":"ping","nonce":1}`), "unsupported_version", v);
  for (const v of ['"1"', "null", "true", "[1]", "{}"]) assert.equal(code(`{"v":${v},"type":"ping","nonce":1}`), "malformed", v);
  assert.equal(code('{"v":2,"type":"no_such_type"}'), "unsupported_version");
  assert.equal(code('{"v":1,"type":"Ping","nonce":1}'), "malformed");
  // Unknown fields are ignored; null optionals are absent.
  assert.deepEqual(decodeServer('{"nonce":5,"extra":[1,{}],"type":"pong","v":1}'), { type: "pong", nonce: 5 });
  assert.deepEqual(
    decodeServer('{"v":1,"type":"peers","peers":[{"peer_id":"p","kind":"relay","region":null,"initiator":false}]}'),
    { type: "peers", peers: [{ peer_id: "p", kind: "relay", initiator: false }] },
  );
  assert.deepEqual(
    decodeServer('{"v":1,"type":"signal","from":"a","signal":{"kind":"candidate","candidate":"c","sdp_mid":null,"sdp_mline_index":null}}'),
    { type: "signal", from: "a", signal: { kind: "candidate", candidate: "c" } },
  );
  // Field types and integer ranges.
  const welcome = (cfg: string) => `{"v":1,"type":"welcome","peer_id":"p","config":{${cfg}}}`;
  const okCfg = '"max_peers":65535,"window_segments":4294967295,"ping_interval_ms":4294967295,"idle_timeout_ms":4294967295';
  assert.deepEqual(decodeServer(welcome(okCfg)), {
    type: "welcome",
    peer_id: "p",
    config: { max_peers: 65535, window_segments: 4294967295, ping_interval_ms: 4294967295, idle_timeout_ms: 4294967295, ice_servers: [] },
  });
  for (const bad of [
    okCfg.replace("65535", "65536"),
    okCfg.replace('"window_segments":4294967295', '"window_segments":4294967296'),
    okCfg.replace('"ping_interval_ms":4294967295', '"ping_interval_ms":4294967296'),
    okCfg.replace('"idle_timeout_ms":4294967295', '"idle_timeout_ms":4294967296'),
    okCfg.replace("65535", "-1"),
    okCfg.replace("65535", "1.5"),
    okCfg.replace("65535", '"8"'),
    okCfg + ',"ice_servers":null',
    okCfg + ',"ice_servers":[{"urls":"stun:s"}]',
    okCfg + ',"ice_servers":[{"urls":[1]}]',
    okCfg + `,"ice_servers":[{"urls":["${"u".repeat(257)}"]}]`,
  ]) {
    assert.equal(code(welcome(bad)), "malformed", bad);
  }
  // TURN user names and credentials have no limit of their own (only the message's).
  const long = "u".repeat(2000);
  assert.equal(decodeServer(welcome(okCfg + `,"ice_servers":[{"urls":[],"username":"${long}","credential":"${long}"}]`)).type, "welcome");
  assert.equal(code('{"v":1,"type":"ping","nonce":-1}'), "malformed");
  assert.equal(code('{"v":1,"type":"ping","nonce":1.5}'), "malformed");
  assert.equal(code('{"v":1,"type":"ping","nonce":"1"}'), "malformed");
  assert.equal(code('{"v":1,"type":"ping"}'), "malformed");
  // Ids.
  assert.equal(code('{"v":1,"type":"peer_left","peer_id":""}'), "malformed");
  assert.equal(code(`{"v":1,"type":"peer_left","peer_id":"${"p".repeat(65)}"}`), "malformed");
  assert.equal(code('{"v":1,"type":"peer_left","peer_id":"a/b"}'), "malformed");
  assert.deepEqual(decodeServer(`{"v":1,"type":"peer_left","peer_id":"${"p".repeat(64)}"}`), { type: "peer_left", peer_id: "p".repeat(64) });
  // sdp_mid and regions: up to 256 bytes of text without control characters.
  const cand = (mid: string) => `{"v":1,"type":"signal","from":"a","signal":{"kind":"candidate","candidate":"c","sdp_mid":${JSON.stringify(mid)}}}`;
  assert.deepEqual(decodeServer(cand("m".repeat(256))), { type: "signal", from: "a", signal: { kind: "candidate", candidate: "c", sdp_mid: "m".repeat(256) } });
  assert.equal(code(cand("m".repeat(257))), "malformed");
  assert.equal(code(cand("a\u0085b")), "malformed");
  assert.equal(code(`{"v":1,"type":"signal","from":"a","signal":{"kind":"candidate","candidate":"${"c".repeat(1025)}"}}`), "malformed");
  const peer = (region: string) => `{"v":1,"type":"peers","peers":[{"peer_id":"p","kind":"native","region":${JSON.stringify(region)},"initiator":true}]}`;
  assert.equal(code(peer("eu\nwest")), "malformed");
  assert.equal(code(peer("eu\u007fwest")), "malformed");
  assert.equal(code('{"v":1,"type":"peers","peers":[{"peer_id":"p","kind":"native","initiator":"true"}]}'), "malformed");
  assert.equal(code('{"v":1,"type":"peers","peers":[{"peer_id":"p","kind":"viewer","initiator":true}]}'), "malformed");
  // Segment records.
  const meta = (m: string) => `{"v":1,"type":"segment","meta":{${m}}}`;
  const sha = "e1ec44b0d2eb5a6afdf6dfa181fa403baab5f563f6834dfb90d82945c6bb0d38";
  const okMeta = `"id":"s/360p/42","size":1,"sha256":"${sha}","duration_ms":2000,"published_at_ms":0`;
  assert.deepEqual(decodeServer(meta(okMeta)), {
    type: "segment",
    meta: { id: "s/360p/42", size: 1, sha256: sha, duration_ms: 2000, published_at_ms: 0 },
  });
  // As Rust's SegmentId and Sha256Digest: leading zeros and upper-case hex are
  // accepted, and the record comes out in its canonical form.
  assert.deepEqual(decodeServer(meta(okMeta.replace("s/360p/42", "s/360p/0042").replace(sha, sha.toUpperCase()))), {
    type: "segment",
    meta: { id: "s/360p/42", size: 1, sha256: sha, duration_ms: 2000, published_at_ms: 0 },
  });
  for (const bad of [
    okMeta.replace("s/360p/42", "s/360p/" + "1".repeat(21)),
    okMeta.replace("s/360p/42", "s/360p"),
    okMeta.replace("s/360p/42", "s/360p/42/1"),
    okMeta.replace("s/360p/42", "s/360p/"),
    okMeta.replace("s/360p/42", "s/360p/-1"),
    okMeta.replace("s/360p/42", "s/360p/4x"),
    okMeta.replace("s/360p/42", "../360p/42"),
    okMeta.replace("s/360p/42", "s/a-B_0123456789xyz/42"),
    okMeta.replace(sha, sha.slice(1)),
    okMeta.replace(sha, sha.slice(1) + "g"),
    okMeta.replace('"duration_ms":2000', '"duration_ms":4294967296'),
    okMeta.replace('"size":1', '"size":-1'),
    okMeta.replace(',"published_at_ms":0', ""),
  ]) {
    assert.equal(code(meta(bad)), "malformed", bad);
  }
});

// ---- hostile input ------------------------------------------------------------


function onlyMessageError(text: string, what: string): void {
  try {
    decodeServer(text);
  } catch (e) {
    assert.ok(e instanceof MessageError, `${what}: threw ${String(e)}`);
    assert.ok(ERROR_CODES.has(e.code), `${what}: code ${e.code}`);
  }
}

test("hostile text to decodeServer: only MessageError is thrown", () => {
  const fixed = [
    "",
    " ",
    "null",
    "true",
    "1",
    '"string"',
    "[]",
    "{}",
    "{",
    "}",
    "<html>",
    "\u0000",
    "\ud800",
    '{"v":1}',
    '{"v":1,"type":null}',
    '{"v":1,"type":{}}',
    '{"v":1,"type":"welcome"}',
    '{"v":1,"type":"welcome","peer_id":"p","config":[]}',
    '{"v":1,"type":"welcome","peer_id":"p","config":null}',
    '{"v":1,"type":"peers"}',
    '{"v":1,"type":"peers","peers":{}}',
    '{"v":1,"type":"peers","peers":[null]}',
    '{"v":1,"type":"peers","peers":[1,2]}',
    '{"v":1,"type":"signal","from":"a"}',
    '{"v":1,"type":"signal","from":"a","signal":null}',
    '{"v":1,"type":"signal","from":"a","signal":[]}',
    '{"v":1,"type":"signal","from":"a","signal":{"kind":"offer"}}',
    '{"v":1,"type":"signal","from":"a","signal":{"kind":"offer","sdp":7}}',
    '{"v":1,"type":"signal","from":"a","signal":{"kind":{}}}',
    '{"v":1,"type":"segment"}',
    '{"v":1,"type":"segment","meta":"x"}',
    '{"v":1,"type":"segment","meta":{"id":7}}',
    '{"v":1,"type":"error"}',
    '{"v":1,"type":"error","code":7,"message":""}',
    '{"v":1,"type":"error","code":"internal","message":null}',
    '{"v":1,"type":"__proto__","nonce":1}',
    '{"v":1,"type":"toString","nonce":1}',
    '{"__proto__":{"v":1},"type":"ping","nonce":1}',
    '{"v":1,"type":"ping","nonce":1e400}',
    '{"v":1,"type":"ping","nonce":123456789012345678901234567890}',
    "[".repeat(16000) + "]".repeat(16000),
    '{"a":'.repeat(5000) + "1" + "}".repeat(5000),
    "x".repeat(1 << 20),
    '"' + "x".repeat(40000) + '"',
    "é".repeat(20000),
    "😀".repeat(9000),
  ];
  for (const t of fixed) onlyMessageError(t, JSON.stringify(t.slice(0, 60)));
  // Specific answers for a few.
  assert.equal(messageError(() => decodeServer("x".repeat(1 << 20))).code, "too_large");
  assert.equal(messageError(() => decodeServer("[".repeat(16000) + "]".repeat(16000))).code, "malformed");
  assert.equal(messageError(() => decodeServer("")).code, "malformed");

  // Mutations of every valid server vector: edits, cuts, type swaps.
  const rand = prng(7);
  const int = (n: number) => Math.floor(rand() * n);
  const valid = cases.filter((c) => c.direction === "server" && c.message !== undefined).map((c) => textOf(c.json, c.name));
  const alphabet = ['"', "{", "}", "[", "]", ",", ":", "0", "1", "-", ".", "e", "\\", "null", "true", "1e999", '"x"', "é", "\u0000", " "];
  for (let i = 0; i < 5000; i++) {
    let t = valid[i % valid.length];
    const edits = 1 + int(3);
    for (let e = 0; e < edits; e++) {
      const at = int(t.length + 1);
      switch (int(3)) {
        case 0:
          t = t.slice(0, at) + alphabet[int(alphabet.length)] + t.slice(at + 1);
          break;
        case 1:
          t = t.slice(0, at) + alphabet[int(alphabet.length)] + t.slice(at);
          break;
        default:
          t = t.slice(0, at);
      }
    }
    onlyMessageError(t, `mutation #${i}: ${JSON.stringify(t.slice(0, 80))}`);
  }

  // Every field of every valid vector replaced by a value of each JSON type.
  const values: unknown[] = [null, true, false, 0, -1, 1.5, 2 ** 64, "", "x".repeat(300), [], [null], {}, { a: 1 }];
  let swapped = 0;
  for (const c of cases) {
    if (c.direction !== "server" || c.message === undefined) continue;
    const base = JSON.parse(textOf(c.json, c.name)) as unknown;
    const paths: (string | number)[][] = [];
    const walk = (v: unknown, path: (string | number)[]) => {
      if (path.length > 0) paths.push(path);
      if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
      else if (typeof v === "object" && v !== null) for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
    };
    walk(base, []);
    for (const path of paths) {
      for (const value of values) {
        const copy = JSON.parse(JSON.stringify(base)) as Record<string | number, unknown>;
        let o: Record<string | number, unknown> = copy;
        for (const k of path.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
        o[path[path.length - 1]] = value;
        onlyMessageError(JSON.stringify(copy), `${c.name} with ${path.join(".")} = ${JSON.stringify(value).slice(0, 20)}`);
        swapped++;
      }
    }
  }
  assert.ok(swapped > 500);
});

test("the tracker URL names the stream once, as proto's url_with_stream", () => {
  assert.equal(urlWithStream("ws://t:7000/v1/ws", "ev-1"), "ws://t:7000/v1/ws?stream=ev-1");
  assert.equal(urlWithStream("wss://t/v1/ws?token=x", "ev-1"), "wss://t/v1/ws?token=x&stream=ev-1");
  assert.equal(urlWithStream("ws://t/v1/ws?stream=other", "ev-1"), "ws://t/v1/ws?stream=other");
  assert.equal(urlWithStream("ws://t/v1/ws?streams=1#f", "ev-1"), "ws://t/v1/ws?streams=1&stream=ev-1#f");
  // After a redirect, the cell too, once (as proto's url_for).
  assert.equal(urlWithStream("ws://t/v1/ws?token=x", "ev", 3), "ws://t/v1/ws?token=x&stream=ev&cell=3");
  assert.equal(urlWithStream("ws://t/v1/ws?cell=1&stream=ev#f", "ev", 2), "ws://t/v1/ws?stream=ev&cell=2#f");
  assert.equal(urlWithStream("ws://t/v1/ws?cells=1", "ev"), "ws://t/v1/ws?cells=1&stream=ev");
});
