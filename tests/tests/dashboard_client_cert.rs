//! With TLS on, a real headless chromium signs in to the dashboard with a client certificate
//! made by `berth certs` (issue 17): the cluster CA and the certificate sit in the NSS database
//! chromium reads from its HOME, and the AutoSelectCertificateForUrls policy, scoped to this
//! test's port and the certificate's CN, lets it present the certificate without a prompt. A
//! viewer's certificate shows the pages and no action; a deployer's approves, and the audit
//! log names the certificate. Without a certificate the same browser is sent to sign in.

use std::net::SocketAddr;
use std::path::Path;

use berth_proto::tls::{Role, TlsFiles};
use berth_proto::v1::*;
use berth_tests::browser::{Browser, Launch};
use berth_tests::dashboard::{TlsUi, WAIT, screenshots};
use berth_tests::nssdb::NssDb;

const IMAGE: &str = "cert-busybox:1";

/// A chromium whose NSS database trusts the cluster CA and holds the client certificate
/// `name` of `role` (none when `client` is None), and that presents it to the dashboard
/// at `http` alone.
struct CertBrowser {
    browser: Browser,
    _home: tempfile::TempDir,
}

impl CertBrowser {
    fn start(pki: &Path, http: SocketAddr, client: Option<(Role, &str)>) -> Self {
        let home = tempfile::Builder::new()
            .prefix("berth-cert-home-")
            .tempdir()
            .expect("a HOME");
        let db = NssDb::create(home.path());
        db.trust_ca("berth-cluster-ca", &pki.join("ca.pem"));
        let Some((role, name)) = client else {
            let browser = Browser::launch(&Launch {
                home: Some(home.path()),
                ..Default::default()
            });
            return CertBrowser {
                browser,
                _home: home,
            };
        };
        let files = TlsFiles::for_role(pki, role, name);
        db.add_client(name, &files.cert, &files.key);
        assert!(db.list().contains(name), "{}", db.list());
        // Each entry is itself a JSON string: the URL pattern and which certificate.
        let rule = serde_json::json!({
            "pattern": format!("https://localhost:{}", http.port()),
            "filter": {"SUBJECT": {"CN": name}},
        });
        let policies = serde_json::json!({"AutoSelectCertificateForUrls": [rule.to_string()]});
        let browser = Browser::launch(&Launch {
            home: Some(home.path()),
            policies: Some(policies),
        });
        CertBrowser {
            browser,
            _home: home,
        }
    }
}

#[test]
fn chromium_signs_in_with_a_client_certificate_and_its_role_decides() {
    let ui = TlsUi::start(IMAGE);
    let (dir, http, api) = (ui.dir.clone(), ui.http, &ui.api);
    // The scheduler's certificate names localhost; the browser checks it against the CA.
    let url = |path: &str| format!("https://localhost:{}{path}", http.port());
    let page = url("/deployments/default/hello");

    // No certificate: the sign-in page (so what follows is the certificate's doing).
    let anonymous = CertBrowser::start(&dir, http, None);
    anonymous.browser.goto(&page);
    anonymous
        .browser
        .wait_text("sent to sign in", "h1", WAIT, |t| t == "Sign in");
    drop(anonymous);

    let viewer = CertBrowser::start(&dir, http, Some((Role::Viewer, "cert-viewer")));
    let b = &viewer.browser;
    b.goto(&page);
    b.wait_text("signed in by certificate", "#who", WAIT, |t| {
        t == "cert-viewer (viewer)"
    });
    b.wait_text("the rollout waits", "#phase", WAIT, |t| {
        t == "awaiting-approval"
    });
    assert!(!b.exists("#approve"), "a viewer sees no Approve button");
    assert!(!b.exists("section.actions"), "nor any other action");
    for (path, title) in [("/", "Cluster"), ("/releases", "Releases")] {
        b.goto(&url(path));
        b.wait_text(path, "h1", WAIT, |t| t == title);
        assert_eq!(b.text("#who").as_deref(), Some("cert-viewer (viewer)"));
    }
    drop(viewer);

    let deployer = CertBrowser::start(&dir, http, Some((Role::Deployer, "cert-deployer")));
    let b = &deployer.browser;
    b.goto(&page);
    b.wait_text("signed in by certificate", "#who", WAIT, |t| {
        t == "cert-deployer (deployer)"
    });
    b.screenshot(&screenshots(), "deployment-client-certificate");
    b.click("#approve");
    b.wait_text("the rollout completes", "#phase", WAIT, |t| t == "complete");
    let d = api.get("hello");
    assert_eq!(d.phase, RolloutPhase::Complete as i32, "{d:?}");
    let audit = b.text("table.audit").unwrap_or_default();
    assert!(
        audit.contains("cert-deployer") && audit.contains("approve"),
        "audited under the certificate's name: {audit}"
    );
}
