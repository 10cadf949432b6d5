// Starts a live event for the browser tests from the workspace's debug
// binaries (cargo build --workspace --bins): tracker, origin with the ffmpeg
// test source serving the built demo page, and native edge peers. Stops
// every process it started, by PID.
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = process.env.SWARMCAST_BIN_DIR ?? resolve(ROOT, "target/debug");

export interface Proc {
  child: ChildProcess;
  addr: string;
  name: string;
}

function start(name: string, args: string[]): Promise<Proc> {
  const path = resolve(BIN, name);
  if (!existsSync(path)) throw new Error(`${path} is missing: run cargo build --workspace --bins`);
  const child = spawn(path, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } });
  return new Promise((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error(`${name} did not start: ${out}`)), 20_000);
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on http:\/\/([0-9.:]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok({ child, addr: m[1], name });
      }
    });
    child.stderr?.on("data", (d: Buffer) => {
      if (process.env.SWARMCAST_E2E_LOG) process.stderr.write(`[${name}] ${d.toString()}`);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`${name} exited with ${code}: ${out}`));
    });
  });
}

/**
 * The project's token format (proto/src/token.rs): base64url(payload) "."
 * base64url(HMAC-SHA256(secret, "swarmcast-token\0" + payload)).
 */
export function token(secret: string, stream: string, role: string): string {
  const payload = `v1:${stream}:${role}:${Math.floor(Date.now() / 1000) + 86_400}`;
  const mac = createHmac("sha256", secret).update("swarmcast-token\0").update(payload).digest("base64url");
  return `${Buffer.from(payload).toString("base64url")}.${mac}`;
}

export class LiveEvent {
  readonly secret = randomBytes(24).toString("hex");
  readonly procs: Proc[] = [];
  tracker!: Proc;
  origin!: Proc;

  /** `trackerArgs` come after the defaults (a later `--listen` wins). */
  async start(renditions = "360p", trackerArgs: string[] = []): Promise<void> {
    this.tracker = await start("swarmcast-tracker", ["--listen", "127.0.0.1:0", "--token-secret", this.secret, ...trackerArgs]);
    this.procs.push(this.tracker);
    this.origin = await start("swarmcast-origin", [
      "--listen", "127.0.0.1:0",
      "--token-secret", this.secret,
      "--test-source", "--test-source-renditions", renditions,
      "--tracker", this.ws,
      "--web-root", resolve(ROOT, "player-demo/dist/demo"),
    ]);
    this.procs.push(this.origin);
  }

  /**
   * Waits until the origin lists `segments` segments of the stream: hls.js
   * starts three target durations behind the live edge, and a player that
   * joins a playlist shorter than that starts at its first segment and
   * runs out of media before the next one is published.
   */
  async waitLive(rendition = "360p", segments = 3): Promise<void> {
    for (let i = 0; i < 60; i++) {
      const r = await fetch(`${this.originUrl}/live/test/${rendition}/index.m3u8`).catch(() => undefined);
      if (r?.ok && (await r.text()).split("#EXTINF").length > segments) return;
      await new Promise((ok) => setTimeout(ok, 500));
    }
    throw new Error("the test stream did not list ${segments} segments in 30 s");
  }

  get ws(): string {
    return `ws://${this.tracker.addr}/v1/ws`;
  }

  get originUrl(): string {
    return `http://${this.origin.addr}`;
  }

  async edge(extra: string[] = []): Promise<Proc> {
    const p = await start("swarmcast-edge", [
      "--tracker", this.ws,
      "--origin", this.originUrl,
      "--stream", "test",
      "--rendition", "360p",
      "--token", token(this.secret, "test", "viewer"),
      ...extra,
    ]);
    this.procs.push(p);
    return p;
  }

  /** The demo page for one viewer. */
  pageUrl(extra = ""): string {
    const q = new URLSearchParams({ tracker: this.ws, token: token(this.secret, "test", "viewer"), stream: "test", rendition: "360p" });
    return `${this.originUrl}/player/index.html?${q}${extra}`;
  }

  /** Sums a Prometheus metric of a process (label filter as `key="value"`). */
  async metric(p: Proc, name: string, label = ""): Promise<number> {
    const text = await (await fetch(`http://${p.addr}/metrics`)).text();
    return text
      .split("\n")
      .filter((l) => (l.startsWith(name + " ") || l.startsWith(name + "{")) && l.includes(label))
      .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
  }

  /** The tracker's stats of the stream's home, or of its cell `cell`. */
  async stats(cell?: number): Promise<Record<string, unknown>> {
    const q = cell === undefined ? "" : `?cell=${cell}`;
    return (await (await fetch(`http://${this.tracker.addr}/v1/streams/test/stats${q}`)).json()) as Record<string, unknown>;
  }

  /** Stops a process (SIGSTOP) until `resume`. */
  pause(p: Proc): void {
    p.child.kill("SIGSTOP");
  }

  resume(p: Proc): void {
    p.child.kill("SIGCONT");
  }

  kill(p: Proc): void {
    p.child.kill("SIGKILL");
  }

  stop(): void {
    for (const p of this.procs.reverse()) p.child.kill("SIGTERM");
  }
}
