//! End-to-end tests live in `tests/`: they start the workspace's real
//! binaries (`cargo test --workspace` builds them into the same target
//! directory as the test) and drive them over loopback.

use std::path::PathBuf;

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the README's test command (cargo test --workspace builds every binary)",
        path.display()
    );
    path
}
