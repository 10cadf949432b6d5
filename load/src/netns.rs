//! Edge peers as processes in network namespaces of their own, for
//! `swarmcast-load live --netns`: each viewer gets a namespace joined to
//! this one by a veth pair (`10.77.<i>.2` on its side, `10.77.<i>.1` here,
//! this namespace routing between them), and its uplink is shaped with
//! `tc tbf` on its side of the pair, so peers have different upload caps
//! and their traffic crosses real links instead of loopback.
//!
//! This namespace gets interfaces and a route per viewer, so it must be one
//! made for the run (`unshare -n`): [`Netns::check_isolated`] refuses any
//! other. Everything made is removed on [`Netns::stop`] or when the value is
//! dropped; every process started is stopped by its PID.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::LoadError;

/// The port every edge peer's local endpoint listens on (inside its own
/// namespace).
pub const EDGE_PORT: u16 = 8080;

/// The namespaces, links and edge-peer processes of one event.
#[derive(Debug)]
pub struct Netns {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Each edge peer's local endpoint (`/metrics`, the HLS endpoint).
    pub edges: Vec<SocketAddr>,
    /// The edge peers' metrics read just before they were stopped.
    last_metrics: Option<Vec<String>>,
    uplinks: Vec<u32>,
    /// Where each edge peer writes its metrics as it exits.
    final_dir: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), LoadError> {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| LoadError::Run(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LoadError::Run(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn ip(args: &[&str]) -> Result<(), LoadError> {
    run(Command::new("ip").args(args))
}

/// The address of this namespace's side of viewer `i`'s link.
pub fn hub_addr(i: usize) -> Ipv4Addr {
    // A /30 per viewer, 64 to a /24.
    Ipv4Addr::new(10, 77, (i / 64 + 1) as u8, ((i % 64) * 4 + 1) as u8)
}

fn edge_addr(i: usize) -> Ipv4Addr {
    let h = hub_addr(i).octets();
    Ipv4Addr::new(h[0], h[1], h[2], h[3] + 1)
}

impl Netns {
    /// Refuses to run unless this namespace has no interface up but
    /// loopback (and links of an earlier run): the links and routes made
    /// here must never touch the machine's own network.
    pub fn check_isolated() -> Result<(), LoadError> {
        // `ip` reads this process's namespace (`/sys/class/net` shows the
        // one sysfs was mounted in).
        let out = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .map_err(|e| LoadError::Config(format!("--netns needs `ip` (iproute2): {e}")))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu ..."
            let mut f = line.split_whitespace();
            let name = f.nth(1).unwrap_or("").trim_end_matches(':');
            let name = name.split('@').next().unwrap_or(name);
            let flags = f.next().unwrap_or("");
            // Devices a new namespace comes with (ifb0, tunl0...) are down.
            let up = flags
                .trim_matches(|c| c == '<' || c == '>')
                .split(',')
                .any(|x| x == "UP");
            if up && name != "lo" && !name.starts_with("scv") {
                return Err(LoadError::Config(format!(
                    "--netns adds interfaces and routes, and this network namespace has `{name}` up: \
                     run it in one of its own, e.g. \
                     `unshare -n -- sh -c 'ip link set lo up && swarmcast-load live --netns ...'`"
                )));
            }
        }
        Ok(())
    }

    /// Makes one namespace per viewer, links and shapes it, and starts
    /// `edge_bin` in each with `args(hub address, its uplink)`. `uplinks_kbps` is
    /// cycled over the viewers (0: not shaped).
    pub fn start(
        viewers: usize,
        uplinks_kbps: &[u32],
        edge_bin: &PathBuf,
        args: impl Fn(Ipv4Addr, u32) -> Vec<String>,
    ) -> Result<Self, LoadError> {
        Self::check_isolated()?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| LoadError::Run(format!("enabling forwarding: {e}")))?;
        let mut me = Netns {
            tag: format!("sc{}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            edges: Vec::new(),
            last_metrics: None,
            uplinks: Vec::new(),
            final_dir: std::env::temp_dir().join(format!("swarmcast-netns-{}", std::process::id())),
        };
        std::fs::create_dir_all(&me.final_dir)
            .map_err(|e| LoadError::Run(format!("{}: {e}", me.final_dir.display())))?;
        for i in 0..viewers {
            let ns = format!("{}-{i}", me.tag);
            ip(&["netns", "add", &ns])?;
            me.namespaces.push(ns.clone());
            let host = format!("scv{i}");
            let (h, e) = (hub_addr(i), edge_addr(i));
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["addr", "add", &format!("{h}/30"), "dev", &host])?;
            ip(&["link", "set", &host, "up"])?;
            let inside = |a: &[&str]| {
                let mut v = vec!["netns", "exec", ns.as_str(), "ip"];
                v.extend_from_slice(a);
                ip(&v)
            };
            inside(&["link", "set", "lo", "up"])?;
            inside(&["addr", "add", &format!("{e}/30"), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["route", "add", "default", "via", &h.to_string()])?;
            let kbps = uplinks_kbps
                .get(i % uplinks_kbps.len().max(1))
                .copied()
                .unwrap_or(0);
            me.uplinks.push(kbps);
            if kbps > 0 {
                // A token bucket the size of ~20 ms at the rate (at least
                // two full frames), queueing up to 200 ms.
                let burst = (kbps as usize * 1000 / 8 / 50).max(3200);
                run(Command::new("ip").args([
                    "netns",
                    "exec",
                    &ns,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    "eth0",
                    "root",
                    "tbf",
                    "rate",
                    &format!("{kbps}kbit"),
                    "burst",
                    &burst.to_string(),
                    "latency",
                    "200ms",
                ]))?;
            }
            let child = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(edge_bin)
                .args(args(h, kbps))
                .arg("--final-metrics")
                .arg(me.final_dir.join(format!("edge-{i}.prom")))
                .args([
                    "--listen",
                    &format!("{e}:{EDGE_PORT}"),
                    "--udp-bind",
                    &format!("{e}:0"),
                ])
                .env("SWARMCAST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|err| LoadError::Run(format!("{}: {err}", edge_bin.display())))?;
            me.children.push(child);
            me.edges.push(SocketAddr::from((e, EDGE_PORT)));
        }
        Ok(me)
    }

    /// Each edge peer's `/metrics`, in viewer order; once they are
    /// stopped, what they said last.
    pub async fn metrics_each(&self, client: &reqwest::Client) -> Vec<String> {
        if let Some(m) = &self.last_metrics {
            return m.clone();
        }
        let mut all = Vec::new();
        for e in &self.edges {
            // A busy machine may be slow to answer: three tries.
            let mut text = String::new();
            for attempt in 1..=3 {
                match client.get(format!("http://{e}/metrics")).send().await {
                    Ok(r) => match r.text().await {
                        Ok(t) => {
                            text = t;
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(edge = %e, attempt, error = %err, "edge metrics cut short")
                        }
                    },
                    Err(err) => {
                        tracing::warn!(edge = %e, attempt, error = %err, "edge metrics unavailable")
                    }
                }
            }
            all.push(text);
        }
        all
    }

    /// Every edge peer's `/metrics`, one after the other (sums over the
    /// text add up the peers).
    pub async fn metrics(&self, client: &reqwest::Client) -> String {
        self.metrics_each(client).await.join("\n")
    }

    /// Each viewer's uplink cap, kb/s (0: not shaped).
    pub fn uplinks(&self) -> &[u32] {
        &self.uplinks
    }

    /// CPU seconds the edge-peer processes have used.
    pub fn cpu_secs(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|c| crate::stat::cpu_secs(c.id()))
            .sum()
    }

    /// Stops the edge peers (SIGTERM: each sends its last report and
    /// writes its final metrics; SIGKILL after `grace`). Their counters are
    /// from then on the final ones (or, for one that did not write them,
    /// what it said just before).
    pub async fn stop_edges(&mut self, client: &reqwest::Client, grace: Duration) {
        if self.last_metrics.is_some() || self.children.is_empty() {
            self.kill();
            return;
        }
        let before = self.metrics_each(client).await;
        for c in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let until = Instant::now() + grace;
        for c in &mut self.children {
            while Instant::now() < until && matches!(c.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.kill();
        let last = before
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let path = self.final_dir.join(format!("edge-{i}.prom"));
                std::fs::read_to_string(&path).unwrap_or_else(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "no final metrics: the last ones read stand");
                    text
                })
            })
            .collect();
        self.last_metrics = Some(last);
    }

    fn kill(&mut self) {
        for mut c in self.children.drain(..) {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// Stops what is left and removes the namespaces (with their links).
    pub fn stop(&mut self) {
        self.kill();
        for ns in self.namespaces.drain(..) {
            let _ = ip(&["netns", "del", &ns]);
        }
        let _ = std::fs::remove_dir_all(&self.final_dir);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop();
    }
}
