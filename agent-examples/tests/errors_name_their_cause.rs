//! A node that cannot start says why on stderr: the address it could not bind or the data
//! directory it could not use, and the operating system's cause (issue 16).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to give up.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `binary` with `args`, expecting it to fail within [`LIMIT`]; returns its stderr.
fn stderr_of_failed_run(binary: &str, args: &[&str]) -> String {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().unwrap_or_default();
            panic!("{binary} {args:?} still ran after {LIMIT:?}; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader.join().expect("stderr is read");
    assert!(!status.success(), "{binary} {args:?} succeeded; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{binary} {args:?} panicked: {stderr}");
    for line in stderr.lines() {
        assert!(!line.trim_end().ends_with(':'), "a message ends before its cause: {line:?}");
    }
    stderr
}

/// Checks that `stderr` names `what` and an operating system cause containing `cause`.
fn assert_names(stderr: &str, what: &str, cause: &str) {
    assert!(stderr.contains(what), "stderr does not name {what}: {stderr}");
    assert!(stderr.to_lowercase().contains(cause), "stderr does not name the cause ({cause}): {stderr}");
    assert!(stderr.contains("os error"), "stderr does not name the operating system's error: {stderr}");
}

/// A port already bound on loopback, held until the listener is dropped.
fn taken_port() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    (listener, format!("/ip4/127.0.0.1/tcp/{port}"))
}

/// A data directory path that no one can create: it lies below a regular file.
fn unusable_dir(tmp: &Path) -> String {
    let file = tmp.join("a-file");
    std::fs::write(&file, b"not a directory").expect("a file in the temporary directory");
    file.join("data").to_str().expect("a UTF-8 path").to_owned()
}

#[test]
fn echo_node_names_the_address_it_cannot_bind_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("missing").join("data");
    let (_held, address) = taken_port();
    let stderr = stderr_of_failed_run(
        env!("CARGO_BIN_EXE_echo-node"),
        &["--listen", &address, "--data", data.to_str().unwrap()],
    );
    assert_names(&stderr, &address, "in use");
    assert!(data.is_dir(), "a missing data directory is created");
}

#[test]
fn echo_node_names_the_data_directory_it_cannot_use_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unusable_dir(tmp.path());
    let stderr =
        stderr_of_failed_run(env!("CARGO_BIN_EXE_echo-node"), &["--listen", "/ip4/127.0.0.1/tcp/0", "--data", &data]);
    assert_names(&stderr, &data, "not a directory");
}

#[test]
fn ledger_node_names_the_address_it_cannot_bind_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("missing").join("ledger");
    let (_held, address) = taken_port();
    let stderr = stderr_of_failed_run(
        env!("CARGO_BIN_EXE_ledger-node"),
        &["--listen", &address, "--data-dir", data.to_str().unwrap()],
    );
    assert_names(&stderr, &address, "in use");
    assert!(data.is_dir(), "a missing data directory is created");
}

#[test]
fn ledger_node_names_the_data_directory_it_cannot_use_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unusable_dir(tmp.path());
    let stderr = stderr_of_failed_run(
        env!("CARGO_BIN_EXE_ledger-node"),
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir", &data],
    );
    assert_names(&stderr, &data, "not a directory");
}

#[test]
fn echo_node_names_the_metrics_address_it_cannot_bind_and_why() {
    let (held, _) = taken_port();
    let metrics = held.local_addr().expect("a bound address").to_string();
    let stderr = stderr_of_failed_run(
        env!("CARGO_BIN_EXE_echo-node"),
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--metrics-addr", &metrics],
    );
    assert_names(&stderr, &format!("cannot serve metrics on {metrics}"), "in use");
}

#[test]
fn a_demo_names_the_metrics_address_it_cannot_bind_and_why() {
    let (held, _) = taken_port();
    let metrics = held.local_addr().expect("a bound address").to_string();
    let stderr = stderr_of_failed_run(env!("CARGO_BIN_EXE_flights"), &["--json", "--metrics-addr", &metrics]);
    assert_names(&stderr, &format!("cannot serve metrics on {metrics}"), "in use");
}
