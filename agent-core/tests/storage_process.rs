//! Agent storage survives the end of the process that wrote it: the test runs itself as a
//! child process that writes, then reads what the child left behind.

use std::time::Duration;

use agent_core::{Agent, Bureau, Config};

const CHILD: &str = "AGORA_STORAGE_CHILD_DIR";

async fn write_in_child(dir: &str) {
    let bureau = Bureau::with_config(Config::default().with_storage_dir(dir)).unwrap();
    let agent = bureau.add(Agent::builder("keeper").seed("keeper").build().unwrap()).unwrap();
    let storage = bureau.context(agent).unwrap().storage().unwrap();
    storage.set("visits", &41u64).unwrap();
    storage.set("note", "written by another process").unwrap();
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn storage_survives_the_process() {
    if let Ok(dir) = std::env::var(CHILD) {
        write_in_child(&dir).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "storage_survives_the_process", "--nocapture"])
        .env(CHILD, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the writing process failed");
    let bureau = Bureau::with_config(Config::default().with_storage_dir(dir.path())).unwrap();
    let agent = bureau.add(Agent::builder("keeper").seed("keeper").build().unwrap()).unwrap();
    let storage = bureau.context(agent).unwrap().storage().unwrap();
    assert_eq!(storage.get::<u64>("visits").unwrap(), Some(41));
    assert_eq!(storage.get::<String>("note").unwrap().as_deref(), Some("written by another process"));
    tokio::time::timeout(Duration::from_secs(10), bureau.shutdown()).await.unwrap().unwrap();
}
