//! The dashboard and the portal in a real browser: Debian's headless Chromium driven through
//! chromedriver (fantoccini), against a real server with hosts on the real Docker engine. An
//! administrator signs in, creates a user and a host and watches it reach `running` without
//! reloading; the user signs in to the portal, sees only their host, copies its access
//! command and changes their password. Screenshots of every page are saved under
//! `target/screenshots/` for review. The refusals (another origin's form, a wrong CSRF token,
//! another user's host) are checked over plain HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::browser::{browser, fill, shot, sign_in, wait_text};
use common::docker::{Cleanup, ensure_image};
use common::{Backend, RecordingRuntime, Server};
use fantoccini::Locator;
use serde_json::json;
use sluice::runtime::HostRuntime;
use sluice::runtime::docker::DockerRuntime;

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_and_a_user_work_through_the_pages_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(Backend::Sqlite, tmp.path()).await;
    let mut settings = common::settings(tmp.path(), url);
    settings.public_host = None;
    // The browser terminal is recorded, keystrokes included.
    settings.ssh.record_sessions = true;
    settings.ssh.record_input = true;
    let runtime = Arc::new(DockerRuntime::new(tmp.path()).unwrap());
    ensure_image(&runtime).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let dir = tmp.path().to_path_buf();
    let dynamic: Arc<dyn HostRuntime> = runtime.clone();
    let s = Server::start_on(
        settings,
        dynamic,
        RecordingRuntime::default(),
        dir,
        Some(tmp),
    )
    .await;
    let base = s.base.clone();
    let (_driver, c) = browser().await;

    // Not signed in: every page leads to the sign-in page.
    c.goto(&format!("{base}/admin/hosts")).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();
    shot(&c, "login").await;
    sign_in(&c, &base, "admin", "wrong-password").await;
    let err = wait_text(&c, "p.error", |t| !t.is_empty(), Duration::from_secs(10)).await;
    assert!(err.contains("invalid"), "{err}");

    sign_in(&c, &base, "admin", common::ADMIN_PASSWORD).await;
    wait_text(&c, "h1", |t| t == "Overview", Duration::from_secs(10)).await;
    shot(&c, "admin-overview").await;

    // A user, with the password shown once; a bad name is refused next to its field.
    c.goto(&format!("{base}/admin/users")).await.unwrap();
    shot(&c, "admin-users-empty").await;
    fill(&c, "#username", "X").await;
    c.find(Locator::Css("form.inline button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let field = wait_text(
        &c,
        ".field-error",
        |t| !t.is_empty(),
        Duration::from_secs(10),
    )
    .await;
    assert!(field.contains("3 to 32"), "{field}");
    fill(&c, "#username", "webby").await;
    c.find(Locator::Css("form.inline button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let password = wait_text(
        &c,
        "#new-password",
        |t| t.len() == 20,
        Duration::from_secs(10),
    )
    .await;
    shot(&c, "admin-users-created").await;

    // A host: created, then followed to `running` on the same page, without a reload.
    c.goto(&format!("{base}/admin/hosts")).await.unwrap();
    c.find(Locator::Css("form.inline button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        &c,
        "#new-password",
        |t| t.len() == 20,
        Duration::from_secs(10),
    )
    .await;
    c.execute("window.__sameDocument = true;", vec![])
        .await
        .unwrap();
    let status = wait_text(
        &c,
        "#hosts [data-host-id]",
        |t| t == "running",
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(status, "running");
    let same = c
        .execute("return window.__sameDocument === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(true), "the page was reloaded");
    shot(&c, "admin-hosts").await;
    let short = c
        .find(Locator::Css("#hosts td code"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Hosts by status: none is stopped; the running one is listed under running.
    c.goto(&format!("{base}/admin/hosts?status=stopped"))
        .await
        .unwrap();
    let none = wait_text(&c, "p.empty", |t| !t.is_empty(), Duration::from_secs(10)).await;
    assert_eq!(none, "No host is stopped.");
    // An unknown status is refused with the field named (the page has no form to mark).
    c.goto(&format!("{base}/admin/hosts?status=asleep"))
        .await
        .unwrap();
    let why = wait_text(&c, "p.error", |t| !t.is_empty(), Duration::from_secs(10)).await;
    assert!(why.starts_with("status: must be one of"), "{why}");
    c.goto(&format!("{base}/admin/hosts?status=running"))
        .await
        .unwrap();
    let listed = wait_text(
        &c,
        "#hosts",
        |t| t.contains(&short),
        Duration::from_secs(10),
    )
    .await;
    assert!(listed.contains("running"), "{listed}");

    // The host's page: its container output and its access commands.
    c.find(Locator::LinkText("details"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "h1", |t| t.contains(&short), Duration::from_secs(10)).await;
    let logs = c
        .find(Locator::Css("pre.logs"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!logs.is_empty(), "the container's output is shown");
    shot(&c, "admin-host").await;

    // The terminal: a command typed in the browser runs in the host, the session is listed
    // among the live ones, and ending it there closes the terminal with the reason.
    c.find(Locator::LinkText("Open a terminal"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("body[data-terminal=open]"))
        .await
        .unwrap();
    let transcript = || async {
        c.execute("return window.sluiceTranscript || '';", vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !transcript().await.contains('$') {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no prompt: {}",
            transcript().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.find(Locator::Css(".xterm-helper-textarea"))
        .await
        .unwrap()
        .send_keys("echo hello-$((6*7)) from $(whoami)\u{E007}")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !transcript().await.contains("hello-42 from webby") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no output: {}",
            transcript().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(&c, "terminal").await;
    let terminal_window = c.window().await.unwrap();
    let other = c.new_window(true).await.unwrap();
    c.switch_to_window(other.handle).await.unwrap();
    c.goto(&format!("{base}/admin/sessions")).await.unwrap();
    let listed = wait_text(
        &c,
        "#sessions",
        |t| t.contains("browser"),
        Duration::from_secs(10),
    )
    .await;
    assert!(listed.contains("webby"), "{listed}");
    shot(&c, "admin-sessions-live").await;
    c.find(Locator::Css("#sessions button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        &c,
        "p.empty",
        |t| t.contains("Nobody"),
        Duration::from_secs(10),
    )
    .await;
    c.close_window().await.unwrap();
    c.switch_to_window(terminal_window).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !transcript().await.contains("ended by an administrator") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ended: {}",
            transcript().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("body[data-terminal=closed]"))
        .await
        .unwrap();
    // Its recording: the output, and (input on) what was typed.
    let admin_token = s.admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let (_, v) = s.get("/v1/admin/recordings", &admin_token).await;
        if v["data"][0]["status"] == "stored" {
            break v["data"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "not stored: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rec["kind"], "browser", "{rec}");
    assert_eq!(rec["with_input"], true, "{rec}");
    let cast = s
        .http
        .get(format!(
            "{base}/v1/admin/recordings/{}/cast",
            rec["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        cast.contains(r#""o","#) && cast.contains("hello-42 from webby"),
        "{cast}"
    );
    assert!(cast.contains(r#""i","#), "no input events: {cast}");
    // The dashboard lists it and plays it back in the browser, output and all, and offers the
    // same cast as a download.
    c.goto(&format!("{base}/admin/recordings")).await.unwrap();
    let listed = wait_text(
        &c,
        "#recordings",
        |t| t.contains("webby"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        listed.contains("browser") && listed.contains("recorded"),
        "{listed}"
    );
    shot(&c, "admin-recordings").await;
    // From the host's page, its recordings: the same one, filtered by the host.
    c.goto(&format!(
        "{base}/admin/hosts/{}",
        rec["host_id"].as_str().unwrap()
    ))
    .await
    .unwrap();
    c.find(Locator::LinkText("its recordings"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let filtered = wait_text(
        &c,
        "#recordings",
        |t| t.contains("webby"),
        Duration::from_secs(10),
    )
    .await;
    assert!(filtered.contains(&short), "{filtered}");
    assert_eq!(
        c.find(Locator::Css("#host"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(short.as_str())
    );
    c.find(Locator::LinkText("play"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("body[data-player=ended]"))
        .await
        .unwrap();
    let played = transcript().await;
    assert!(played.contains("hello-42 from webby"), "{played}");
    // The position slider: back to the start shows the terminal as it was then, paused; to
    // the end, all of it again.
    let seek = |to: &'static str| {
        let c = &c;
        async move {
            c.execute(
                &format!(
                    "const s = document.getElementById('seek'); s.value = {to}; \
                     s.dispatchEvent(new Event('input')); return document.body.dataset.player;"
                ),
                vec![],
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(seek("0").await, json!("paused"));
    let at_start = transcript().await;
    assert!(!at_start.contains("hello-42"), "{at_start}");
    assert_eq!(seek("s.max").await, json!("ended"));
    let at_end = transcript().await;
    assert!(at_end.contains("hello-42 from webby"), "{at_end}");
    shot(&c, "admin-recording-player").await;
    let cast_page = format!("/admin/recordings/{}/cast", rec["id"].as_str().unwrap());
    let got = c
        .execute(
            "const x = new XMLHttpRequest(); x.open('GET', arguments[0], false); x.send(); \
             return [x.status, x.getResponseHeader('content-disposition'), x.responseText];",
            vec![json!(cast_page)],
        )
        .await
        .unwrap();
    assert_eq!(got[0], 200, "{got}");
    let disposition = got[1].as_str().unwrap_or_default();
    assert!(
        disposition.starts_with("attachment; filename=\"") && disposition.ends_with(".cast\""),
        "{disposition}"
    );
    assert_eq!(
        got[2].as_str().unwrap(),
        cast,
        "the download is the API's cast"
    );
    // Without a session it leads to the sign-in page, not to the cast.
    let anonymous = s
        .http
        .get(format!("{base}{cast_page}"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.url().path(), "/login");
    assert!(!anonymous.text().await.unwrap().contains("hello-42"));
    let (_, ev) = s
        .get(
            "/v1/admin/events?action=ssh.browser_session_opened",
            &admin_token,
        )
        .await;
    assert_eq!(ev["data"][0]["actor"], "admin:admin", "{ev}");
    assert!(ev["data"][0]["source_ip"].is_string(), "{ev}");

    // An egress, through its form: a wrong field is named next to it, then it is added.
    c.goto(&format!("{base}/admin/egress")).await.unwrap();
    shot(&c, "admin-egress-empty").await;
    fill(&c, "#label", "lab-wg").await;
    fill(&c, "#ip_address", "203.0.113.10").await;
    fill(&c, "#wg_endpoint", "198.51.100.2:51820").await;
    fill(&c, "#wg_public_key", "not-a-key").await;
    fill(&c, "#wg_peer_address", "10.64.0.2/32").await;
    fill(&c, "#wg_dns_server", "10.64.0.1").await;
    c.find(Locator::Css("form.egress button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let field = wait_text(
        &c,
        ".field-error",
        |t| !t.is_empty(),
        Duration::from_secs(10),
    )
    .await;
    assert!(field.contains("base64") || field.contains("key"), "{field}");
    fill(
        &c,
        "#wg_public_key",
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
    )
    .await;
    c.find(Locator::Css("form.egress button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "table a", |t| t == "lab-wg", Duration::from_secs(10)).await;
    // The proxy fieldset is hidden for WireGuard and shown for a proxy.
    let hidden = c
        .execute(
            "return document.querySelector(\"fieldset[data-kind=proxy]\").hidden;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(hidden, json!(true));
    shot(&c, "admin-egress").await;

    // Bound to the host from the hosts page; then unbound again.
    c.goto(&format!("{base}/admin/hosts")).await.unwrap();
    c.find(Locator::Css("form.bind button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        &c,
        "#hosts td:nth-child(4)",
        |t| t.contains("lab-wg"),
        Duration::from_secs(10),
    )
    .await;
    shot(&c, "admin-hosts-bound").await;
    let (_, bound) = s.get("/v1/admin/hosts?per_page=1", &s.admin().await).await;
    assert!(bound["data"][0]["binding_id"].is_string(), "{bound}");
    // A bound egress cannot be deleted, and the page says why.
    c.goto(&format!("{base}/admin/egress")).await.unwrap();
    c.find(Locator::Css("td.actions button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let why = wait_text(&c, "p.error", |t| !t.is_empty(), Duration::from_secs(10)).await;
    assert!(why.contains("unbind") && why.contains(&short), "{why}");

    // The event feed grows without a reload; a token is made and shown once.
    c.goto(&format!("{base}/admin/events")).await.unwrap();
    // The page marks its body once its event stream is open.
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("body[data-live=on]"))
        .await
        .unwrap();
    let api_admin = s.admin().await;
    let (_, made) = s
        .post(
            "/v1/admin/users",
            &api_admin,
            json!({"username": "seen-live"}),
        )
        .await;
    // The new user's id can only reach the page, loaded before it existed, as a live row.
    let new_id = made["data"]["id"].as_str().unwrap().to_string();
    wait_text(
        &c,
        "#events tbody",
        |t| t.contains(&new_id),
        Duration::from_secs(10),
    )
    .await;
    let same = c
        .execute("return document.body.dataset.live === 'on';", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(true), "the event page was not reloaded");
    shot(&c, "admin-events").await;
    // Filtered by a user name, as an operator types it: that account's events only, and the
    // live rows follow the same account.
    c.goto(&format!("{base}/admin/events?user=seen-live"))
        .await
        .unwrap();
    let rows = wait_text(
        &c,
        "#events tbody",
        |t| t.contains("user.created"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        rows.contains(&new_id) && !rows.contains("host.created"),
        "{rows}"
    );
    let followed = c
        .execute(
            "return document.getElementById('events').dataset.user;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(followed, json!(new_id));
    c.goto(&format!("{base}/admin/tokens")).await.unwrap();
    fill(&c, "#name", "from-the-page").await;
    c.find(Locator::Css("input[name='ability.host:read']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/admin/tokens'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let token = wait_text(
        &c,
        "#new-token",
        |t| t.starts_with("sl_"),
        Duration::from_secs(10),
    )
    .await;
    shot(&c, "admin-tokens").await;
    let (st, _) = s.get("/v1/admin/hosts", &token).await;
    assert_eq!(st, reqwest::StatusCode::OK, "the page's token works");
    let (st, _) = s.get("/v1/admin/users", &token).await;
    assert_eq!(
        st,
        reqwest::StatusCode::FORBIDDEN,
        "and holds only what was ticked"
    );
    for page in ["sessions", "tasks"] {
        c.goto(&format!("{base}/admin/{page}")).await.unwrap();
        wait_text(&c, "h1", |t| !t.is_empty(), Duration::from_secs(10)).await;
        shot(&c, &format!("admin-{page}")).await;
    }

    // Sign out; the session cookie no longer opens anything.
    c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();

    // The user: only their host, its command copied, their password changed.
    sign_in(&c, &base, "webby", &password).await;
    wait_text(&c, "h1", |t| t == "My hosts", Duration::from_secs(10)).await;
    let page = c.source().await.unwrap();
    assert!(page.contains(&short), "the user's host is listed");
    assert!(page.contains(&format!("/entry/{short} | bash")), "{page}");
    assert!(!page.contains("/admin/hosts"), "no admin links for a user");
    c.find(Locator::Css("button.copy"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "button.copy", |t| t == "Copied", Duration::from_secs(5)).await;
    shot(&c, "portal").await;
    c.find(Locator::Css("form[action='/portal/keys/generate'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#private-key"))
        .await
        .unwrap();
    shot(&c, "portal-key").await;
    c.goto(&format!("{base}/admin")).await.unwrap();
    let denied = c.source().await.unwrap();
    assert!(denied.contains("administrators"), "{denied}");
    c.goto(&format!("{base}/portal")).await.unwrap();
    fill(&c, "#old_password", "not-my-password").await;
    fill(&c, "#new_password", "a-new-password-1").await;
    c.find(Locator::Css("form[action='/portal/password'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let field = wait_text(
        &c,
        ".field-error",
        |t| !t.is_empty(),
        Duration::from_secs(10),
    )
    .await;
    assert!(field.contains("current password"), "{field}");
    fill(&c, "#old_password", &password).await;
    fill(&c, "#new_password", "a-new-password-1").await;
    c.find(Locator::Css("form[action='/portal/password'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();
    sign_in(&c, &base, "webby", "a-new-password-1").await;
    wait_text(&c, "h1", |t| t == "My hosts", Duration::from_secs(10)).await;
    c.close().await.unwrap();
}

/// The browser protections over plain HTTP: the session cookie's attributes, the security
/// headers, a form from another origin or with a wrong token, another site's event stream, and
/// another user's host.
#[tokio::test(flavor = "multi_thread")]
async fn forms_from_elsewhere_and_other_users_hosts_are_refused() {
    let s = Server::start(Backend::Sqlite).await;
    let admin = s.admin().await;
    let (uid, _) = s.user(&admin, "owner").await;
    let theirs = s.host(&admin, &uid, json!({})).await;
    s.user(&admin, "other").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let origin = s.base.clone();
    let login = |user: &'static str, pw: &'static str, from: String| {
        http.post(format!("{}/login", s.base))
            .header("origin", from)
            .form(&[("username", user), ("password", pw)])
            .send()
    };
    // Another site's sign-in form is refused before any password is checked.
    let r = login("admin", common::ADMIN_PASSWORD, "http://evil.test".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = login("admin", common::ADMIN_PASSWORD, origin.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{}/admin/users", s.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let post = |from: String, token: String, name: &'static str| {
        http.post(format!("{}/admin/users", s.base))
            .header("cookie", &session)
            .header("origin", from)
            .form(&[("csrf", token.as_str()), ("username", name)])
            .send()
    };
    assert_eq!(
        post("http://evil.test".into(), csrf.clone(), "evil")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(origin.clone(), "wrong".into(), "evil")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(origin.clone(), csrf.clone(), "legit")
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, users) = s.get("/v1/admin/users", &admin).await;
    let names: Vec<&str> = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"legit") && !names.contains(&"evil"),
        "{names:?}"
    );
    // Another site's terminal socket, even with the session cookie.
    let r = http
        .get(format!(
            "{}/web/hosts/{}/terminal/socket",
            s.base,
            theirs["id"].as_str().unwrap()
        ))
        .header("cookie", &session)
        .header("origin", "http://evil.test")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Another site's event stream.
    let r = http
        .get(format!("{}/web/events", s.base))
        .header("cookie", &session)
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A token in a cookie is not a session.
    let (_, t) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "c", "abilities": ["*"]}),
        )
        .await;
    let r = http
        .get(format!("{}/admin", s.base))
        .header(
            "cookie",
            format!("sluice_session={}", t["data"]["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a token in a cookie is sent to sign in");
    // Another user's host does not exist for them, in the page's status route too.
    let r = login("other", "other-password", origin.clone())
        .await
        .unwrap();
    let other = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = http
        .get(format!(
            "{}/web/hosts/{}",
            s.base,
            theirs["id"].as_str().unwrap()
        ))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let portal = http
        .get(format!("{}/portal", s.base))
        .header("cookie", &other)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !portal.contains(theirs["short_id"].as_str().unwrap()),
        "{portal}"
    );
    assert!(portal.contains("no host yet"), "{portal}");
    // Nor can they act on it through the portal's forms.
    let csrf = portal
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = http
        .post(format!(
            "{}/portal/hosts/{}/rebuild",
            s.base,
            theirs["id"].as_str().unwrap()
        ))
        .header("cookie", &other)
        .header("origin", origin.clone())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Nor open a terminal into it.
    let r = http
        .get(format!(
            "{}/web/hosts/{}/terminal",
            s.base,
            theirs["id"].as_str().unwrap()
        ))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
