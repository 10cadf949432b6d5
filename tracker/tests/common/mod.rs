//! What the tracker's integration tests share: the real binary started on
//! 127.0.0.1:0, its address, its HTTP endpoints.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// The token secret of every tracker these tests start.
pub const SECRET: &str = "tracker-test-secret-0123456789";

/// A running tracker, killed when dropped.
pub struct Tracker {
    pub child: Child,
    /// `host:port` of `--listen`.
    pub addr: String,
    /// `--listen` serves TLS.
    pub tls: bool,
}

impl Tracker {
    /// Starts the tracker with `args` and waits until it listens.
    pub fn start(args: &[&str]) -> Tracker {
        Self::start_listening(args, 1)
    }

    /// Starts the tracker and waits until `listeners` sockets listen (the
    /// first is `--listen`).
    pub fn start_listening(args: &[&str], listeners: usize) -> Tracker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarmcast-tracker"))
            .args(["--listen", "127.0.0.1:0", "--token-secret", SECRET])
            .args(args)
            .env("SWARMCAST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut found = Vec::new();
        while found.len() < listeners {
            let line = lines.next().expect("tracker printed its address").unwrap();
            if let Some(rest) = line.strip_prefix("listening on http://") {
                found.push((rest.trim().to_string(), false));
            } else if let Some(rest) = line.strip_prefix("listening on https://") {
                found.push((rest.trim().to_string(), true));
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let (addr, tls) = found.swap_remove(0);
        Tracker { child, addr, tls }
    }

    /// The body of `GET http://ADDR{path}`.
    pub async fn get(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of the `/metrics` lines starting with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.get("/metrics")
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A self-signed certificate for 127.0.0.1, written as `c.pem` and `k.pem`
/// into a fresh temporary directory named after `name`.
pub fn self_signed(name: &str) -> (rcgen::CertifiedKey<rcgen::KeyPair>, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), cert.signing_key.serialize_pem()).unwrap();
    (cert, dir)
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
