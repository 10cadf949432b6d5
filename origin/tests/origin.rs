#![allow(clippy::unwrap_used)]

//! The origin as a real process on 127.0.0.1: live ingest (ffmpeg and
//! hand-made pushes), serving, hostile input, restart from disk, publishing
//! to a tracker over a real WebSocket, TLS.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use swarmcast_proto::tracker::{ClientKind, ClientMsg, PeerConfig, ServerMsg};
use swarmcast_proto::{Claims, RenditionIndex, Role, Sha256Digest, StreamId, TokenKey};

const SECRET: &str = "test-secret-0123456789abcdef";

/// A running `swarmcast-origin`, stopped when dropped.
struct Origin {
    child: Child,
    base: String,
}

impl Origin {
    fn start(args: &[&str]) -> Origin {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarmcast-origin"))
            .args(["--listen", "127.0.0.1:0", "--token-secret", SECRET])
            .args(args)
            .env("SWARMCAST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start swarmcast-origin");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().expect("origin printed its address").unwrap();
            if let Some(rest) = line.strip_prefix("listening on ") {
                break rest.trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Origin { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then wait (graceful shutdown).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("origin did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(stream: &str, role: Role, expires_at: u64) -> String {
    TokenKey::new(SECRET.as_bytes()).sign(&Claims {
        stream: StreamId::new(stream).unwrap(),
        role,
        expires_at,
    })
}

fn ingest_token(stream: &str) -> String {
    token(stream, Role::Ingest, now_s() + 3600)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn playlist(first: u64, names: &[String]) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    for n in names {
        s.push_str(&format!("#EXTINF:2.000000,\n{n}\n"));
    }
    s
}

/// Pushes segments `from..to` of `stream/rendition` the way ffmpeg does:
/// each segment, then the playlist naming it. Returns the bodies pushed.
async fn push(
    c: &reqwest::Client,
    o: &Origin,
    stream: &str,
    rendition: &str,
    from: u64,
    to: u64,
) -> Vec<Vec<u8>> {
    let tok = ingest_token(stream);
    let mut bodies = Vec::new();
    let mut names = Vec::new();
    for i in from..to {
        let name = format!("seg_{i:05}.ts");
        let body: Vec<u8> = (0..5000u32)
            .map(|b| (b as u64 * 31 + i * 7) as u8)
            .collect();
        let r = c
            .put(o.url(&format!("/ingest/{stream}/{rendition}/{name}")))
            .bearer_auth(&tok)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        names.push(name);
        let r = c
            .put(o.url(&format!("/ingest/{stream}/{rendition}/index.m3u8")))
            .bearer_auth(&tok)
            .body(playlist(from, &names))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        bodies.push(body);
    }
    bodies
}

async fn get_text(c: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let r = c.get(url).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn index(c: &reqwest::Client, o: &Origin, stream: &str, rendition: &str) -> RenditionIndex {
    let (st, body) = get_text(c, &o.url(&format!("/live/{stream}/{rendition}/index.json"))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Value of one Prometheus sample whose line starts with `prefix`.
async fn metric(c: &reqwest::Client, o: &Origin, prefix: &str) -> f64 {
    let (_, text) = get_text(c, &o.url("/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends one request as raw bytes (no client-side path normalization) and
/// returns the status code.
fn raw_status(o: &Origin, method: &str, path: &str, token: &str, body: &[u8]) -> u16 {
    use std::io::{Read as _, Write as _};
    let addr = o.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "swarmcast-{name}-{}-{}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u32() -> u32 {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos())
        ^ std::process::id()
}

fn media_seqs(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.trim_end_matches(".ts").parse().unwrap())
        .collect()
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

fn ffprobe_streams(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian package ffmpeg) is installed");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_source_serves_a_live_stream_that_decodes() {
    let o = Origin::start(&["--test-source", "--test-source-renditions", "360p,144p"]);
    let c = client();
    // Master playlist: both renditions, with the encoder's attributes.
    wait_for("the master playlist", 40, || async {
        let (st, body) = get_text(&c, &o.url("/live/test/master.m3u8")).await;
        st == StatusCode::OK && body.contains("360p/index.m3u8") && body.contains("144p/index.m3u8")
    })
    .await;
    let (_, master) = get_text(&c, &o.url("/live/test/master.m3u8")).await;
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    // The media playlist advances.
    let url = o.url("/live/test/360p/index.m3u8");
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for two segments"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        first = media_seqs(&get_text(&c, &url).await.1);
    }
    let last = *first.last().unwrap();
    wait_for("the playlist to advance", 20, || async {
        let (_, body) = get_text(&c, &url).await;
        media_seqs(&body).last().is_some_and(|s| *s > last)
    })
    .await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=1");
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let text = r.text().await.unwrap();
    for tag in [
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-MEDIA-SEQUENCE:",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXTINF:2.000,",
    ] {
        assert!(text.contains(tag), "{tag} missing from\n{text}");
    }

    // Every segment's bytes match the hash the origin published.
    let idx = index(&c, &o, "test", "360p").await;
    assert!(idx.segments.len() >= 3);
    let dir = tmp_dir("probe");
    for meta in idx.segments.iter().rev().take(2) {
        let r = c
            .get(o.url(&format!("/live/test/360p/{}.ts", meta.id.seq)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers().clone();
        let body = r.bytes().await.unwrap();
        assert!(
            meta.matches(&body),
            "segment {} does not match its published hash",
            meta.id
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(Sha256Digest::of(&body).0);
        assert_eq!(h["repr-digest"], format!("sha-256=:{b64}:").as_str());
        assert_eq!(h["content-type"], "video/mp2t");
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        // It decodes: H.264 video and AAC audio.
        let file = dir.join(format!("{}.ts", meta.id.seq));
        std::fs::write(&file, &body).unwrap();
        let streams = ffprobe_streams(&file);
        assert!(
            streams.contains("h264") && streams.contains("aac"),
            "{streams}"
        );
        // Conditional GET, Range, HEAD.
        let etag = h["etag"].clone();
        let r = c
            .get(o.url(&format!("/live/test/360p/{}.ts", meta.id.seq)))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = c
            .get(o.url(&format!("/live/test/360p/{}.ts", meta.id.seq)))
            .header("range", "bytes=100-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes 100-{}/{}", body.len() - 1, body.len()).as_str()
        );
        assert_eq!(&r.bytes().await.unwrap()[..], &body[100..]);
        let r = c
            .head(o.url(&format!("/live/test/360p/{}.ts", meta.id.seq)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert!(r.bytes().await.unwrap().is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // A real HLS client (ffmpeg's demuxer) plays three seconds of the live
    // stream from the master playlist.
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            &o.url("/live/test/master.m3u8"),
            "-map",
            "0:v:0",
            "-t",
            "3",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg could not play the stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CORS preflight.
    let r = c
        .request(
            reqwest::Method::OPTIONS,
            o.url("/live/test/360p/index.m3u8"),
        )
        .header("origin", "https://player.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Range")
    );
    // Metrics and health.
    assert!(metric(&c, &o, "swarmcast_origin_ingest_bytes_total").await > 0.0);
    assert!(
        metric(
            &c,
            &o,
            "swarmcast_origin_egress_bytes_total{kind=\"segment\"}"
        )
        .await
            > 0.0
    );
    assert!(metric(&c, &o, "swarmcast_origin_live_window_segments").await >= 3.0);
    assert_eq!(get_text(&c, &o.url("/healthz")).await.0, StatusCode::OK);
    o.stop();
}

#[tokio::test]
async fn hostile_input_is_refused_counted_and_changes_nothing() {
    let o = Origin::start(&["--max-segment-bytes", "65536"]);
    let c = client();
    let bodies = push(&c, &o, "ext", "r1", 0, 2).await;
    let playlist_before = get_text(&c, &o.url("/live/ext/r1/index.m3u8")).await.1;
    let index_before = index(&c, &o, "ext", "r1").await;
    assert_eq!(index_before.segments.len(), 2);

    let seg_url = o.url("/ingest/ext/r1/seg_00001.ts");
    let pl_url = o.url("/ingest/ext/r1/index.m3u8");
    let evil = b"evil".to_vec();
    // (description, request, expected status)
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "no token",
            c.put(&seg_url).body(evil.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "garbage token",
            c.put(&seg_url).bearer_auth("x.y").body(evil.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "token signed with another secret",
            c.put(&seg_url)
                .bearer_auth(TokenKey::new(b"another secret!!").sign(&Claims {
                    stream: StreamId::new("ext").unwrap(),
                    role: Role::Ingest,
                    expires_at: now_s() + 60,
                }))
                .body(evil.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired token",
            c.put(&seg_url)
                .bearer_auth(token("ext", Role::Ingest, now_s() - 1))
                .body(evil.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "viewer token",
            c.put(&seg_url)
                .bearer_auth(token("ext", Role::Viewer, now_s() + 60))
                .body(evil.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            "other stream's token",
            c.put(&seg_url)
                .bearer_auth(ingest_token("other"))
                .body(evil.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            "token in the query, wrong stream",
            c.put(format!("{seg_url}?token={}", ingest_token("other")))
                .body(evil.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            "playlist that does not parse",
            c.put(&pl_url)
                .bearer_auth(ingest_token("ext"))
                .body("garbage"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "playlist not UTF-8",
            c.put(&pl_url)
                .bearer_auth(ingest_token("ext"))
                .body(vec![0xff, 0xfe, 0x00]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "playlist with a traversal URI",
            c.put(&pl_url)
                .bearer_auth(ingest_token("ext"))
                .body("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n../../../etc/passwd\n"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "playlist over the size cap",
            c.put(&pl_url)
                .bearer_auth(ingest_token("ext"))
                .body(vec![b'#'; 300 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "segment over the size cap",
            c.put(&seg_url)
                .bearer_auth(ingest_token("ext"))
                .body(vec![0u8; 100 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "odd file name",
            c.put(o.url("/ingest/ext/r1/se%20g.ts"))
                .bearer_auth(ingest_token("ext"))
                .body(evil.clone()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unsupported extension",
            c.put(o.url("/ingest/ext/r1/seg.exe"))
                .bearer_auth(ingest_token("ext"))
                .body(evil.clone()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad master",
            c.put(o.url("/ingest/ext/master.m3u8"))
                .bearer_auth(ingest_token("ext"))
                .body("#EXTM3U\nfoo\n"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown stream",
            c.get(o.url("/live/nope/master.m3u8")),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown rendition",
            c.get(o.url("/live/ext/r9/index.m3u8")),
            StatusCode::NOT_FOUND,
        ),
        (
            "segment out of the window",
            c.get(o.url("/live/ext/r1/99.ts")),
            StatusCode::NOT_FOUND,
        ),
        (
            "segment with the wrong type",
            c.get(o.url("/live/ext/r1/0.m4s")),
            StatusCode::NOT_FOUND,
        ),
        (
            "bad segment name",
            c.get(o.url("/live/ext/r1/x.ts")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "huge sequence number",
            c.get(o.url("/live/ext/r1/999999999999999999999.ts")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad stream id in a GET",
            c.get(o.url("/live/a%00b/master.m3u8")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "range outside the segment",
            c.get(o.url("/live/ext/r1/0.ts"))
                .header("range", "bytes=999999-"),
            StatusCode::RANGE_NOT_SATISFIABLE,
        ),
        (
            "unknown path",
            c.get(o.url("/etc/passwd")),
            StatusCode::NOT_FOUND,
        ),
        (
            "method not allowed",
            c.delete(o.url("/live/ext/r1/0.ts")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (what, req, want) in cases {
        let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            r.status(),
            want,
            "{what}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    // Paths an HTTP client library would normalize: sent as raw bytes.
    let tok = ingest_token("ext");
    for (path, want) in [
        ("/ingest/%2e%2e/r1/seg_1.ts", 400),
        ("/ingest/ext/%2e%2e/seg_1.ts", 400),
        ("/ingest/ext/r1/%2e%2e", 400),
        ("/ingest/ext/r1/..%2f..%2fx.ts", 400),
        ("/ingest/../ext/r1/seg_1.ts", 404),
    ] {
        assert_eq!(
            raw_status(&o, "PUT", path, &tok, b"evil"),
            want,
            "PUT {path}"
        );
    }
    for (path, want) in [
        ("/live/%2e%2e/master.m3u8", 400),
        ("/live/ext/r1/..%2f..%2fetc%2fpasswd", 400),
        ("/live/ext/%2e%2e/index.m3u8", 400),
    ] {
        assert_eq!(raw_status(&o, "GET", path, &tok, b""), want, "GET {path}");
    }
    // Nothing stored changed, and the origin still serves everyone.
    assert_eq!(
        get_text(&c, &o.url("/live/ext/r1/index.m3u8")).await.1,
        playlist_before
    );
    assert_eq!(index(&c, &o, "ext", "r1").await, index_before);
    for (i, body) in bodies.iter().enumerate() {
        let got = c
            .get(o.url(&format!("/live/ext/r1/{i}.ts")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], &body[..]);
    }
    // A segment PUT and then a playlist naming something never PUT: nothing new.
    let stale = playlist(
        0,
        &[
            "seg_00000.ts".into(),
            "seg_00001.ts".into(),
            "never_put.ts".into(),
        ],
    );
    let r = c
        .put(&pl_url)
        .bearer_auth(ingest_token("ext"))
        .body(stale)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(index(&c, &o, "ext", "r1").await, index_before);
    // Every refusal is counted by reason.
    for reason in [
        "missing_token",
        "token_invalid",
        "token_expired",
        "token_forbidden",
        "bad_playlist",
        "too_large",
        "bad_path",
        "unknown_stream",
        "unknown_rendition",
        "segment_not_found",
        "bad_range",
        "unknown_path",
    ] {
        let n = metric(
            &c,
            &o,
            &format!("swarmcast_origin_rejected_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert!(n >= 1.0, "no rejection counted for {reason}");
    }
    assert_eq!(get_text(&c, &o.url("/healthz")).await.0, StatusCode::OK);
    o.stop();
}

#[tokio::test]
async fn restart_with_a_data_dir_keeps_serving() {
    let dir = tmp_dir("data");
    let data = dir.to_str().unwrap();
    let c = client();
    let o = Origin::start(&["--data-dir", data]);
    let bodies = push(&c, &o, "dvr", "r1", 0, 4).await;
    let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nr1/index.m3u8\n";
    let r = c
        .put(o.url("/ingest/dvr/master.m3u8"))
        .bearer_auth(ingest_token("dvr"))
        .body(master)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let before = index(&c, &o, "dvr", "r1").await;
    let master_before = get_text(&c, &o.url("/live/dvr/master.m3u8")).await.1;
    o.stop();

    let o = Origin::start(&["--data-dir", data]);
    assert_eq!(index(&c, &o, "dvr", "r1").await, before);
    assert_eq!(
        get_text(&c, &o.url("/live/dvr/master.m3u8")).await.1,
        master_before
    );
    for (i, body) in bodies.iter().enumerate() {
        let r = c
            .get(o.url(&format!("/live/dvr/r1/{i}.ts")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(&r.bytes().await.unwrap()[..], &body[..]);
    }
    // The encoder comes back with its own numbering: the origin continues
    // its sequence and marks the discontinuity.
    push(&c, &o, "dvr", "r1", 0, 1).await;
    let after = index(&c, &o, "dvr", "r1").await;
    assert_eq!(after.segments.last().unwrap().id.seq, 4);
    let text = get_text(&c, &o.url("/live/dvr/r1/index.m3u8")).await.1;
    let disc = text
        .find("#EXT-X-DISCONTINUITY\n")
        .expect("a discontinuity after the restart");
    assert!(
        text.find("3.ts").unwrap() < disc && disc < text.find("4.ts").unwrap(),
        "{text}"
    );
    // A corrupted file on disk is not served after the next restart.
    o.stop();
    std::fs::write(dir.join("dvr/r1/4.ts"), b"tampered").unwrap();
    let o = Origin::start(&["--data-dir", data]);
    let r = c.get(o.url("/live/dvr/r1/4.ts")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    o.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn publishes_every_new_segment_to_the_tracker() {
    // A WebSocket endpoint on loopback standing where the tracker will be:
    // it checks the publisher's hello and records what it is sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // The first connection is dropped right after its hello, to check
        // that the origin reconnects and sends the records again.
        for attempt in 0..2 {
            let (sock, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(sock).await.unwrap();
            let hello = ws.next().await.unwrap().unwrap().into_text().unwrap();
            let ClientMsg::Hello(h) = ClientMsg::decode(&hello).unwrap() else {
                panic!("first message is not a hello: {hello}")
            };
            assert_eq!(h.kind, ClientKind::Publisher);
            TokenKey::new(SECRET.as_bytes())
                .verify(&h.token, &h.stream, Role::Ingest, now_s())
                .unwrap();
            if attempt == 0 {
                // Wait for a first publish, then drop the connection.
                let _ = ws.next().await;
                drop(ws);
                continue;
            }
            let welcome = ServerMsg::Welcome {
                peer_id: h.peer_id,
                config: PeerConfig {
                    max_peers: 0,
                    window_segments: 30,
                    ping_interval_ms: 1000,
                    idle_timeout_ms: 5000,
                    ice_servers: vec![],
                },
            };
            ws.send(tokio_tungstenite::tungstenite::Message::text(
                welcome.encode(),
            ))
            .await
            .unwrap();
            while let Some(Ok(m)) = ws.next().await {
                if let Ok(text) = m.into_text() {
                    if let Ok(ClientMsg::Publish { meta }) = ClientMsg::decode(&text) {
                        tx.send(meta).unwrap();
                    }
                }
            }
        }
    });
    let o = Origin::start(&["--tracker", &ws_url]);
    let c = client();
    push(&c, &o, "pub", "r1", 0, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    push(&c, &o, "pub", "r1", 1, 3).await;
    let idx = index(&c, &o, "pub", "r1").await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < idx.segments.len() && Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            if !got.contains(&m) {
                got.push(m);
            }
        }
    }
    got.sort_by_key(|m| m.id.seq);
    // Exactly the records the origin serves in its own index.
    assert_eq!(got, idx.segments);
    o.stop();
}

#[tokio::test]
async fn serves_https_with_rustls() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tmp_dir("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let o = Origin::start(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert!(o.base.starts_with("https://"), "{}", o.base);
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    push(&c, &o, "tls", "r1", 0, 1).await;
    let r = c
        .get(o.url("/live/tls/r1/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = o.base.replace("https://", "http://");
    assert!(
        client()
            .get(format!("{plain}/healthz"))
            .send()
            .await
            .is_err()
    );
    o.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_ffmpeg_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_swarmcast-origin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--test-source",
            "--ffmpeg",
            "/nonexistent/ffmpeg",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install ffmpeg"), "{err}");
}

#[test]
fn config_from_a_file_and_the_environment() {
    let dir = tmp_dir("config");
    let file = dir.join("origin.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\nwindow-segments = 5\nplaylist-segments = 9\n",
    )
    .unwrap();
    // Cross-field checks apply to what the file says.
    let out = Command::new(env!("CARGO_BIN_EXE_swarmcast-origin"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--playlist-segments"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown key is refused like an unknown flag.
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nno-such-key = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swarmcast-origin"))
        .env("SWARMCAST_CONFIG", &file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-key"));
    // A flag on the command line wins over the file; the environment fills in
    // what neither gives.
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarmcast-origin"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("SWARMCAST_TOKEN_SECRET", SECRET)
        .env("SWARMCAST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening on http://127.0.0.1:") && !line.contains(":1\n"),
        "{line}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The token subcommand signs with the secret from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_swarmcast-origin"))
        .args([
            "token", "--stream", "cfg", "--role", "ingest", "--ttl", "60",
        ])
        .env("SWARMCAST_TOKEN_SECRET", SECRET)
        .output()
        .unwrap();
    let tok = String::from_utf8(out.stdout).unwrap();
    let claims = TokenKey::new(SECRET.as_bytes())
        .verify(
            tok.trim(),
            &StreamId::new("cfg").unwrap(),
            Role::Ingest,
            now_s(),
        )
        .unwrap();
    assert!(claims.expires_at <= now_s() + 60);
    std::fs::remove_dir_all(&dir).unwrap();
}
