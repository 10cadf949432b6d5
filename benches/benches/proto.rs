//! Criterion micro benchmarks of the `swarmcast-proto` codecs, in bytes per
//! second of wire format: a full-size chunk frame (the hot path of every
//! peer upload and download) and typical tracker messages.
//!
//! Run: `cargo bench -p swarmcast-benches --bench proto` (add `-- --quick`
//! for a fast pass).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use swarmcast_proto::tracker::{ClientMsg, SegmentRef, Signal};
use swarmcast_proto::wire::{Frame, MAX_CHUNK_DATA};
use swarmcast_proto::{PeerId, RenditionId, SegmentMeta, Sha256Digest};

fn rendition() -> RenditionId {
    RenditionId::new("360p").expect("a valid rendition id")
}

fn chunk_frame(c: &mut Criterion) {
    let data: Bytes = (0..MAX_CHUNK_DATA).map(|i| i as u8).collect();
    let frame = Frame::Chunk {
        rendition: rendition(),
        seq: 1234,
        offset: 0,
        total: 2_000_000,
        data,
    };
    let wire = frame.encode().expect("the chunk fits in a frame");

    let mut g = c.benchmark_group("frame/chunk_16k");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode", |b| b.iter(|| black_box(&frame).encode()));
    let mut out = BytesMut::with_capacity(wire.len());
    g.bench_function("encode_into_reused_buffer", |b| {
        b.iter(|| {
            out.clear();
            black_box(&frame).encode_into(&mut out)
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| Frame::decode(black_box(wire.clone())))
    });
    g.finish();
}

/// An SDP offer of about 1 KB, shaped like a browser's data-channel offer.
fn sdp_offer() -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:4ZcD\r\na=ice-pwd:2/1muCWoOi3uLifh0NuRHlmD\r\n\
         a=ice-options:trickle\r\n\
         a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:\
         DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
         a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n",
    );
    for i in 0.. {
        if sdp.len() >= 1000 {
            break;
        }
        sdp.push_str(&format!(
            "a=candidate:{} 1 udp 2113937151 192.0.2.{} 5{:04} typ host generation 0\r\n",
            842_163_049 + i,
            i + 10,
            i
        ));
    }
    sdp
}

fn tracker_messages(c: &mut Criterion) {
    let have = ClientMsg::Have {
        segments: (0..8)
            .map(|i| SegmentRef {
                rendition: rendition(),
                seq: 1000 + i,
            })
            .collect(),
    };
    let publish = ClientMsg::Publish {
        meta: SegmentMeta {
            id: "keynote-2026/360p/1234"
                .parse()
                .expect("a valid segment id"),
            size: 187_672,
            sha256: Sha256Digest::of(b"segment 1234"),
            duration_ms: 2000,
            published_at_ms: 1_767_225_600_123,
            blocks: None,
        },
    };
    let signal = ClientMsg::Signal {
        to: PeerId::new("peer-B2").expect("a valid peer id"),
        signal: Signal::Offer { sdp: sdp_offer() },
    };

    for (name, msg) in [
        ("have_8", have),
        ("publish", publish),
        ("signal_offer_1k", signal),
    ] {
        let text = msg.encode();
        assert_eq!(ClientMsg::decode(&text).as_ref(), Ok(&msg));
        let mut g = c.benchmark_group(format!("tracker/{name}"));
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function("encode", |b| b.iter(|| black_box(&msg).encode()));
        g.bench_function("decode", |b| b.iter(|| ClientMsg::decode(black_box(&text))));
        g.finish();
    }
}

criterion_group!(benches, chunk_frame, tracker_messages);
criterion_main!(benches);
