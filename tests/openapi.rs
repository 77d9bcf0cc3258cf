//! The served OpenAPI document judged by an outside tool: schemathesis (from PyPI) generates
//! requests for every operation from /openapi.json and checks, against a real server, that
//! nothing answers a server error and that every status answered is one the document lists
//! for that operation. Bounded in time.

mod common;

use std::process::Command;

use common::{Backend, Server};

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_undocumented_status() {
    let s = Server::start(Backend::Sqlite).await;
    let admin = s.admin().await;
    // Some ids to find: a user, a host, an egress.
    let (uid, _) = s.user(&admin, "fuzzed").await;
    s.host(&admin, &uid, serde_json::json!({})).await;
    let (st, v) = s
        .post("/v1/admin/egress-ips", &admin, common::wg_egress("fuzz-wg"))
        .await;
    assert!(st.is_success(), "{v}");

    let url = format!("{}/openapi.json", s.base);
    let auth = format!("Authorization: Bearer {admin}");
    // Its cache goes to a directory of its own, not into the checkout.
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .current_dir(&cwd_path)
            .args(["run", &url, "-H", &auth])
            .args(["--checks", "not_a_server_error,status_code_conformance"])
            .args(["--max-examples", "10", "--max-time", "75"])
            // Each request is bounded. The event stream never ends by design (its own test
            // reads it), and a logout would end the admin login the run uses (its own test
            // covers it).
            .args(["--request-timeout", "10"])
            .args(["--exclude-path", "/v1/admin/events/stream"])
            .args(["--exclude-path", "/v1/auth/logout"])
            .env("NO_COLOR", "1")
            .output()
            .expect("schemathesis is installed (scripts/install-deps.sh)")
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    // It did test: every operation was selected and cases were generated.
    assert!(report.contains("passed"), "{report}");
}
