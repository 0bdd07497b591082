//! Operations through the real binary: config reload on SIGHUP, graceful
//! binary upgrade with an in-flight stream.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

async fn status_for(gw_url: &str, model: &str) -> u16 {
    client()
        .post(format!("{gw_url}/v1/chat/completions"))
        .json(&json!({"model": model, "messages": []}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn sighup_reloads_the_config_and_rejects_a_bad_one() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let providers = format!(
        "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
        up.base_url()
    );
    let gw = Gateway::start(&format!(
        "{providers}models:\n  - {{ name: one, upstreams: [{{ provider: p, model: m }}] }}\n"
    ))
    .await;
    assert_eq!(status_for(&gw.url(), "one").await, 200);
    assert_eq!(status_for(&gw.url(), "two").await, 404);

    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let with_two = text.replace(
        "- { name: one,",
        "- { name: two, upstreams: [{ provider: p, model: m }] }\n  - { name: one,",
    );
    std::fs::write(&gw.config_path, &with_two).unwrap();
    signal(gw.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_for(&gw.url(), "two").await != 200 {
        assert!(
            Instant::now() < deadline,
            "reload did not happen; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file is rejected with a logged error; the running config stays.
    std::fs::write(
        &gw.config_path,
        with_two.replace("kind: openai", "kind: nonsense"),
    )
    .unwrap();
    signal(gw.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("config reload rejected") {
        assert!(
            Instant::now() < deadline,
            "no rejection logged:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.log().contains("providers[0].kind"), "{}", gw.log());
    assert_eq!(status_for(&gw.url(), "two").await, 200);
    assert_eq!(status_for(&gw.url(), "one").await, 200);
}

#[tokio::test]
async fn graceful_upgrade_hands_over_sockets_and_drains_streams() {
    // A slow stream: 10 events, 150 ms apart.
    let words: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let up = MockProvider::always(
        Reply::sse(&openai_stream("m", &refs)).pace(Duration::from_millis(150)),
    )
    .await;
    let old = Gateway::start(&format!(
        "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
        up.base_url()
    ))
    .await;
    let url = old.url();
    let stream = tokio::spawn({
        let url = url.clone();
        async move {
            let r = client()
                .post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "p/m", "stream": true, "messages": []}))
                .send()
                .await
                .expect("stream request");
            r.text().await.expect("stream body")
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new process waits for the sockets; SIGQUIT makes the old one hand them over.
    let log = std::fs::File::create(old.config_path.with_file_name("new.log")).unwrap();
    let mut new = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-u")
        .arg("-c")
        .arg(&old.config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the new apiproxy");
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(old.pid(), "QUIT");

    // The stream on the old process completes in full.
    let body = tokio::time::timeout(Duration::from_secs(15), stream)
        .await
        .expect("stream finished")
        .expect("stream task");
    let text: String = sse_data(&body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, words.concat(), "{body}");

    // New requests are served (by the new process) on the same port.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = client()
            .get(format!("{url}/health"))
            .send()
            .await
            .map(|r| r.status() == 200);
        if matches!(ok, Ok(true)) {
            break;
        }
        assert!(Instant::now() < deadline, "nobody serves after the upgrade");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = new.kill();
    let _ = new.wait();
}
