// One neighbour: a native RTCPeerConnection with one pre-negotiated data
// channel (negotiated, id 0, label "swarmcast", protocol "swarmcast/1",
// ordered, reliable) carrying peer wire frames. Uploads are paced on the
// channel's bufferedAmount (at most HIGH_WATER bytes queued, resumed on
// `bufferedamountlow`), and every message is at most 16 KiB.

import type { IceServer, Signal } from "./tracker.js";
import { decodeFrame, encodeFrame, FrameError, MAX_CHUNK_DATA, type Frame } from "./wire.js";

/** Bytes queued on a channel before uploads wait. */
export const HIGH_WATER = 1024 * 1024;
/** A link that has not opened by then is given up. */
const SETUP_TIMEOUT_MS = 10_000;

export interface LinkEvents {
  signal(s: Signal): void;
  open(setupMs: number): void;
  frame(f: Frame, bytes: number): void;
  badFrame(why: string): void;
  uploadDone(rendition: string, seq: number): void;
  closed(reason: string): void;
}

interface Upload {
  rendition: string;
  seq: number;
  data: Uint8Array;
  next: number;
  to: number;
}

export class Link {
  private readonly pc: RTCPeerConnection;
  private readonly dc: RTCDataChannel;
  private remoteSet = false;
  private early: Signal[] = [];
  private uploads: Upload[] = [];
  private pumping = false;
  private closedReason: string | undefined;
  private readonly started = performance.now();
  private readonly setupTimer: ReturnType<typeof setTimeout>;

  constructor(
    readonly peer: string,
    readonly initiator: boolean,
    iceServers: IceServer[],
    private readonly ev: LinkEvents,
  ) {
    this.pc = new RTCPeerConnection({
      iceServers: iceServers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })),
    });
    this.dc = this.pc.createDataChannel("swarmcast", { negotiated: true, id: 0, protocol: "swarmcast/1", ordered: true });
    this.dc.binaryType = "arraybuffer";
    this.dc.bufferedAmountLowThreshold = HIGH_WATER / 2;
    this.dc.onopen = () => {
      clearTimeout(this.setupTimer);
      this.ev.open(performance.now() - this.started);
    };
    this.dc.onclose = () => this.close("channel closed");
    this.dc.onbufferedamountlow = () => this.pump();
    this.dc.onmessage = (m: MessageEvent) => {
      if (!(m.data instanceof ArrayBuffer)) {
        this.ev.badFrame("text message");
        return;
      }
      const bytes = new Uint8Array(m.data);
      try {
        this.ev.frame(decodeFrame(bytes), bytes.length);
      } catch (e) {
        this.ev.badFrame(e instanceof FrameError ? `${e.code}: ${e.message}` : String(e));
      }
    };
    this.pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) {
        const s: Signal = { kind: "candidate", candidate: e.candidate.candidate };
        if (e.candidate.sdpMid) s.sdp_mid = e.candidate.sdpMid;
        if (e.candidate.sdpMLineIndex !== null) s.sdp_mline_index = e.candidate.sdpMLineIndex;
        this.ev.signal(s);
      } else if (!e.candidate) {
        this.ev.signal({ kind: "end_of_candidates" });
      }
    };
    this.pc.onconnectionstatechange = () => {
      if (this.pc.connectionState === "failed") this.close("connection failed");
    };
    this.setupTimer = setTimeout(() => this.close("setup timed out"), SETUP_TIMEOUT_MS);
    if (initiator) void this.offer();
  }

  private async offer(): Promise<void> {
    try {
      await this.pc.setLocalDescription(await this.pc.createOffer());
      const sdp = this.pc.localDescription?.sdp;
      if (sdp) this.ev.signal({ kind: "offer", sdp });
    } catch (e) {
      this.close(`offer failed: ${String(e)}`);
    }
  }

  /** A signal from the neighbour, relayed by the tracker. */
  async remote(s: Signal): Promise<void> {
    try {
      if (s.kind === "offer" && !this.initiator && !this.remoteSet) {
        await this.pc.setRemoteDescription({ type: "offer", sdp: s.sdp });
        this.remoteSet = true;
        await this.pc.setLocalDescription(await this.pc.createAnswer());
        const sdp = this.pc.localDescription?.sdp;
        if (sdp) this.ev.signal({ kind: "answer", sdp });
        await this.flushEarly();
      } else if (s.kind === "answer" && this.initiator && !this.remoteSet) {
        await this.pc.setRemoteDescription({ type: "answer", sdp: s.sdp });
        this.remoteSet = true;
        await this.flushEarly();
      } else if (s.kind === "candidate" || s.kind === "end_of_candidates") {
        if (this.remoteSet) await this.addCandidate(s);
        else if (this.early.length < 64) this.early.push(s);
      }
    } catch (e) {
      this.close(`signalling failed: ${String(e)}`);
    }
  }

  private async flushEarly(): Promise<void> {
    const early = this.early;
    this.early = [];
    for (const c of early) await this.addCandidate(c);
  }

  private async addCandidate(s: Signal): Promise<void> {
    if (s.kind === "end_of_candidates") {
      await this.pc.addIceCandidate().catch(() => undefined);
      return;
    }
    if (s.kind !== "candidate") return;
    // Native peers send sdp_mid "" (there is one m-line): use the index.
    const init: RTCIceCandidateInit = { candidate: s.candidate, sdpMLineIndex: s.sdp_mline_index ?? 0 };
    if (s.sdp_mid) init.sdpMid = s.sdp_mid;
    await this.pc.addIceCandidate(init).catch(() => undefined);
  }

  get isOpen(): boolean {
    return this.dc.readyState === "open";
  }

  /** Sends one frame (dropped if the channel is not open). */
  send(f: Frame): void {
    if (!this.isOpen) return;
    try {
      this.dc.send(encodeFrame(f) as Uint8Array<ArrayBuffer>);
    } catch {
      this.close("send failed");
    }
  }

  /** Streams data[from..to] as chunk frames, then reports uploadDone. */
  serve(rendition: string, seq: number, data: Uint8Array, from: number, to: number): void {
    this.uploads.push({ rendition, seq, data, next: from, to: Math.min(to, data.length) });
    this.pump();
  }

  stop(rendition: string, seq: number): void {
    this.uploads = this.uploads.filter((u) => !(u.rendition === rendition && u.seq === seq));
  }

  private pump(): void {
    if (this.pumping || !this.isOpen) return;
    this.pumping = true;
    try {
      while (this.uploads.length > 0 && this.dc.bufferedAmount < HIGH_WATER) {
        const u = this.uploads[0];
        if (u.next >= u.to) {
          this.uploads.shift();
          this.ev.uploadDone(u.rendition, u.seq);
          continue;
        }
        const end = Math.min(u.next + MAX_CHUNK_DATA, u.to);
        const f: Frame = { type: "chunk", rendition: u.rendition, seq: u.seq, offset: u.next, total: u.data.length, data: u.data.subarray(u.next, end) };
        this.dc.send(encodeFrame(f) as Uint8Array<ArrayBuffer>);
        u.next = end;
      }
    } catch {
      this.close("send failed");
    } finally {
      this.pumping = false;
    }
  }

  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    clearTimeout(this.setupTimer);
    for (const u of this.uploads) this.ev.uploadDone(u.rendition, u.seq);
    this.uploads = [];
    try {
      this.dc.close();
      this.pc.close();
    } catch {
      // already closed
    }
    this.ev.closed(reason);
  }
}

