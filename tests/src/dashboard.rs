//! The scheduler's dashboard as the browser tests meet it: a scheduler with its dashboard on
//! a loopback port of the test's own, tokens made through AuthService, a rollout left
//! waiting for approval, raw HTTP requests, and where screenshots go.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_proto::v1::auth_service_client::AuthServiceClient;
use berth_proto::v1::{Approval, CreateTokenRequest, RolloutPhase};

use crate::cluster::{DeployApi, SchedulerProc, httpd_spec};
use crate::{free_loopback_addr, http_status, poll_until};

/// How long the dashboard tests wait for anything.
pub const WAIT: Duration = Duration::from_secs(90);

/// A scheduler with its dashboard on a loopback port of the test's own.
#[derive(Debug)]
pub struct Ui {
    pub sched: SchedulerProc,
    pub http: SocketAddr,
    pub api: DeployApi,
}

impl Ui {
    pub fn start() -> Self {
        let http = free_loopback_addr();
        let sched = SchedulerProc::start(&["--http-listen", &http.to_string()]);
        poll_until("the dashboard to answer", WAIT, || {
            (http_status(http, "/") == Some(200)).then_some(())
        });
        let api = DeployApi::new(&sched.endpoint(), WAIT);
        Ui { sched, http, api }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// A token of `role` named `name`, made through AuthService.
    pub fn token(&self, role: &str, name: &str) -> String {
        self.api.block_on(async {
            let mut client = AuthServiceClient::connect(self.sched.endpoint())
                .await
                .expect("connect AuthService");
            client
                .create_token(CreateTokenRequest {
                    role: role.into(),
                    name: name.into(),
                    ..Default::default()
                })
                .await
                .expect("create a token")
                .into_inner()
                .token
        })
    }
}

/// `hello` with no replicas in the default environment, complete at v1, then v2 awaiting
/// manual approval: a rollout to approve without any node.
pub fn awaiting_approval(api: &DeployApi, image: &str) {
    let mut v1 = httpd_spec("hello", image, "v1", 0);
    v1.readiness = None;
    api.apply(v1.clone());
    api.wait("hello", "v1 complete", |d| {
        d.phase == RolloutPhase::Complete as i32
    });
    let mut v2 = v1;
    v2.env.insert("VERSION".into(), "v2".into());
    v2.rollout.as_mut().unwrap().approval = Approval::Manual as i32;
    api.apply(v2);
    api.wait("hello", "v2 awaiting approval", |d| {
        d.phase == RolloutPhase::AwaitingApproval as i32
    });
}

/// Where screenshots go: the workspace's target dir (CARGO_TARGET_DIR when set).
pub fn screenshots() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::workspace_root().join("target"), PathBuf::from)
        .join("dashboard-screenshots")
}

/// One HTTP/1.1 request; the status and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let stream = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    exchange(stream, addr, method, path, headers, body)
}

/// Writes one request on `stream` and reads the answer to its end.
pub fn exchange(
    mut stream: impl std::io::Read + std::io::Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server that refuses a large body may close before reading it all.
    let _ = stream.write_all(body.as_bytes());
    // Bytes: a gzip body is not UTF-8.
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let answer = String::from_utf8_lossy(&bytes).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    (status, answer)
}

/// A scheduler with TLS and its dashboard over HTTPS on a loopback port of the test's own,
/// with a cluster PKI made by `berth certs` (a CA, the scheduler `sched`, and clients `admin`,
/// `cert-viewer` and `cert-deployer` of those roles) and a rollout of `hello` left waiting for
/// approval.
#[derive(Debug)]
pub struct TlsUi {
    /// The data dir holding the PKI (removed on drop).
    _pki: crate::Berth,
    /// The PKI's files (`TlsFiles::for_role(&dir, ...)`, `dir/ca.pem`).
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub sched: SchedulerProc,
    /// DeploymentService as `admin`.
    pub api: DeployApi,
}

impl TlsUi {
    pub fn start(image: &str) -> Self {
        use berth_proto::tls::{Role, TlsFiles};
        let pki = crate::Berth::new();
        pki.json(["certs", "init"]);
        pki.json(["certs", "scheduler", "sched"]);
        pki.json(["certs", "client", "admin", "--role", "admin"]);
        pki.json(["certs", "client", "cert-viewer", "--role", "viewer"]);
        pki.json(["certs", "client", "cert-deployer", "--role", "deployer"]);
        let dir = pki.data_dir.path().join("pki");
        let http = free_loopback_addr();
        let sched = SchedulerProc::start_tls(
            &TlsFiles::for_role(&dir, Role::Scheduler, "sched"),
            &["--http-listen", &http.to_string()],
        );
        let admin = TlsFiles::for_role(&dir, Role::Admin, "admin");
        let api = DeployApi::new_tls(&sched.endpoint(), &admin, WAIT);
        awaiting_approval(&api, image);
        TlsUi {
            _pki: pki,
            dir,
            http,
            sched,
            api,
        }
    }
}

/// After an Approve in `browser`: the page shows the rollout complete, the API has revision 2
/// ready and complete, and the page's audit table has the approval by `caller`. Returns the
/// deployment as the API gives it then.
pub fn assert_approved_in_page(
    browser: &crate::browser::Browser,
    api: &DeployApi,
    caller: &str,
) -> berth_proto::v1::Deployment {
    browser.wait_text("the rollout completes", "#phase", WAIT, |t| t == "complete");
    let d = api.wait("hello", "v2 ready", |d| {
        crate::cluster::all_ready(d, 1) && d.revision == 2
    });
    assert_eq!(d.phase, RolloutPhase::Complete as i32, "{d:?}");
    let audit = browser.text("table.audit").unwrap_or_default();
    assert!(
        audit.contains("approve") && audit.contains(caller),
        "the approval is in the audit log: {audit}"
    );
    d
}
