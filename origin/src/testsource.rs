//! The built-in live test source: ffmpeg renders a test pattern with a
//! burnt-in wall clock and a beeping tone, encodes an ABR ladder, and pushes
//! it into this origin's own ingest exactly as an external encoder would
//! (HTTP PUT, ingest token). If ffmpeg exits it is started again, and the
//! restart shows in the playlists as a discontinuity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::OriginError;

/// One rung of the ladder: name, width, height, video kbit/s.
pub type Rung = (&'static str, u32, u32, u32);

const LADDER: [Rung; 6] = [
    ("1080p", 1920, 1080, 4500),
    ("720p", 1280, 720, 2500),
    ("480p", 854, 480, 1200),
    ("360p", 640, 360, 800),
    ("240p", 426, 240, 400),
    ("144p", 256, 144, 200),
];

/// Looks a rung up by name.
pub fn rung(name: &str) -> Option<Rung> {
    LADDER.iter().copied().find(|r| r.0 == name)
}

/// What the test source pushes, and where.
#[derive(Debug, Clone)]
pub struct TestSource {
    /// The ffmpeg program.
    pub ffmpeg: PathBuf,
    /// The origin to push into (a loopback address).
    pub origin: SocketAddr,
    /// Stream id.
    pub stream: String,
    /// Rungs, best first.
    pub renditions: Vec<String>,
    /// Segment duration, seconds.
    pub segment_seconds: u32,
    /// An ingest token for the stream.
    pub token: String,
}

/// Fails with a clear message when ffmpeg cannot run.
pub async fn check_ffmpeg(ffmpeg: &Path) -> Result<(), OriginError> {
    let out = Command::new(ffmpeg)
        .args(["-hide_banner", "-version"])
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(OriginError::Ffmpeg(format!(
            "{} -version failed with {}",
            ffmpeg.display(),
            o.status
        ))),
        Err(e) => Err(OriginError::Ffmpeg(format!(
            "cannot run ffmpeg ({}: {e}); the test source needs it: install Debian's package (apt-get install ffmpeg) or pass --ffmpeg PATH",
            ffmpeg.display()
        ))),
    }
}

impl TestSource {
    /// The ffmpeg arguments.
    pub fn args(&self) -> Vec<String> {
        let rungs: Vec<Rung> = self.renditions.iter().filter_map(|r| rung(r)).collect();
        let (_, w, h, _) = rungs.first().copied().unwrap_or(LADDER[3]);
        let fps = 25;
        let gop = fps * self.segment_seconds;
        let n = rungs.len();
        let font = h / 9;
        let mut filter = format!(
            "[0:v]drawtext=text='%{{localtime\\:%X}}':fontsize={font}:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw={}:x=(w-tw)/2:y=h/8,\
drawtext=text='Swarmcast test source':fontsize={}:fontcolor=white:box=1:boxcolor=black@0.6:x=(w-tw)/2:y=h-th-h/10,split={n}",
            font / 6,
            font / 2
        );
        for i in 0..n {
            filter.push_str(&format!("[s{i}]"));
        }
        for (i, (_, rw, rh, _)) in rungs.iter().enumerate() {
            filter.push_str(&format!(";[s{i}]scale={rw}:{rh}[v{i}]"));
        }
        let url = |tail: &str| format!("http://{}/ingest/{}/{tail}", self.origin, self.stream);
        let mut a: Vec<String> = [
            "-hide_banner",
            "-loglevel",
            "warning",
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={w}x{h}:rate={fps}"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:beep_factor=4:sample_rate=48000",
            "-filter_complex",
            &filter,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in 0..n {
            a.extend([
                "-map".into(),
                format!("[v{i}]"),
                "-map".into(),
                "1:a".into(),
            ]);
        }
        a.extend(
            [
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-pix_fmt",
                "yuv420p",
            ]
            .map(String::from),
        );
        a.extend([
            "-g".into(),
            gop.to_string(),
            "-keyint_min".into(),
            gop.to_string(),
            "-sc_threshold".into(),
            "0".into(),
        ]);
        for (i, (_, _, _, kbps)) in rungs.iter().enumerate() {
            a.extend([
                format!("-b:v:{i}"),
                format!("{kbps}k"),
                format!("-maxrate:v:{i}"),
                format!("{}k", kbps * 11 / 10),
                format!("-bufsize:v:{i}"),
                format!("{}k", kbps * 2),
            ]);
        }
        a.extend(["-c:a", "aac", "-b:a", "64k", "-ac", "2"].map(String::from));
        let map: Vec<String> = rungs
            .iter()
            .enumerate()
            .map(|(i, (name, ..))| format!("v:{i},a:{i},name:{name}"))
            .collect();
        a.extend([
            "-f".into(),
            "hls".into(),
            "-hls_time".into(),
            self.segment_seconds.to_string(),
            "-hls_list_size".into(),
            "6".into(),
            "-hls_flags".into(),
            "independent_segments+program_date_time".into(),
            "-method".into(),
            "PUT".into(),
            "-http_persistent".into(),
            "1".into(),
            "-headers".into(),
            format!("Authorization: Bearer {}\r\n", self.token),
            "-var_stream_map".into(),
            map.join(" "),
            "-master_pl_name".into(),
            "master.m3u8".into(),
            "-hls_segment_filename".into(),
            url("%v/seg_%05d.ts"),
            url("%v/index.m3u8"),
        ]);
        a
    }

    /// Runs ffmpeg until `shutdown`, starting it again when it exits.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut child = match Command::new(&self.ffmpeg)
                .args(self.args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
            {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "cannot start ffmpeg");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            info!(pid = child.id(), stream = %self.stream, "test source started");
            if let Some(err) = child.stderr.take() {
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(err).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        warn!(target: "ffmpeg", "{l}");
                    }
                });
            }
            let started = tokio::time::Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return;
                }
                status = child.wait() => {
                    warn!(?status, "test source exited; starting it again");
                    metrics::counter!("swarmcast_origin_test_source_restarts_total").increment(1);
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
