//! Scenario files (`scenarios/*.toml`): the audience, its network, churn,
//! the CDN behind the origin, and the policy. Unknown keys are errors, and
//! every error names the line (toml's own spans).

use std::path::Path;

use serde::Deserialize;

use crate::LoadError;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in reports.
    pub name: String,
    /// What the scenario stands for.
    #[serde(default)]
    pub description: String,
    /// Viewers (peak audience).
    pub viewers: usize,
    /// Simulated event length, seconds.
    pub duration_s: u64,
    /// The stream.
    #[serde(default)]
    pub stream: StreamSpec,
    /// Per-viewer network.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Joins and leaves.
    #[serde(default)]
    pub churn: ChurnSpec,
    /// The HTTP tier (origin behind a CDN).
    #[serde(default)]
    pub cdn: CdnSpec,
    /// Tracker settings.
    #[serde(default)]
    pub tracker: TrackerSpec,
    /// The player.
    #[serde(default)]
    pub player: PlayerSpec,
}

/// The live stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSpec {
    /// Media bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Segment duration, ms.
    pub segment_ms: u64,
    /// The origin's block size (one hash per block in each record), KiB.
    pub block_kib: u32,
}

impl Default for StreamSpec {
    fn default() -> Self {
        Self {
            bitrate_kbps: 2500,
            segment_ms: 2000,
            block_kib: swarmcast_proto::BLOCK_SIZE / 1024,
        }
    }
}

/// A distribution of a per-viewer value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "dist", rename_all = "snake_case")]
pub enum Dist {
    /// Always `value`.
    Fixed {
        /// The value.
        value: f64,
    },
    /// Uniform in `[min, max]`.
    Uniform {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Log-normal with this median and spread (sigma of the log).
    LogNormal {
        /// Median.
        median: f64,
        /// Sigma of ln(value).
        sigma: f64,
    },
    /// A mix: `share` of viewers draw from `a`, the rest from `b`.
    Mix {
        /// Share drawn from `a` (0..=1).
        share: f64,
        /// First distribution.
        a: Box<Dist>,
        /// Second distribution.
        b: Box<Dist>,
    },
}

impl Dist {
    /// Draws a value from `u1`, `u2` (uniform in [0, 1)) and `u3` for mixes.
    pub fn draw(&self, rng: &mut impl rand::Rng) -> f64 {
        match self {
            Dist::Fixed { value } => *value,
            Dist::Uniform { min, max } => min + (max - min) * rng.random::<f64>(),
            Dist::LogNormal { median, sigma } => {
                // Box-Muller.
                let u1: f64 = rng.random::<f64>().max(1e-12);
                let u2: f64 = rng.random();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                median * (sigma * z).exp()
            }
            Dist::Mix { share, a, b } => {
                if rng.random::<f64>() < *share {
                    a.draw(rng)
                } else {
                    b.draw(rng)
                }
            }
        }
    }

    fn check(&self, what: &str) -> Result<(), String> {
        let bad = |m: &str| Err(format!("{what}: {m}"));
        match self {
            Dist::Fixed { value } if !(value.is_finite() && *value >= 0.0) => {
                bad("value must be a finite number >= 0")
            }
            Dist::Uniform { min, max } if !(min.is_finite() && max >= min && *min >= 0.0) => {
                bad("needs 0 <= min <= max")
            }
            Dist::LogNormal { median, sigma }
                if !(median.is_finite() && *median > 0.0 && sigma.is_finite() && *sigma >= 0.0) =>
            {
                bad("needs median > 0 and sigma >= 0")
            }
            Dist::Mix { share, a, b } => {
                if !(0.0..=1.0).contains(share) {
                    return bad("share must be within 0..=1");
                }
                a.check(what)?;
                b.check(what)
            }
            _ => Ok(()),
        }
    }
}

/// Per-viewer network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    /// Upload capacity, kbit/s.
    pub upload_kbps: Dist,
    /// Download capacity, kbit/s.
    pub download_kbps: Dist,
    /// One-way latency from the viewer to the network core, ms (a link
    /// between two viewers takes the sum of theirs).
    pub latency_ms: Dist,
    /// Share of viewer pairs that cannot connect (NAT), 0..=1.
    pub unreachable_pairs: f64,
    /// Viewers behind one shared WAN link (an office): its capacity,
    /// kbit/s, shared by all their HTTP downloads; 0 = none.
    pub shared_wan_kbps: u32,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            upload_kbps: Dist::LogNormal {
                median: 10_000.0,
                sigma: 0.5,
            },
            download_kbps: Dist::LogNormal {
                median: 50_000.0,
                sigma: 0.5,
            },
            latency_ms: Dist::Uniform {
                min: 5.0,
                max: 40.0,
            },
            unreachable_pairs: 0.1,
            shared_wan_kbps: 0,
        }
    }
}

/// Joins and leaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnSpec {
    /// Viewers present at the start (the rest join over `ramp_s`).
    pub initial_share: f64,
    /// Seconds over which the others join (a flash crowd: small).
    pub ramp_s: f64,
    /// Share of viewers leaving per minute (each replaced by a new one).
    pub leave_per_min: f64,
}

impl Default for ChurnSpec {
    fn default() -> Self {
        Self {
            initial_share: 0.0,
            ramp_s: 60.0,
            leave_per_min: 0.01,
        }
    }
}

/// The HTTP tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdnSpec {
    /// Time to first byte, ms.
    pub latency_ms: f64,
}

impl Default for CdnSpec {
    fn default() -> Self {
        Self { latency_ms: 40.0 }
    }
}

/// Which policy the viewers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The tracker's dissemination plan (first fetchers per cell).
    Plan,
    /// No plan: every viewer decides alone (random mesh, HTTP at the last
    /// safe moment when no neighbour has it).
    RandomMesh,
    /// The swarm off: every segment over HTTP.
    HttpOnly,
}

/// Tracker settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSpec {
    /// Neighbours per viewer.
    pub neighbours: u16,
    /// Viewers per first fetcher (the tracker's `--viewers-per-fetcher`).
    pub cell_size: u32,
    /// Most viewers per cell (the tracker's `--cell-viewers`; 0: the
    /// audience is one mesh).
    pub cell_viewers: usize,
    /// Fewest first fetchers per segment.
    pub min_first_fetchers: u32,
    /// Most first fetchers per segment (the coverage feedback's ceiling;
    /// equal to the minimum, it fixes the count and shows what the swarm
    /// alone reaches).
    pub max_first_fetchers: u32,
    /// Publish → the moment the plan wants `coverage_target` of the
    /// viewers to hold a segment, ms (the tracker's `--spread-budget-ms`).
    pub spread_budget_ms: u64,
    /// Share of viewers the plan wants holding a segment within the
    /// budget (the tracker's `--coverage-target`).
    pub coverage_target: f64,
    /// Stripes per segment in the plan (the tracker's `--stripes`; 0: none).
    pub stripes: u8,
    /// Uplink share kept free of planned stripes (the tracker's
    /// `--stripe-headroom`).
    pub stripe_headroom: f64,
}

impl Default for TrackerSpec {
    fn default() -> Self {
        Self {
            neighbours: 8,
            cell_size: 300,
            cell_viewers: 0,
            min_first_fetchers: 1,
            max_first_fetchers: 20_000,
            spread_budget_ms: 3000,
            coverage_target: 0.8,
            stripes: 8,
            stripe_headroom: 1.5,
        }
    }
}

/// The player.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlayerSpec {
    /// Publish → playback deadline, ms (three target durations behind live
    /// is about two segment durations).
    pub playback_delay_ms: u64,
    /// Concurrent uploads per viewer (the swarm core's default if absent).
    pub upload_slots: Option<usize>,
    /// Blocks per piece asked of one holder (the swarm core's
    /// `piece_blocks`; 0 = the whole missing range from one holder).
    pub piece_blocks: Option<u32>,
    /// Holders asked for pieces of one segment at once.
    pub sources_per_segment: Option<usize>,
}

impl Default for PlayerSpec {
    fn default() -> Self {
        Self {
            playback_delay_ms: 4000,
            upload_slots: None,
            piece_blocks: None,
            sources_per_segment: None,
        }
    }
}

impl Scenario {
    /// Parses a scenario; errors name the line and the key.
    pub fn parse(text: &str, origin: &str) -> Result<Self, LoadError> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| LoadError::Config(format!("{origin}: {e}")))?;
        s.check()
            .map_err(|m| LoadError::Config(format!("{origin}: {m}")))?;
        Ok(s)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    fn check(&self) -> Result<(), String> {
        if self.viewers == 0 {
            return Err("viewers must be at least 1".into());
        }
        if self.duration_s == 0 {
            return Err("duration_s must be at least 1".into());
        }
        if self.stream.bitrate_kbps == 0 || self.stream.segment_ms < 100 {
            return Err("stream: bitrate_kbps > 0 and segment_ms >= 100 are needed".into());
        }
        self.network.upload_kbps.check("network.upload_kbps")?;
        self.network.download_kbps.check("network.download_kbps")?;
        self.network.latency_ms.check("network.latency_ms")?;
        if !(0.0..=1.0).contains(&self.network.unreachable_pairs) {
            return Err("network.unreachable_pairs must be within 0..=1".into());
        }
        if !(0.0..=1.0).contains(&self.churn.initial_share) || self.churn.ramp_s < 0.0 {
            return Err("churn: initial_share within 0..=1 and ramp_s >= 0 are needed".into());
        }
        if !(0.0..=1.0).contains(&self.churn.leave_per_min) {
            return Err("churn.leave_per_min must be within 0..=1".into());
        }
        if self.tracker.neighbours == 0 || self.tracker.cell_size == 0 {
            return Err("tracker: neighbours and cell_size must be at least 1".into());
        }
        if !(self.tracker.coverage_target > 0.0 && self.tracker.coverage_target <= 1.0) {
            return Err("tracker.coverage_target must be above 0 and at most 1".into());
        }
        if !(4..=1024).contains(&self.stream.block_kib) {
            return Err("stream.block_kib must be within 4..=1024".into());
        }
        if usize::from(self.tracker.stripes) > swarmcast_proto::tracker::MAX_STRIPES
            || !(self.tracker.stripe_headroom >= 0.1 && self.tracker.stripe_headroom <= 100.0)
        {
            return Err(format!(
                "tracker.stripes must be at most {} and stripe_headroom between 0.1 and 100",
                swarmcast_proto::tracker::MAX_STRIPES
            ));
        }
        if self.tracker.max_first_fetchers < self.tracker.min_first_fetchers {
            return Err("tracker.max_first_fetchers must be at least min_first_fetchers".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let text = "name = \"x\"\nviewers = 10\nduration_s = 60\n\n[network]\nupload_kbps = { dist = \"fixed\", valeu = 3 }\n";
        let e = Scenario::parse(text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        let e = Scenario::parse("name = \"x\"\nviewers = 0\nduration_s = 1\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("viewers must be at least 1"), "{e}");
        let e = Scenario::parse(
            "name = \"x\"\nviewers = 3\nduration_s = 1\nbogus = 1\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 4") && e.contains("bogus"), "{e}");
        for (bad, says) in [
            ("coverage_target = 1.5", "coverage_target must be above 0"),
            ("coverage_target = 0.0", "coverage_target must be above 0"),
            (
                "min_first_fetchers = 5\nmax_first_fetchers = 2",
                "max_first_fetchers must be at least",
            ),
        ] {
            let text = format!("name = \"x\"\nviewers = 3\nduration_s = 1\n[tracker]\n{bad}\n");
            let e = Scenario::parse(&text, "t").unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 4, "{n} scenarios");
    }
}
