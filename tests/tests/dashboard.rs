//! The scheduler's web dashboard (issue 17) in a real headless chromium: a deploy shows up
//! live, a manual rollout's Approve button completes it, a viewer sees no button and its
//! forged POST is refused, and bad requests (unknown names, forms without CSRF, oversized or
//! malformed forms, foreign Host or Origin headers) get clear refusals. Screenshots of each
//! page go to `target/dashboard-screenshots/` (the ones in docs/screenshots come from there).

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;

use berth_proto::v1::auth_service_client::AuthServiceClient;
use berth_proto::v1::*;
use berth_tests::browser::Browser;
use berth_tests::cluster::{DeployApi, Fabric, all_ready, httpd_spec, start_nodes};
use berth_tests::dashboard::{
    TlsUi, Ui, WAIT, assert_approved_in_page, awaiting_approval, exchange, request, screenshots,
};
use berth_tests::{free_loopback_addr, poll_until};

const IMAGE: &str = "dash-busybox:1";

/// When the scheduler published `ready` ready replicas of deployment `name` (its Watch
/// event's `at_ms`, wall-clock milliseconds).
fn ready_published(api: &DeployApi, name: &str, ready: u32) -> i64 {
    let mut client = api.client.clone();
    api.block_on(async {
        let mut events = client
            .watch(WatchRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        loop {
            let event = tokio::time::timeout(WAIT, events.message())
                .await
                .expect("a Watch event in time")
                .expect("the Watch stream")
                .expect("an event before the stream ends");
            if event.ready_replicas == ready {
                return event.at_ms;
            }
        }
    })
}

/// [`request`] over HTTPS, verifying the dashboard against the cluster CA `ca` and presenting
/// the client certificate in `cert`, if any.
fn https_request(
    addr: SocketAddr,
    ca: &std::path::Path,
    cert: Option<&berth_proto::tls::TlsFiles>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let tcp = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    https_over(tcp, addr, ca, cert, method, path, headers, body)
}

/// [`https_request`] over the connection `tcp`, already made to `addr`.
#[allow(
    clippy::too_many_arguments,
    reason = "https_request's, and the connection"
)]
fn https_over(
    tcp: std::net::TcpStream,
    addr: SocketAddr,
    ca: &std::path::Path,
    cert: Option<&berth_proto::tls::TlsFiles>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots
            .add(c.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(files) => {
            let chain = CertificateDer::pem_file_iter(&files.cert)
                .expect("the client certificate")
                .map(|c| c.expect("a certificate"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(&files.key).expect("the client key");
            config
                .with_client_auth_cert(chain, key)
                .expect("a client identity")
        }
        None => config.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    exchange(
        rustls::StreamOwned::new(tls, tcp),
        addr,
        method,
        path,
        headers,
        body,
    )
}

/// The CSRF token in a page's first form.
fn csrf_in(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {page}"))
        + "name=\"csrf\" value=\"".len();
    page[start..].split('"').next().unwrap().to_string()
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario whose steps build on each other, read top to bottom"
)]
fn a_deploy_shows_up_live_and_approving_in_the_browser_completes_the_rollout() {
    let ui = Ui::start();
    let mut fabric = Fabric::new();
    let _nodes = start_nodes(&ui.sched, &mut fabric, 1, "dash", IMAGE);
    poll_until("the node ready", WAIT, || {
        ui.api.nodes().iter().all(|n| n.ready).then_some(())
    });
    let browser = Browser::start();
    let shots = screenshots();

    // The page is open before the deploy: what follows arrives over server-sent events.
    browser.goto(&ui.url("/deployments"));
    browser.wait_text("an empty list", "main p", WAIT, |t| {
        t.contains("No deployment")
    });
    // When the page first shows the replica ready, by the browser's clock (a mutation
    // observer), against when the scheduler published it (the `at_ms` of the Watch event
    // that first says so): the same host's wall clock.
    browser.js(
        "window.readyAt = null; new MutationObserver(() => { \
           const e = document.querySelector('tr[data-deployment=hello] td.ready'); \
           if (e && e.textContent.trim() === '1/1' && !window.readyAt) window.readyAt = Date.now(); \
         }).observe(document.body, {subtree: true, childList: true, characterData: true});",
    );
    ui.api.apply(httpd_spec("hello", IMAGE, "v1", 1));
    let published = ready_published(&ui.api, "hello", 1);
    browser.wait_text(
        "the deploy shows up live, ready",
        "tr[data-deployment=hello] td.ready",
        WAIT,
        |t| t == "1/1",
    );
    let shown = browser.js("return window.readyAt;").as_i64();
    let shown = shown.expect("the observer saw the change (the page was not reloaded)");
    println!(
        "event delay, replica Ready published by the scheduler -> the browser shows it: {} ms",
        shown - published
    );
    browser.screenshot(&shots, "deployments");

    browser.goto(&ui.url("/"));
    browser.wait_text("the node's container", "tr[data-node] .count", WAIT, |t| {
        t == "1"
    });
    let node = browser.text("tr[data-node] th").unwrap_or_default();
    assert!(node.contains("dash"), "{node}");
    assert!(browser.text("tr[data-node] td").unwrap() == "Ready");
    browser.screenshot(&shots, "cluster");

    // v2 waits for approval; the page shows its button as the phase changes.
    let mut v2 = httpd_spec("hello", IMAGE, "v2", 1);
    v2.rollout.as_mut().unwrap().approval = Approval::Manual as i32;
    browser.goto(&ui.url("/deployments/default/hello"));
    ui.api.apply(v2);
    browser.wait_text("v2 awaits approval", "#phase", WAIT, |t| {
        t == "awaiting-approval"
    });
    assert!(browser.exists("#approve"), "no Approve button");
    // Accessible forms: every visible input has a label, every button a name.
    let unlabelled = browser.js(
        "return [...document.querySelectorAll('input:not([type=hidden])')] \
           .filter(i => i.labels.length === 0).map(i => i.name) \
           .concat([...document.querySelectorAll('button')] \
           .filter(b => !b.textContent.trim()).map(b => b.id));",
    );
    assert_eq!(unlabelled, serde_json::json!([]), "unlabelled controls");
    browser.screenshot(&shots, "deployment-awaiting-approval");
    browser.click("#approve");
    let d = assert_approved_in_page(&browser, &ui.api, "local");
    // The event log's lines of this deployment: the approval, the rollout's steps and its
    // new replica's state changes (the page redraws as they are written).
    let v2_id = d.replica_status[0].container_id.clone();
    let (events, _) = browser.wait_text("the deployment's events", "table.events", WAIT, |t| {
        t.contains("local: approve, ok")
            && t.contains("revision 2 complete")
            && t.contains(&format!("{v2_id} running, ready"))
    });
    assert!(
        !events.contains("ticker"),
        "only this deployment's events: {events}"
    );
    browser.screenshot(&shots, "deployment");

    // Scale and Rollback are forms too; their effects show up on the same page, live.
    browser.js("document.querySelector('#replicas').value = '';");
    browser.fill("#replicas", "2");
    browser.click("#scale");
    browser.wait_text("scaled to 2", "#ready", WAIT, |t| t == "2/2");
    browser.click("#rollback");
    browser.wait_text("rolled back", "#phase", WAIT, |t| t == "complete");
    let d = ui.api.wait("hello", "v1 again, 2 ready", |d| {
        all_ready(d, 2) && d.revision == 3
    });
    let v1 = d.spec.as_ref().map(|s| s.env["VERSION"].clone());
    assert_eq!(v1.as_deref(), Some("v1"), "{d:?}");
    let audit = browser.text("table.audit").unwrap_or_default();
    assert!(
        audit.contains("scale") && audit.contains("rollback"),
        "{audit}"
    );

    browser.goto(&ui.url("/releases"));
    let releases = browser.wait_text("hello's release", "table.releases", WAIT, |t| {
        t.contains("hello")
    });
    assert!(releases.0.contains("complete"), "{releases:?}");
    browser.screenshot(&shots, "releases");

    let id = d.replica_status[0].container_id.clone();
    assert!(!id.is_empty(), "{d:?}");
    browser.goto(&ui.url(&format!("/containers/{id}/log")));
    browser.wait_text("the log page", "h1", WAIT, |t| t.contains(&id));
    assert!(browser.exists("pre#live"));

    // A container that writes: its log page grows while open, without a reload.
    let ticker = DeploymentSpec {
        name: "ticker".into(),
        image: IMAGE.into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done".into(),
        ],
        replicas: 1,
        ..Default::default()
    };
    ui.api.apply(ticker);
    let d = ui.api.wait("ticker", "ticker running", |d| all_ready(d, 1));
    let id = d.replica_status[0].container_id.clone();
    browser.goto(&ui.url(&format!("/containers/{id}/log")));
    browser.wait_text("the log's tail", "pre#live", WAIT, |t| {
        t.contains("tick-1\n")
    });
    browser.js("window.notReloaded = true;");
    let lines = |t: &str| t.matches("tick-").count();
    let first = lines(&browser.text("pre#live").unwrap_or_default());
    let (text, _) = browser.wait_text("new lines, live", "pre#live", WAIT, |t| {
        lines(t) > first + 2
    });
    assert_eq!(
        text.matches("tick-1\n").count(),
        1,
        "each line once: {text}"
    );
    assert_eq!(
        browser.js("return window.notReloaded;").as_bool(),
        Some(true)
    );
    browser.screenshot(&shots, "log");
}

#[test]
fn a_viewer_sees_no_button_and_its_forged_post_is_refused() {
    let ui = Ui::start();
    awaiting_approval(&ui.api, IMAGE);
    let viewer = ui.token("viewer", "dash-viewer");
    let deployer = ui.token("deployer", "dash-deployer");
    let browser = Browser::start();

    // The token is pasted once; the cookie that keeps it is HttpOnly.
    browser.goto(&ui.url("/login"));
    browser.fill("#token", &viewer);
    browser.click("#sign-in");
    browser.wait_text("signed in", "#who", WAIT, |t| t.contains("viewer"));
    assert_eq!(
        browser.js("return document.cookie;").as_str(),
        Some(""),
        "page scripts cannot read the token"
    );
    browser.goto(&ui.url("/deployments/default/hello"));
    browser.wait_text("the rollout waits", "#phase", WAIT, |t| {
        t == "awaiting-approval"
    });
    assert!(
        !browser.exists("#approve"),
        "a viewer sees no Approve button"
    );
    assert!(!browser.exists("section.actions"), "nor any other action");
    browser.screenshot(&screenshots(), "viewer");

    // A POST made by hand with the viewer's cookie and its own valid CSRF token.
    let csrf = browser
        .js("return document.querySelector('input[name=csrf]').value;")
        .as_str()
        .expect("the sign-out form's CSRF token")
        .to_string();
    let cookie = format!("berth_token={viewer}");
    let (status, body) = request(
        ui.http,
        "POST",
        "/deployments/default/hello/approve",
        &[("Cookie", &cookie)],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the deployer or admin role"), "{body}");
    assert!(!body.contains(&viewer), "the token is never echoed");
    let d = ui.api.get("hello");
    assert_eq!(d.phase, RolloutPhase::AwaitingApproval as i32, "{d:?}");

    // A deployer signs in on the same browser and may approve.
    browser.click("header form button");
    browser.wait_text("signed out", "h1", WAIT, |t| t == "Sign in");
    browser.fill("#token", &deployer);
    browser.click("#sign-in");
    browser.wait_text("signed in", "#who", WAIT, |t| t.contains("deployer"));
    browser.goto(&ui.url("/deployments/default/hello"));
    browser.click("#approve");
    // This test is about who may act; the live redraw after an action is the first test's.
    // The approval is read from the API, then the page is loaded again to show it.
    poll_until("the approval to complete the rollout", WAIT, || {
        (ui.api.get("hello").phase == RolloutPhase::Complete as i32).then_some(())
    });
    browser.goto(&ui.url("/deployments/default/hello"));
    browser.wait_text("approved", "#phase", WAIT, |t| t == "complete");
    let audit = browser.text("table.audit").unwrap_or_default();
    assert!(audit.contains("dash-deployer"), "audited by name: {audit}");
}

#[test]
fn bad_requests_are_refused_with_clear_errors() {
    let ui = Ui::start();
    awaiting_approval(&ui.api, IMAGE);
    let http = ui.http;
    let (status, body) = request(http, "GET", "/deployments/default/nope", &[], "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nope"), "{body}");
    let (status, body) = request(http, "GET", "/deployments?env=nowhere", &[], "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nowhere"), "{body}");
    assert_eq!(request(http, "GET", "/no/such/page", &[], "").0, 404);
    assert_eq!(request(http, "GET", "/assets/none.js", &[], "").0, 404);
    let htmx = "/assets/htmx-2.0.11.min.js";
    let (status, answer) = request(http, "GET", htmx, &[("Accept-Encoding", "br, gzip")], "");
    assert_eq!(status, 200);
    assert!(answer.contains("content-encoding: gzip"), "the gzip copy");
    let (status, answer) = request(http, "GET", htmx, &[], "");
    assert_eq!(status, 200);
    assert!(!answer.contains("content-encoding"), "the plain file");

    let (status, page) = request(http, "GET", "/deployments/default/hello", &[], "");
    assert_eq!(status, 200, "{page}");
    // Reading needs no JavaScript: the page arrives rendered.
    for shown in ["awaiting-approval", "Revision 2", "id=\"approve\""] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    let csrf = csrf_in(&page);
    let approve = "/deployments/default/hello/approve";
    let (status, body) = request(http, "POST", approve, &[], "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no CSRF token"), "{body}");
    let (status, body) = request(http, "POST", approve, &[], "csrf=00ff");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not this session"), "{body}");
    let scale = "/deployments/default/hello/scale";
    let (status, body) = request(
        http,
        "POST",
        scale,
        &[],
        &format!("csrf={csrf}&replicas=abc"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("replicas"), "{body}");
    let huge = format!("csrf={csrf}&pad={}", "x".repeat(64 * 1024));
    let (status, body) = request(http, "POST", scale, &[], &huge);
    assert_eq!(status, 413, "{body}");
    let (status, body) = request(
        http,
        "POST",
        "/deployments/default/hello/explode",
        &[],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("explode"), "{body}");
    // DNS rebinding and cross-site forms.
    let (status, body) = request(http, "GET", "/", &[("Host", "evil.example")], "");
    assert_eq!(status, 400, "{body}");
    let foreign = [("Origin", "http://evil.example")];
    let (status, body) = request(http, "POST", approve, &foreign, &format!("csrf={csrf}"));
    assert_eq!(status, 403, "{body}");
    let (status, body) = request(http, "POST", "/login", &[], "csrf=x&token=berth_nope");
    assert_eq!(status, 403, "{body}");
    let d = ui.api.get("hello");
    assert_eq!(
        d.phase,
        RolloutPhase::AwaitingApproval as i32,
        "nothing refused took effect: {d:?}"
    );

    // The same form, well made, works.
    let (status, body) = request(http, "POST", approve, &[], &format!("csrf={csrf}"));
    assert_eq!(status, 303, "{body}");
    ui.api.wait("hello", "approved", |d| {
        d.phase == RolloutPhase::Complete as i32
    });
}

#[test]
fn the_dashboard_listens_on_loopback_only() {
    for (flag, expected) in [
        ("0.0.0.0:0", "loopback address only"),
        ("localhost:80:80", "expected IP:PORT"),
    ] {
        let data = tempfile::tempdir().expect("a data dir");
        let out = std::process::Command::new(berth_tests::binary("berth-scheduler"))
            .args(["--listen", &free_loopback_addr().to_string()])
            .args(["--http-listen", flag])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .expect("run berth-scheduler");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains("--http-listen") && stderr.contains(expected),
            "{flag}: {stderr}"
        );
    }
}

/// With TLS on, the dashboard serves HTTPS with the scheduler's certificate, and trusts
/// nobody anonymous: a visitor shows a client certificate of the cluster CA (known by its
/// CN and role, as on gRPC) or a token; anyone else is sent to sign in.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: the same cluster seen by each kind of visitor in turn"
)]
fn with_tls_the_dashboard_serves_https_to_certificates_and_tokens() {
    use berth_proto::tls::{Role, TlsFiles};
    let ui = TlsUi::start(IMAGE);
    let (dir, http, api) = (ui.dir.clone(), ui.http, &ui.api);
    let sched = &ui.sched;
    let ca = dir.join("ca.pem");
    let admin = TlsFiles::for_role(&dir, Role::Admin, "admin");
    let page = "/deployments/default/hello";
    let https =
        |cert: Option<&TlsFiles>,
         method: &str,
         path: &str,
         headers: &[(&str, &str)],
         body: &str| { https_request(http, &ca, cert, method, path, headers, body) };

    // No certificate, no token: the sign-in page.
    let (status, answer) = https(None, "GET", "/deployments", &[], "");
    assert_eq!(status, 303, "{answer}");
    assert!(answer.contains("location: /login"), "{answer}");
    let (status, answer) = https(None, "GET", "/login", &[], "");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("Sign in"), "{answer}");
    let (status, answer) = https(None, "GET", "/", &[("Cookie", "berth_token=berth_0_x")], "");
    assert_eq!(status, 303, "a bad token signs nobody in: {answer}");
    assert!(
        answer.contains("Max-Age=0") && answer.contains("Secure"),
        "and its cookie is cleared: {answer}"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(http).expect("connect");
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut bytes = Vec::new();
    let _ = plain.read_to_end(&mut bytes);
    assert!(
        !String::from_utf8_lossy(&bytes).contains("HTTP/1.1"),
        "plain HTTP is not served: {bytes:?}"
    );

    // A viewer's certificate: the pages, no action, and a forged POST refused.
    let viewer = TlsFiles::for_role(&dir, Role::Viewer, "cert-viewer");
    let (status, body) = https(Some(&viewer), "GET", page, &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cert-viewer (viewer)"), "{body}");
    assert!(body.contains("awaiting-approval"), "{body}");
    assert!(!body.contains("class=\"actions\""), "no action: {body}");
    for path in ["/", "/deployments", "/releases"] {
        assert_eq!(https(Some(&viewer), "GET", path, &[], "").0, 200, "{path}");
    }
    let approve = format!("{page}/approve");
    let (status, body) = https(Some(&viewer), "POST", &approve, &[], "csrf=forged");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the deployer or admin role"), "{body}");
    assert_eq!(
        api.get("hello").phase,
        RolloutPhase::AwaitingApproval as i32
    );

    // A token in its cookie still works over HTTPS.
    let token = api.block_on(async {
        let tls = berth_proto::tls::client_config(&admin, "localhost").unwrap();
        let channel = berth_proto::tls::dial(&sched.endpoint(), Some(&tls)).unwrap();
        let mut client = AuthServiceClient::new(channel.connect().await.expect("connect"));
        let created = client
            .create_token(CreateTokenRequest {
                role: "viewer".into(),
                name: "tls-viewer".into(),
                ..Default::default()
            })
            .await
            .expect("create a token");
        created.into_inner().token
    });
    let cookie = format!("berth_token={token}");
    let (status, page_body) = https(None, "GET", "/deployments", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200, "{page_body}");
    assert!(page_body.contains("tls-viewer (viewer)"), "{page_body}");
    assert!(!page_body.contains(&token), "the token is never in a page");

    // A deployer's certificate approves; the audit log names the certificate's subject.
    let deployer = TlsFiles::for_role(&dir, Role::Deployer, "cert-deployer");
    let (status, body) = https(Some(&deployer), "GET", page, &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=\"approve\""), "{body}");
    let origin = format!("https://{http}");
    let (status, body) = https(
        Some(&deployer),
        "POST",
        &approve,
        &[("Origin", &origin)],
        &format!("csrf={}", csrf_in(&body)),
    );
    assert_eq!(status, 303, "{body}");
    api.wait("hello", "approved", |d| {
        d.phase != RolloutPhase::AwaitingApproval as i32
    });
    let (_, body) = https(Some(&deployer), "GET", page, &[], "");
    let audit = &body[body.find("class=\"audit\"").expect("the audit table")..];
    assert!(
        audit.contains("cert-deployer") && audit.contains("approve"),
        "audited under the certificate's name: {audit}"
    );
    silent_clients_hold_only_their_own_handshake_slots(http, &ca);
}

/// Handshakes one address may have under way (the scheduler's dashboard::https::PER_SOURCE).
const HANDSHAKES_PER_SOURCE: usize = 32;

/// 127.0.0.1 opens more connections than its handshake slots and never speaks: the ones past
/// the cap are closed at once, the others stay open, and a visitor from 127.0.0.2 is still
/// served.
fn silent_clients_hold_only_their_own_handshake_slots(http: SocketAddr, ca: &std::path::Path) {
    use std::io::Read as _;
    let extra = 8;
    let silent: Vec<std::net::TcpStream> = (0..HANDSHAKES_PER_SOURCE + extra)
        .map(|_| std::net::TcpStream::connect(http).expect("connect"))
        .collect();
    // The server takes them all within moments (its handshake timeout is 10 s); each is then
    // read without blocking: EOF or a reset is closed, WouldBlock is still held.
    let closed_now = || {
        silent
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                !matches!(
                    (&mut &**s).read(&mut [0u8; 1]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                )
            })
            .count()
    };
    let mut closed = 0;
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        closed = closed_now();
        if closed >= extra {
            break;
        }
    }
    assert_eq!(
        closed, extra,
        "connections past the cap are closed, the rest held"
    );
    let from = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let tcp = connect_from(from, http);
    let (status, body) = https_over(tcp, http, ca, None, "GET", "/login", &[], "");
    assert_eq!(
        status, 200,
        "another address is served while 127.0.0.1 floods: {body}"
    );
    drop(silent);
}

/// A TCP connection to `to` from the local address `from` (any loopback address is ours).
fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::net::TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let SocketAddr::V4(to) = to else {
        panic!("the dashboard listens on IPv4 loopback: {to}")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)),
    )
    .expect("bind the source address");
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).expect("connect");
    std::net::TcpStream::from(fd)
}
