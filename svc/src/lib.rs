//! # swarmcast-svc
//!
//! The plumbing every Swarmcast service shares, so each binary's `main` stays
//! a few lines: config files ([`config_file_args`]), tracing
//! ([`init_tracing`]), the Prometheus recorder ([`metrics_handle`]), the
//! HTTP/1.1 + HTTP/2 accept loop with optional rustls TLS and graceful
//! shutdown ([`serve`]), and signal handling ([`cancel_on_signals`]).
//!
//! **Invariant:** this crate knows nothing of streams, segments or peers.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// Errors of service start-up.
#[derive(Debug, thiserror::Error)]
pub enum SvcError {
    /// A config file could not be read or parsed.
    #[error("config file {path}: {msg}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Turns a TOML config file into command-line arguments, placed before the
/// real ones so that flags given on the command line win.
///
/// Keys are the long flag names (`listen = "127.0.0.1:8080"`,
/// `test-source = true`); an unknown key is an error from the argument
/// parser, like an unknown flag. Arrays repeat the flag.
pub fn config_file_args(path: &Path) -> Result<Vec<OsString>, SvcError> {
    let err = |msg: String| SvcError::ConfigFile {
        path: path.to_owned(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    let mut args = Vec::new();
    for (key, value) in table {
        let flag = format!("--{key}");
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => args.push(flag.clone().into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => {
                    args.push(flag.clone().into());
                    args.push(s.into());
                }
                toml::Value::Integer(i) => {
                    args.push(flag.clone().into());
                    args.push(i.to_string().into());
                }
                toml::Value::Float(f) => {
                    args.push(flag.clone().into());
                    args.push(f.to_string().into());
                }
                other => return Err(err(format!("{key}: unsupported value {other}"))),
            }
        }
    }
    Ok(args)
}

/// Command-line arguments with those of `--config FILE` (if given) spliced
/// in right after the program name (and subcommand, if `subcommand` is set).
pub fn args_with_config_file(subcommand: bool) -> Result<Vec<OsString>, SvcError> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut path = None;
    for (i, a) in args.iter().enumerate() {
        let s = a.to_string_lossy();
        if let Some(p) = s.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        } else if s == "--config" {
            path = args.get(i + 1).map(PathBuf::from);
        }
    }
    let path = path.or_else(|| std::env::var_os("SWARMCAST_CONFIG").map(PathBuf::from));
    let Some(path) = path else {
        return Ok(args);
    };
    let extra = config_file_args(&path)?;
    let at = if subcommand { 2 } else { 1 }.min(args.len());
    let mut out = args[..at].to_vec();
    out.extend(extra);
    out.extend_from_slice(&args[at..]);
    Ok(out)
}

/// Starts the tracing subscriber: `RUST_LOG` or `SWARMCAST_LOG` filters
/// (default `info`), logs go to stderr so stdout stays for the
/// `listening on` line.
pub fn init_tracing() {
    // The webrtc stack logs routine ICE/DTLS chatter at warn; keep it to
    // errors unless asked for.
    let filter = std::env::var("SWARMCAST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| {
            "info,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error".into()
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Buckets of every `*_seconds` histogram.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
    10.0,
];

/// The process-wide Prometheus recorder (installed on first call).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Every `*_seconds` histogram gets the same buckets (rendered as a
            // Prometheus histogram, summed across processes by a scraper).
            let builder = match PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "histogram buckets refused");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness);
            // then this handle renders only what it records, which is nothing.
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Raises this process's soft limit on open files to its hard limit (a
/// tracker or load generator holds one descriptor per peer). Returns the
/// limit now in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot raise the open-file limit");
            0
        }
    }
}

/// Parses a service's config (flags, `--config FILE`, environment) with
/// clap, or exits with clap's message (status 2).
pub fn parse_config<C: clap::Parser>(program: &str) -> C {
    match args_with_config_file(false) {
        Ok(args) => C::parse_from(args),
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(2);
        }
    }
}

/// Starts tracing, builds the tokio runtime, cancels on SIGINT/SIGTERM and
/// runs `service` to completion: what every service's `main` does after
/// parsing its config. Errors are printed as `program: error`.
pub fn run_service<F, Fut, E>(program: &str, service: F) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        match service(shutdown).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{program}: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "cannot watch SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("shutdown signal received");
        token.cancel();
    });
}

/// Loads a PEM certificate chain and private key into a rustls server
/// config that offers HTTP/2 and HTTP/1.1.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, SvcError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| SvcError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| SvcError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(SvcError::Tls(format!("{}: no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| SvcError::Tls(format!("{}: {e}", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SvcError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| SvcError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds `addr` and prints `listening on http(s)://ADDR` on stdout (the
/// line scripts and tests read to find a port-0 service).
pub async fn bind(addr: SocketAddr, tls: bool) -> Result<TcpListener, SvcError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SvcError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| SvcError::Bind { addr, source })?;
    let scheme = if tls { "https" } else { "http" };
    println!("listening on {scheme}://{local}");
    info!(%local, tls, "listening");
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets open requests finish for up to `grace`, and returns.
///
/// Connections speak HTTP/1.1 or HTTP/2 (and upgrade to WebSocket), over TLS
/// when `tls` is set. With `connect_info`, every request carries the peer
/// address as `axum::extract::ConnectInfo<SocketAddr>` (one allocation per
/// request; services that do not read it leave it off). Accept errors (out of descriptors...) are logged and
/// retried after a pause; they never end the loop.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: S,
    connect_info: bool,
    shutdown: CancellationToken,
    grace: Duration,
) where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let tls = tls.map(TlsAcceptor::from);
    let tasks = TaskTracker::new();
    let conn_shutdown = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let tls = tls.clone();
        let stop = conn_shutdown.clone();
        tasks.spawn(async move {
            match tls {
                None => serve_conn(TokioIo::new(stream), service, stop, peer, connect_info).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match hs.await {
                        Ok(Ok(s)) => {
                            serve_conn(TokioIo::new(s), service, stop, peer, connect_info).await
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    conn_shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!(
            open = tasks.len(),
            "grace period over, closing remaining connections"
        );
    }
}

async fn serve_conn<I, S>(
    io: I,
    service: S,
    stop: CancellationToken,
    peer: SocketAddr,
    connect_info: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        if connect_info {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        service.clone().oneshot(req)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection ended with an error during shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_become_flags() {
        let dir = std::env::temp_dir().join(format!("swarmcast-svc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:0\"\ntest-source = true\nquiet = false\nwindow-segments = 12\nrenditions = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let args: Vec<String> = config_file_args(&path)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--listen",
                "127.0.0.1:0",
                "--renditions",
                "a",
                "--renditions",
                "b",
                "--test-source",
                "--window-segments",
                "12"
            ]
        );
        std::fs::write(&path, "listen = [").unwrap();
        assert!(matches!(
            config_file_args(&path),
            Err(SvcError::ConfigFile { .. })
        ));
        std::fs::write(&path, "nested = { a = 1 }").unwrap();
        assert!(config_file_args(&path).is_err());
        assert!(config_file_args(&dir.join("missing.toml")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
