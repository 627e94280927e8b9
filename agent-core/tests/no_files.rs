//! A fresh agent with a generated key, in a bureau without a storage directory, leaves no
//! file behind: no key file, no database. The test runs itself as a child process whose
//! working directory, home and temporary directory are one empty directory, and checks
//! that the directory is still empty after the child built agents, exchanged messages,
//! used storage and shut down.

use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context, Message, ReplyError};
use serde::{Deserialize, Serialize};

const CHILD: &str = "AGORA_NO_FILES_CHILD";

#[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Hello(u32);

async fn on_hello(ctx: Context, _from: Address, Hello(n): Hello) -> Result<(), ReplyError> {
    ctx.storage().unwrap().set("last", &n).unwrap();
    ctx.storage().unwrap().flush().await.unwrap();
    ctx.reply(Hello(n + 1)).await
}

async fn child() {
    let bureau = Bureau::new().unwrap();
    let mut carol = Agent::builder("carol").build().unwrap();
    carol.on_message(on_hello);
    let carol = bureau.add(carol).unwrap();
    let dave = bureau.add(Agent::builder("dave").build().unwrap()).unwrap();
    let Hello(n) = bureau.context(dave).unwrap().request(carol, Hello(1), Duration::from_secs(5)).await.unwrap();
    assert_eq!(n, 2);
    bureau.shutdown().await.unwrap();
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        }
        found.push(path);
    }
    found
}

#[tokio::test]
async fn a_fresh_agent_leaves_no_file_behind() {
    if std::env::var(CHILD).is_ok() {
        child().await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_fresh_agent_leaves_no_file_behind", "--nocapture"])
        .env(CHILD, "1")
        .env("HOME", dir.path())
        .env("TMPDIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed");
    assert_eq!(files_under(dir.path()), Vec::<std::path::PathBuf>::new(), "files left behind");
}
