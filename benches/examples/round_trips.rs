//! One in-process ping-pong, Agora's or kameo's, alone in its process: for profilers.
//!
//! `cargo run --release -p agora-benches --example round_trips -- agora 100000`, or under
//! `valgrind --tool=callgrind`: run it with two counts and subtract, and the difference
//! divided by the difference of counts is the instructions per round trip, free of the
//! machine's load.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(system), Some(count)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: round_trips agora|kameo COUNT [current_thread|multi_thread]");
        return ExitCode::FAILURE;
    };
    let mut runtime = match args.next().as_deref() {
        Some("multi_thread") => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let figures = runtime.block_on(async {
        match system.as_str() {
            "kameo" => agora_benches::kameo_peer::ping_pong(count, 1).await,
            _ => agora_benches::ping_pong(count, 1).await,
        }
    });
    match figures {
        Ok(figures) => {
            eprintln!("{system}: {:.0} round trips/s", figures.per_second());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{system}: {err}");
            ExitCode::FAILURE
        }
    }
}
