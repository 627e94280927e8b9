//! A handler can take over its answer (`Context::defer_reply`) and send it after it
//! returns, while the agent goes on handling other messages; an answer dropped unsent
//! tells the requester there is no reply.

use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context, Message, ReplyError, RequestError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Build(u32);

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Built(u32);

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ping;

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Pong;

fn builder() -> Agent {
    let mut agent = Agent::builder("builder").build().unwrap();
    agent.on_message(|ctx: Context, _from: Address, Build(n): Build| async move {
        let reply = ctx.defer_reply()?;
        assert!(matches!(ctx.reply(Built(0)).await, Err(ReplyError::AlreadyAnswered)), "the answer was taken over");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            match n {
                0 => drop(reply),
                n => reply.send(Built(n)).await.unwrap(),
            }
        });
        Ok::<_, ReplyError>(())
    });
    agent.on_message(|ctx: Context, _from: Address, _: Ping| async move { ctx.reply(Pong).await });
    agent
}

#[tokio::test(start_paused = true)]
async fn a_deferred_answer_comes_after_the_handler_returned_and_the_agent_keeps_serving() {
    let bureau = Bureau::new().unwrap();
    let builder = bureau.add(builder()).unwrap();
    let client = bureau.add(Agent::builder("client").build().unwrap()).unwrap();
    let ctx = bureau.context(client).unwrap();
    let started = tokio::time::Instant::now();
    let build = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.request::<Build, Built>(builder, Build(7), Duration::from_secs(7200)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The builder answers a ping while the build is under way.
    let _: Pong = ctx.request(builder, Ping, Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    let Built(n) = build.await.unwrap().unwrap();
    assert_eq!(n, 7);
    assert!(started.elapsed() >= Duration::from_secs(3600), "the answer came when the work was done");

    let dropped = ctx.request::<Build, Built>(builder, Build(0), Duration::from_secs(7200)).await;
    assert!(matches!(dropped, Err(RequestError::NoReply { .. })), "{dropped:?}");
    assert!(started.elapsed() < Duration::from_secs(3 * 3600), "told at once when dropped, not at the timeout");
    bureau.shutdown().await.unwrap();
}
