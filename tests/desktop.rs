//! Desktops in the browser, end to end: a desktop host (the managed desktop image on the real
//! Docker engine) bound to a WireGuard egress in the lab (tests/lab, wireguard-go), opened in
//! Debian's headless Chromium from the dashboard by an administrator and from the portal by
//! its owner, through Sluice's noVNC page, tickets and relay. Firefox inside the desktop is
//! driven with xdotool to the lab's echo page, whose title reports the address the page was
//! fetched from: the egress's exit. Refusals (another user, a reused, expired or forged
//! ticket, another origin) are checked over plain HTTP, and the leak matrix of the egress
//! tests runs on a desktop host while its browser works. Screenshots are saved under
//! `target/screenshots/` for review.

mod common;
mod lab;
mod rig;

use std::time::{Duration, Instant};

use common::browser::{browser, shot, sign_in, wait_text};
use fantoccini::{Client, Locator};
use reqwest::StatusCode;
use rig::{Rig, exec, only_wireguard_leaves, rig_with};
use serde_json::{Value, json};
use sluice::runtime::docker::container_name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a command in the host as its owner, on the desktop's display.
fn as_owner(host: &Value, cmd: &str) -> (bool, String) {
    let user = host["username"].as_str().unwrap();
    common::docker::docker(&[
        "exec",
        "-u",
        user,
        "-e",
        "DISPLAY=:1",
        "-e",
        &format!("HOME=/home/{user}"),
        &container_name(host["short_id"].as_str().unwrap()),
        "sh",
        "-c",
        cmd,
    ])
}

/// Opens Firefox in the desktop at `url` (in the background).
fn open_firefox(host: &Value, url: &str) {
    let user = host["username"].as_str().unwrap();
    let (ok, out) = common::docker::docker(&[
        "exec",
        "-d",
        "-u",
        user,
        "-e",
        "DISPLAY=:1",
        "-e",
        &format!("HOME=/home/{user}"),
        &container_name(host["short_id"].as_str().unwrap()),
        "firefox-esr",
        "--new-window",
        url,
    ]);
    assert!(ok, "firefox did not start: {out}");
}

/// Waits until a window of the desktop is titled with `want`; answers the titles seen.
fn wait_window_title(host: &Value, want: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, titles) = as_owner(
            host,
            "for w in $(xdotool search --name . 2>/dev/null); do xdotool getwindowname $w; done",
        );
        if titles.contains(want) {
            return titles;
        }
        assert!(
            Instant::now() < deadline,
            "no window titled {want:?}; windows: {titles}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Distinct colours among a sample of the noVNC canvas's pixels, and its size.
async fn canvas_colours(c: &Client) -> (u64, u64, u64) {
    let v = c
        .execute(
            "const cv = document.querySelector('#desktop-screen canvas');
             if (!cv || !cv.width) return [0, 0, 0];
             const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
             const seen = new Set();
             for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
             return [cv.width, cv.height, seen.size];",
            vec![],
        )
        .await
        .unwrap();
    (
        v[0].as_u64().unwrap(),
        v[1].as_u64().unwrap(),
        v[2].as_u64().unwrap(),
    )
}

/// Waits until the desktop page is `state` (connected, closed, refused).
async fn wait_desktop(c: &Client, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = c
            .execute(
                "return [document.body.dataset.desktop || '', \
                 (document.getElementById('desktop-status') || {}).textContent || ''];",
                vec![],
            )
            .await
            .unwrap();
        if now[0] == json!(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the desktop page never became {state}: {now}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A WebSocket upgrade by hand: answers the status and, on 101, the first message's payload.
async fn ws_open(base: &str, path: &str, origin: Option<&str>) -> (u16, Vec<u8>) {
    let authority = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(authority).await.unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: binary\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    if status != 101 {
        return (status, text.into_bytes());
    }
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-protocol: binary"),
        "{text}"
    );
    let mut frame = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut frame))
        .await
        .unwrap()
        .unwrap();
    let mut payload = vec![0u8; usize::from(frame[1] & 0x7f)];
    s.read_exact(&mut payload).await.unwrap();
    (status, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_opens_in_chromium_for_its_admin_and_owner_and_its_browser_leaves_through_the_egress()
 {
    // Every field is kept to the end: the rest would be dropped (containers removed, the
    // server stopped) right here.
    let Rig {
        lab,
        s,
        admin,
        host,
        _cleanup,
        tmp: _tmp,
        runtime: _runtime,
        egress: _egress,
        url: _url,
    } = rig_with("dora", json!({"desktop": true, "memory_mb": 1536})).await;
    let id = host["id"].as_str().unwrap().to_string();
    assert_eq!(host["desktop"], true, "{host}");
    let (_, now) = s.get(&format!("/v1/admin/hosts/{id}"), &admin).await;
    assert!(
        now["data"]["image"]
            .as_str()
            .unwrap()
            .starts_with("sluice/managed-desktop:"),
        "{now}"
    );
    assert_eq!(now["data"]["pids_limit"], 4096, "a desktop's default");
    // A ticket kept until it has expired, at the end.
    let (st, early) = s
        .post(
            &format!("/v1/admin/hosts/{id}/vnc/ticket"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{early}");
    let early_at = Instant::now();
    let early = early["data"]["websocket"].as_str().unwrap().to_string();

    // The administrator opens the desktop from the host's page.
    let base = s.base.clone();
    let (_driver, c) = browser().await;
    sign_in(&c, &base, "admin", common::ADMIN_PASSWORD).await;
    wait_text(&c, "h1", |t| t == "Overview", Duration::from_secs(10)).await;
    let overview = c.source().await.unwrap();
    assert!(
        overview.contains("sluice/managed-desktop:") && overview.contains("MiB"),
        "the overview shows the desktop image and its size"
    );
    c.goto(&format!("{base}/admin/hosts/{id}")).await.unwrap();
    c.find(Locator::Css("#open-desktop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_desktop(&c, "connected", Duration::from_secs(30)).await;
    // The desktop draws: panel, terminal, background (not one flat colour).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (w, h, colours) = loop {
        let seen = canvas_colours(&c).await;
        if seen.2 >= 8 || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(w >= 640 && h >= 400, "canvas {w}x{h}");
    assert!(colours >= 8, "the desktop looks blank: {colours} colours");
    shot(&c, "desktop-admin").await;
    // The remote screen follows the window (noVNC asks for the size; TigerVNC takes it).
    c.set_window_size(1100, 800).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (w2, _, _) = canvas_colours(&c).await;
        if w2 != w && w2 > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the desktop kept {w} px wide");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The browser inside the desktop fetches the lab's echo page: its title names the
    // address the page saw, the egress's exit.
    open_firefox(&host, &format!("http://{}/page", lab.echo()));
    let titles = wait_window_title(
        &host,
        &format!("exit {}", lab::EXIT_WG0),
        Duration::from_secs(120),
    );
    assert!(!titles.contains(lab::EXIT_DIRECT), "{titles}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    shot(&c, "desktop-firefox").await;

    // The clipboard both ways: the page's panel to the desktop, and back.
    c.find(Locator::Css("details.clipboard summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let field = c.find(Locator::Css("#desktop-clipboard")).await.unwrap();
    field.send_keys("from-the-page").await.unwrap();
    c.find(Locator::Css("#desktop-paste"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, got) = as_owner(&host, "xclip -o -selection clipboard 2>&1");
        if got.trim() == "from-the-page" {
            break;
        }
        assert!(Instant::now() < deadline, "the desktop's clipboard: {got}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, out) = as_owner(
        &host,
        "printf from-the-desktop | xclip -selection clipboard",
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = c
            .execute(
                "return document.getElementById('desktop-clipboard').value;",
                vec![],
            )
            .await
            .unwrap();
        if got == json!("from-the-desktop") {
            break;
        }
        assert!(Instant::now() < deadline, "the page's clipboard: {got}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Opening is audited with the viewer and the source; the session is live.
    let (_, ev) = s
        .get("/v1/admin/events?action=desktop.opened", &admin)
        .await;
    assert_eq!(ev["data"][0]["actor"], "admin:admin", "{ev}");
    assert_eq!(ev["data"][0]["source_ip"], "127.0.0.1", "{ev}");
    let (_, live) = s.get("/v1/admin/sessions", &admin).await;
    let desktops: Vec<&Value> = live["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["method"] == "desktop")
        .collect();
    assert_eq!(desktops.len(), 1, "{live}");

    // The owner opens the same desktop from the portal (shared), in another window.
    let admin_window = c.window().await.unwrap();
    let other = c.new_window(true).await.unwrap();
    c.switch_to_window(other.handle).await.unwrap();
    // One browser, one cookie: signing the owner in signs the administrator out, and the
    // administrator's open desktop (admitted by its ticket, not the cookie) goes on.
    c.goto(&format!("{base}/login")).await.unwrap();
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &base, "dora", "dora-password").await;
    wait_text(&c, "h1", |t| t == "My hosts", Duration::from_secs(10)).await;
    c.find(Locator::Css(&format!("#open-desktop-{id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_desktop(&c, "connected", Duration::from_secs(30)).await;
    let url = c.current_url().await.unwrap();
    assert!(url.path().starts_with("/v1/user/hosts/"), "{url}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    shot(&c, "desktop-owner").await;
    let (_, live) = s.get("/v1/admin/sessions", &admin).await;
    let owner_session = live["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["method"] == "desktop")
        .max_by_key(|x| x["id"].as_str().unwrap().to_string())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An administrator ends it: the owner's page says so.
    let (st, _) = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/admin/sessions/{owner_session}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    wait_desktop(&c, "closed", Duration::from_secs(15)).await;
    let why = wait_text(
        &c,
        "#desktop-status",
        |t| !t.is_empty(),
        Duration::from_secs(5),
    )
    .await;
    assert!(why.contains("ended by an administrator"), "{why}");
    c.close_window().await.unwrap();
    c.switch_to_window(admin_window).await.unwrap();
    assert_eq!(
        c.execute("return document.body.dataset.desktop;", vec![])
            .await
            .unwrap(),
        json!("connected"),
        "the administrator's view goes on"
    );
    let (_, closed) = s
        .get("/v1/admin/events?action=desktop.closed", &admin)
        .await;
    assert!(
        closed["data"][0]["details"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ended by an administrator"),
        "{closed}"
    );

    // Another user: the page and a ticket do not exist for them.
    let (_, eve) = s.user(&admin, "eve").await;
    let (st, v) = s
        .post(&format!("/v1/user/hosts/{id}/vnc/ticket"), &eve, json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = s
        .post(&format!("/v1/admin/hosts/{id}/vnc/ticket"), &eve, json!({}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Tickets over plain HTTP: one use each, bound to their host, from this site only.
    let (_, t) = s
        .post(
            &format!("/v1/admin/hosts/{id}/vnc/ticket"),
            &admin,
            json!({}),
        )
        .await;
    let path = t["data"]["websocket"].as_str().unwrap().to_string();
    let (st, _) = ws_open(&base, &path, Some("http://evil.example")).await;
    assert_eq!(st, 403, "another origin");
    let (st, first) = ws_open(&base, &path, Some(&base)).await;
    assert_eq!(st, 101, "the ticket was not spent by the refused origin");
    assert_eq!(first, b"RFB 003.008\n", "Sluice greets as a VNC server");
    let (st, _) = ws_open(&base, &path, None).await;
    assert_eq!(st, 403, "a reused ticket");
    let (st, _) = ws_open(&base, &format!("/v1/admin/hosts/{id}/vnc/websockify"), None).await;
    assert_eq!(st, 401, "no ticket");
    let (st, _) = ws_open(
        &base,
        &format!("/v1/admin/hosts/{id}/vnc/websockify?ticket=forged"),
        None,
    )
    .await;
    assert_eq!(st, 403, "a forged ticket");
    let wait = Duration::from_secs(31).saturating_sub(early_at.elapsed());
    tokio::time::sleep(wait).await;
    let (st, _) = ws_open(&base, &early, None).await;
    assert_eq!(st, 403, "an expired ticket");

    // Out of desktop mode, keeping the home: the desktop is gone, the files stay.
    let (ok, _) = exec(&host, "echo kept > /home/dora/keep.txt");
    assert!(ok);
    let (st, q) = s
        .post(
            &format!("/v1/admin/hosts/{id}/rebuild"),
            &admin,
            json!({"desktop": false}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{q}");
    wait_desktop(&c, "closed", Duration::from_secs(60)).await;
    let task = s
        .wait_task(&admin, q["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let (_, now) = s.get(&format!("/v1/admin/hosts/{id}"), &admin).await;
    assert_eq!(now["data"]["desktop"], false);
    assert!(
        now["data"]["image"]
            .as_str()
            .unwrap()
            .starts_with("sluice/managed-user:"),
        "{now}"
    );
    let (_, kept) = exec(&host, "cat /home/dora/keep.txt");
    assert_eq!(kept.trim(), "kept");
    let (st, v) = s
        .post(
            &format!("/v1/admin/hosts/{id}/vnc/ticket"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("not a desktop host"), "{v}");
    // The owner may not move it back; an administrator may.
    let dora = s.login("dora", "dora-password").await;
    let (st, _) = s
        .post(
            &format!("/v1/user/hosts/{id}/rebuild"),
            &dora,
            json!({"desktop": true}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, q) = s
        .post(
            &format!("/v1/admin/hosts/{id}/rebuild"),
            &admin,
            json!({"desktop": true}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{q}");
    let task = s
        .wait_task(&admin, q["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");

    // The administrator signs in again (the owner's sign-in replaced the cookie, so this
    // page's ticket request is refused as cross-site until then) and opens it again;
    // disabling the owner then ends every desktop of the host, the administrator's included.
    c.find(Locator::Css("#desktop-reconnect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_desktop(&c, "refused", Duration::from_secs(10)).await;
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &base, "admin", common::ADMIN_PASSWORD).await;
    wait_text(&c, "h1", |t| t == "Overview", Duration::from_secs(10)).await;
    c.goto(&format!("{base}/admin/hosts/{id}")).await.unwrap();
    c.find(Locator::Css("#open-desktop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_desktop(&c, "connected", Duration::from_secs(30)).await;
    let owner_id = host["user_id"].as_str().unwrap();
    let (st, v) = s
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/users/{owner_id}"),
            Some(&admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    wait_desktop(&c, "closed", Duration::from_secs(15)).await;
    let why = c
        .find(Locator::Css("#desktop-status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(why.contains("disabled"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_a_desktop_host_but_wireguard_even_from_its_browser() {
    let Rig {
        lab,
        tmp,
        host,
        _cleanup,
        s: _s,
        runtime: _runtime,
        admin: _admin,
        egress: _egress,
        url: _url,
    } = rig_with("dexter", json!({"desktop": true, "memory_mb": 1536})).await;
    only_wireguard_leaves(&host, &lab, tmp.path(), || {
        // Firefox, with whatever it fetches (and resolves) on its first start, and the page.
        open_firefox(&host, &format!("http://{}/page", lab.echo()));
        wait_window_title(
            &host,
            &format!("exit {}", lab::EXIT_WG0),
            Duration::from_secs(120),
        );
    });
}

/// Reads RFB from a WebSocket until `n` bytes have come, or the socket closes (answers the
/// close reason then).
async fn rfb_read<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    buf: &mut Vec<u8>,
    n: usize,
) -> Result<Vec<u8>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    while buf.len() < n {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f| f.reason.to_string()).unwrap_or_default());
            }
            Some(Ok(_)) => {}
            other => return Err(format!("{other:?}")),
        }
    }
    Ok(buf.drain(..n).collect())
}

/// A viewer on Sluice's desktop WebSocket: handshake, ClientInit, ServerInit.
async fn viewer(
    base: &str,
    websocket: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Vec<u8>,
    (u16, u16),
) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}{websocket}", base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        rfb_read(&mut ws, &mut buf, 12).await.unwrap(),
        b"RFB 003.008\n"
    );
    let send = |b: &'static [u8]| Message::Binary(b.to_vec().into());
    ws.send(send(b"RFB 003.008\n")).await.unwrap();
    assert_eq!(rfb_read(&mut ws, &mut buf, 2).await.unwrap(), [1, 1]);
    ws.send(send(&[1])).await.unwrap();
    assert_eq!(rfb_read(&mut ws, &mut buf, 4).await.unwrap(), [0, 0, 0, 0]);
    ws.send(send(&[1])).await.unwrap();
    let init = rfb_read(&mut ws, &mut buf, 24).await.unwrap();
    let name = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    rfb_read(&mut ws, &mut buf, name).await.unwrap();
    let size = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    (ws, buf, size)
}

/// A server on the real engine (settings as `tweak` leaves them) with one desktop host of
/// `username`'s. Dropped in field order: the server, then its containers, then its data.
struct DesktopLab {
    s: common::Server,
    admin: String,
    host: Value,
    _cleanup: common::docker::Cleanup,
    _tmp: tempfile::TempDir,
}

async fn desktop_lab(
    username: &str,
    tweak: impl FnOnce(&mut sluice::config::ServeSettings),
) -> DesktopLab {
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let mut settings = common::settings(tmp.path(), url);
    tweak(&mut settings);
    let runtime =
        std::sync::Arc::new(sluice::runtime::docker::DockerRuntime::new(tmp.path()).unwrap());
    common::docker::ensure_desktop_image(&runtime).await;
    let cleanup = common::docker::Cleanup(runtime.instance().to_string());
    let dynamic: std::sync::Arc<dyn sluice::runtime::HostRuntime> = runtime.clone();
    let s = common::Server::start_on(
        settings,
        dynamic,
        common::RecordingRuntime::default(),
        tmp.path().to_path_buf(),
        None,
    )
    .await;
    let admin = s.admin().await;
    let (uid, _) = s.user(&admin, username).await;
    let host = s
        .host(&admin, &uid, json!({"desktop": true, "memory_mb": 1024}))
        .await;
    DesktopLab {
        s,
        admin,
        host,
        _cleanup: cleanup,
        _tmp: tmp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_without_keyboard_or_pointer_input_ends_as_idle_while_one_in_use_stays() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let DesktopLab { s, admin, host, .. } =
        &desktop_lab("idler", |c| c.ssh.idle_timeout_secs = 4).await;
    let id = host["id"].as_str().unwrap();
    let path = format!("/v1/admin/hosts/{id}/vnc/ticket");
    let (_, t1) = s.post(&path, admin, json!({})).await;
    let (_, t2) = s.post(&path, admin, json!({})).await;
    let socket = |t: &Value| t["data"]["websocket"].as_str().unwrap().to_string();
    let (mut idle, mut idle_buf, (w, h)) = viewer(&s.base, &socket(&t1)).await;
    let (mut busy, mut busy_buf, _) = viewer(&s.base, &socket(&t2)).await;
    let [wh, wl] = w.to_be_bytes();
    let [hh, hl] = h.to_be_bytes();
    let request = [3u8, 1, 0, 0, 0, 0, wh, wl, hh, hl];
    // For 8 s both ask for screen updates (what a viewer does on its own); only one also
    // moves the pointer now and then.
    let start = Instant::now();
    let mut idle_end = None;
    let mut tick = 0u32;
    while start.elapsed() < Duration::from_secs(8) {
        tick += 1;
        if idle_end.is_none() {
            if idle
                .send(Message::Binary(request.to_vec().into()))
                .await
                .is_err()
            {
                idle_end = Some(String::from("(send failed)"));
            } else if let Ok(Err(reason)) = tokio::time::timeout(
                Duration::from_millis(100),
                rfb_read(&mut idle, &mut idle_buf, usize::MAX),
            )
            .await
            {
                idle_end = Some(reason);
            }
        }
        let mut out = request.to_vec();
        if tick.is_multiple_of(5) {
            let x = (tick % 200) as u8;
            out.extend([5, 0, 0, x, 0, x]);
        }
        busy.send(Message::Binary(out.into())).await.unwrap();
        if let Ok(Err(reason)) = tokio::time::timeout(
            Duration::from_millis(100),
            rfb_read(&mut busy, &mut busy_buf, usize::MAX),
        )
        .await
        {
            panic!("the viewer in use was ended: {reason}");
        }
        busy_buf.clear();
        idle_buf.clear();
    }
    let reason = idle_end.expect("the viewer without input was not ended within 8 s");
    assert!(reason.contains("idle"), "{reason}");
    let (_, ev) = s.get("/v1/admin/events?action=desktop.closed", admin).await;
    assert!(
        ev["data"][0]["details"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("idle"),
        "{ev}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_owner_cannot_turn_the_desktop_start_into_a_root_write() {
    let DesktopLab { s, admin, host, .. } = &desktop_lab("trudy", |_| {}).await;
    let id = host["id"].as_str().unwrap();
    let root = |cmd: &str| {
        let (ok, out) = common::docker::docker(&[
            "exec",
            &container_name(host["short_id"].as_str().unwrap()),
            "sh",
            "-c",
            cmd,
        ]);
        assert!(ok, "{cmd}: {out}");
        out
    };
    // The attack as reported: the owner's own directory on /run, its password file replaced
    // by a link to a file whose owner the next root process trusts.
    let (ok, out) = as_owner(
        host,
        "rm -f /run/sluice-desktop/passwd && ln -s /etc/ld.so.preload /run/sluice-desktop/passwd \
         && ln -s /etc/ld.so.preload /tmp/.X11-unix/evil 2>&1; true",
    );
    assert!(ok, "{out}");
    for step in ["stop", "start", "rebuild"] {
        let (st, v) = s
            .post(&format!("/v1/admin/hosts/{id}/{step}"), admin, json!({}))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        let task = s
            .wait_task(admin, v["data"]["task_id"].as_str().unwrap())
            .await;
        // A start waits for the VNC server too: the desktop came up.
        assert_eq!(task["status"], "succeeded", "{step}: {task}");
        if step == "stop" {
            continue;
        }
        let out = root(
            "test -e /etc/ld.so.preload && echo PRELOAD; \
             stat -c '%U %a %F' /run/sluice-desktop/passwd; ls -A /tmp/.X11-unix",
        );
        assert!(!out.contains("PRELOAD"), "after {step}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "trudy 600 regular file", "after {step}: {out}");
        assert_eq!(lines[1..], ["X1"], "after {step}: {out}");
        // Re-plant for the next round.
        let (ok, out) = as_owner(
            host,
            "rm -f /run/sluice-desktop/passwd && ln -s /etc/ld.so.preload /run/sluice-desktop/passwd",
        );
        assert!(ok, "{out}");
    }
}
