//! `berth certs` end to end: the files it writes, their chain checked by openssl, and a tonic
//! server on `berth_proto::tls::server_config` that admits certificates from its CA and refuses
//! the rest, with the identity its services see.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::tls::{
    self, ClientAuth, Identity, Role, TlsFiles, client_config, client_config_ca_only,
    peer_identity, peer_identity_from_extensions, server_config,
};
use berth_tests::{Berth, output, require_tool, run_ok};
use tonic::codegen::{Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::transport::{ClientTlsConfig, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A `berth` with a CA, a scheduler, a node and a client certificate in `<data-dir>/pki`.
struct Pki {
    berth: Berth,
}

impl Pki {
    fn new() -> Self {
        let berth = Berth::new();
        berth.json(["certs", "init"]);
        berth.json(["certs", "scheduler", "sched", "--ip", "127.0.0.2"]);
        berth.json(["certs", "node", "n1"]);
        berth.json(["certs", "client", "ci"]);
        Self { berth }
    }

    fn dir(&self) -> PathBuf {
        self.berth.data_dir.path().join("pki")
    }

    fn files(&self, role: Role, name: &str) -> TlsFiles {
        TlsFiles::for_role(&self.dir(), role, name)
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn openssl(args: &[&str]) -> Command {
    let mut cmd = Command::new(require_tool("openssl"));
    cmd.args(args);
    cmd
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn certs_writes_a_verifiable_pki_with_private_keys() {
    let berth = Berth::new();
    let dir = berth.data_dir.path().join("pki");

    let ca = berth.json(["certs", "init"]);
    assert_eq!(ca["kind"], "ca");
    assert_eq!(ca["cert"], dir.join("ca.pem").to_str().unwrap());
    assert_eq!(ca["key"], dir.join("ca-key.pem").to_str().unwrap());
    assert!(ca["role"].is_null());
    // The scheduler's secrets key, made beside the CA; its id printed, never the key.
    assert_eq!(
        ca["secrets_key"]["path"],
        dir.join("secrets.key").to_str().unwrap()
    );
    let key_id = ca["secrets_key"]["key_id"].as_str().unwrap();
    let loaded = berth_proto::secrets_key::SecretsKey::load(&dir.join("secrets.key")).unwrap();
    assert_eq!(loaded.id(), key_id);
    assert_eq!(mode(&dir.join("secrets.key")), 0o600);

    let node = berth.json([
        "certs",
        "node",
        "n1",
        "--ip",
        "10.1.2.3",
        "--dns",
        "n1.cluster.local",
    ]);
    let files = TlsFiles::for_role(&dir, Role::Node, "n1");
    assert_eq!(node["cert"], files.cert.to_str().unwrap());
    assert_eq!(node["key"], files.key.to_str().unwrap());
    assert_eq!(node["ca"], files.ca.to_str().unwrap());
    assert_eq!(node["common_name"], "n1");
    assert_eq!(node["role"], "node");
    assert_eq!(
        node["dns_names"],
        serde_json::json!(["n1", "n1.cluster.local", "localhost"])
    );
    assert_eq!(
        node["ip_addresses"],
        serde_json::json!(["10.1.2.3", "127.0.0.1"])
    );
    for field in ["not_before", "not_after"] {
        let t = node[field].as_str().expect("a timestamp");
        assert!(t.ends_with('Z') && t.len() == 20, "{field}: {t}");
    }
    assert!(node["not_before"].as_str() < node["not_after"].as_str());

    let sched = berth.json(["certs", "scheduler", "s1"]);
    assert_eq!(sched["role"], "scheduler");
    assert_eq!(
        sched["cert"],
        dir.join("scheduler-s1.pem").to_str().unwrap()
    );

    // --role defaults to deployer.
    let client = berth.json(["certs", "client", "ci"]);
    assert_eq!(client["role"], "deployer");
    assert_eq!(client["cert"], dir.join("client-ci.pem").to_str().unwrap());
    let admin = berth.json(["certs", "client", "alice", "--role", "admin"]);
    assert_eq!(admin["role"], "admin");

    // Keys are the owner's only, certificates are public, the directory holds keys.
    assert_eq!(mode(&dir), 0o700);
    for stem in ["ca", "node-n1", "scheduler-s1", "client-ci", "client-alice"] {
        assert_eq!(mode(&dir.join(format!("{stem}-key.pem"))), 0o600, "{stem}");
        assert_eq!(mode(&dir.join(format!("{stem}.pem"))), 0o644, "{stem}");
    }
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 11, "no temp files left behind: {names:?}");

    // Each chains to the CA for openssl too, with the purposes its holder needs.
    let ca_file = dir.join("ca.pem");
    let ca_file = ca_file.to_str().unwrap();
    for (stem, purpose) in [
        ("node-n1", "sslserver"),
        ("node-n1", "sslclient"),
        ("scheduler-s1", "sslserver"),
        ("scheduler-s1", "sslclient"),
        ("client-ci", "sslclient"),
    ] {
        let cert = dir.join(format!("{stem}.pem"));
        let out = run_ok(openssl(&["verify", "-purpose", purpose, "-CAfile", ca_file]).arg(&cert));
        assert!(out.contains(": OK"), "{stem} {purpose}: {out}");
    }
    // A client certificate is no server certificate.
    let out = output(
        openssl(&["verify", "-purpose", "sslserver", "-CAfile", ca_file])
            .arg(dir.join("client-ci.pem")),
    );
    assert!(!out.status.success(), "a client cert verified as a server");

    let subject = run_ok(
        openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(&files.cert),
    );
    assert!(subject.contains("CN = n1, O = berth:node"), "{subject}");
    for san in [
        "DNS:n1",
        "DNS:n1.cluster.local",
        "DNS:localhost",
        "IP Address:10.1.2.3",
        "IP Address:127.0.0.1",
    ] {
        assert!(subject.contains(san), "{san} missing: {subject}");
    }

    // berth_proto reads back the role from each file.
    for (stem, role, cn) in [
        ("node-n1", Role::Node, "n1"),
        ("scheduler-s1", Role::Scheduler, "s1"),
        ("client-ci", Role::Deployer, "ci"),
        ("client-alice", Role::Admin, "alice"),
    ] {
        let identity = Identity::from_pem_file(&dir.join(format!("{stem}.pem"))).unwrap();
        assert_eq!(
            identity,
            Identity {
                common_name: cn.to_string(),
                role
            }
        );
    }
    // The CA is nobody's identity.
    let err = Identity::from_pem_file(&dir.join("ca.pem")).unwrap_err();
    assert!(matches!(err, tls::TlsError::NoRole { .. }), "{err}");
}

#[test]
fn init_refuses_to_replace_a_ca_without_force() {
    let berth = Berth::new();
    let dir = berth.data_dir.path().join("pki");
    berth.ok(["certs", "init"]);
    berth.ok(["certs", "node", "n1"]);
    let (cert, key) = (
        fs::read(dir.join("ca.pem")).unwrap(),
        fs::read(dir.join("ca-key.pem")).unwrap(),
    );
    let secrets_key = fs::read(dir.join("secrets.key")).unwrap();

    let err = berth.err(["certs", "init"]);
    assert!(
        err.contains(&dir.join("ca.pem").display().to_string()) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), cert);
    assert_eq!(fs::read(dir.join("ca-key.pem")).unwrap(), key);

    // Reissuing a leaf is refused too, naming the file.
    let err = berth.err(["certs", "node", "n1"]);
    assert!(err.contains("node-n1.pem"), "{err}");

    // --force makes a new CA, and what the old one signed no longer verifies.
    berth.ok(["certs", "init", "--force"]);
    assert_ne!(fs::read(dir.join("ca.pem")).unwrap(), cert);
    assert_ne!(fs::read(dir.join("ca-key.pem")).unwrap(), key);
    assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
    // The secrets key is never replaced: secrets sealed with it would be lost.
    assert_eq!(fs::read(dir.join("secrets.key")).unwrap(), secrets_key);
    let out = output(
        openssl(&["verify", "-CAfile"])
            .arg(dir.join("ca.pem"))
            .arg(dir.join("node-n1.pem")),
    );
    assert!(
        !out.status.success(),
        "old node cert verified under the new CA"
    );
}

#[test]
fn certs_refuses_bad_names_roles_and_a_missing_ca() {
    let berth = Berth::new();
    let dir = berth.data_dir.path().join("pki");

    // Nothing to sign with yet: the error names the CA key and the command that makes it.
    let err = berth.err(["certs", "node", "n1"]);
    assert!(
        err.contains(&dir.join("ca-key.pem").display().to_string())
            && err.contains("berth certs init"),
        "{err}"
    );
    assert!(!dir.join("node-n1.pem").exists());

    berth.ok(["certs", "init"]);
    for bad in ["../evil", "a/b", ".hidden", "with space", &"x".repeat(64)] {
        let err = berth.err(["certs", "client", bad]);
        assert!(err.contains("invalid name"), "{bad}: {err}");
    }
    let err = berth.err(["certs", "node", "n1", "--dns", "bad_name"]);
    assert!(err.contains("invalid DNS name"), "{err}");
    let err = berth.err(["certs", "client", "ci", "--role", "node"]);
    assert!(err.contains("--role"), "{err}");
    assert!(!berth.data_dir.path().join("evil.pem").exists());
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ca-key.pem", "ca.pem", "secrets.key"]);

    // BERTH_PKI_DIR moves the directory.
    let elsewhere = berth.data_dir.path().join("elsewhere");
    run_ok(
        berth
            .cmd(["certs", "init"])
            .env("BERTH_PKI_DIR", &elsewhere),
    );
    assert!(elsewhere.join("ca-key.pem").is_file());
    assert!(elsewhere.join("secrets.key").is_file());
}

/// What the service saw of each request's client: through `peer_identity` on the
/// `tonic::Request` (an interceptor) and through `peer_identity_from_extensions` on the
/// `http::Request` (a wrapping service, where a tower layer would run).
#[derive(Debug, Clone, Default)]
struct Seen {
    tonic: Log,
    http: Log,
}

/// One entry per request: its client's identity, none, or why it had none.
type Log = Arc<Mutex<Vec<Option<Result<Identity, String>>>>>;

fn simplify(id: Option<Result<Identity, tls::TlsError>>) -> Option<Result<Identity, String>> {
    id.map(|r| r.map_err(|e| e.to_string()))
}

/// Records the identity of every HTTP request before passing it on.
#[derive(Debug, Clone)]
struct RecordHttp<S> {
    inner: S,
    seen: Seen,
}

impl<S: NamedService> NamedService for RecordHttp<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for RecordHttp<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let id = simplify(peer_identity_from_extensions(req.extensions()));
        self.seen.http.lock().unwrap().push(id);
        self.inner.call(req)
    }
}

/// A health server on an ephemeral loopback port, stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    seen: Seen,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestServer {
    async fn start(files: &TlsFiles, auth: ClientAuth) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Seen::default();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let record = seen.tonic.clone();
        let intercepted = tonic::service::interceptor::InterceptedService::new(
            health,
            move |req: tonic::Request<()>| {
                record.lock().unwrap().push(simplify(peer_identity(&req)));
                Ok(req)
            },
        );
        let service = RecordHttp {
            inner: intercepted,
            seen: seen.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Server::builder()
            .tls_config(server_config(files, auth).expect("server TLS config"))
            .expect("tonic accepts the TLS config")
            .add_service(service);
        // The listener is bound already, so clients may connect before this task runs.
        tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            seen,
            _stop: stop,
        }
    }

    /// One health check with `tls`. It always dials the server's loopback address; the name
    /// checked against the server's certificate is the config's server name.
    async fn check(&self, tls: ClientTlsConfig) -> Result<(), String> {
        let channel = Endpoint::from_shared(format!("https://{}", self.addr))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("check: {e:?}"))
    }

    fn seen_tonic(&self) -> Vec<Option<Result<Identity, String>>> {
        self.seen.tonic.lock().unwrap().clone()
    }

    fn seen_http(&self) -> Vec<Option<Result<Identity, String>>> {
        self.seen.http.lock().unwrap().clone()
    }
}

fn node_identity() -> Option<Result<Identity, String>> {
    Some(Ok(Identity {
        common_name: "n1".to_string(),
        role: Role::Node,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_admits_only_certificates_from_the_ca() {
    let pki = Pki::new();
    // A second cluster with its own CA, and a node of the same name in it.
    let other = Pki::new();
    // A certificate from the right CA whose validity ended a day ago.
    pki.berth.json([
        "certs",
        "client",
        "old",
        "--backdate-days",
        "3",
        "--days",
        "1",
    ]);

    // So the refusals below are for the reasons named: openssl agrees the old certificate is
    // expired (and otherwise chains), and the other node's does not chain to this CA.
    let ca = pki.dir().join("ca.pem");
    let out = output(
        openssl(&["verify", "-CAfile"])
            .arg(&ca)
            .arg(pki.files(Role::Deployer, "old").cert),
    );
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("expired"), "{text}");
    let out = output(
        openssl(&["verify", "-CAfile"])
            .arg(&ca)
            .arg(other.files(Role::Node, "n1").cert),
    );
    assert!(
        !out.status.success(),
        "the other CA's node cert chains to ours"
    );

    let server_files = pki.files(Role::Scheduler, "sched");
    let server = TestServer::start(&server_files, ClientAuth::Required).await;
    let node = pki.files(Role::Node, "n1");

    // The node connects, by name and by IP address, and the service sees who it is.
    server
        .check(client_config(&node, "localhost").unwrap())
        .await
        .expect("node cert from the CA");
    server
        .check(client_config(&node, "127.0.0.2").unwrap())
        .await
        .expect("by the scheduler's --ip");
    assert_eq!(server.seen_tonic(), vec![node_identity(), node_identity()]);
    assert_eq!(server.seen_http(), vec![node_identity(), node_identity()]);

    let client = pki.files(Role::Deployer, "ci");
    server
        .check(client_config(&client, "localhost").unwrap())
        .await
        .expect("client cert from the CA");
    assert_eq!(
        server.seen_tonic().last(),
        Some(&Some(Ok(Identity {
            common_name: "ci".to_string(),
            role: Role::Deployer
        })))
    );
    let admitted = server.seen_tonic().len();

    // Refused, each before any request reaches the service.
    let foreign = TlsFiles {
        // Trusts our server, presents the other CA's node certificate.
        ca: node.ca.clone(),
        ..other.files(Role::Node, "n1")
    };
    let err = server
        .check(client_config(&foreign, "localhost").unwrap())
        .await
        .expect_err("a cert from another CA");
    eprintln!("foreign CA: {err}");

    let expired = pki.files(Role::Deployer, "old");
    let err = server
        .check(client_config(&expired, "localhost").unwrap())
        .await
        .expect_err("an expired cert");
    eprintln!("expired: {err}");

    let err = server
        .check(client_config_ca_only(&node.ca, "localhost").unwrap())
        .await
        .expect_err("no client cert under Required");
    eprintln!("no cert: {err}");
    assert_eq!(server.seen_tonic().len(), admitted);
    assert_eq!(server.seen_http().len(), admitted);

    // The server is verified too: a client trusting only the other CA refuses it, and so does
    // one dialling a name not in its certificate.
    let err = server
        .check(
            client_config(
                &TlsFiles {
                    ca: other.files(Role::Node, "n1").ca,
                    ..node.clone()
                },
                "localhost",
            )
            .unwrap(),
        )
        .await
        .expect_err("a server from another CA");
    eprintln!("server from another CA: {err}");
    server
        .check(client_config(&node, "n1.example").unwrap())
        .await
        .expect_err("a name the server's certificate does not have");

    // Still serving the good ones after all that.
    server
        .check(client_config(&node, "localhost").unwrap())
        .await
        .expect("node cert again");
    assert_eq!(server.seen_tonic().len(), admitted + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_admits_token_clients_but_still_checks_certificates() {
    let pki = Pki::new();
    let other = Pki::new();
    let server =
        TestServer::start(&pki.files(Role::Scheduler, "sched"), ClientAuth::Optional).await;
    let node = pki.files(Role::Node, "n1");

    server
        .check(client_config_ca_only(&node.ca, "localhost").unwrap())
        .await
        .expect("no client cert under Optional");
    server
        .check(client_config(&node, "localhost").unwrap())
        .await
        .expect("node cert under Optional");
    assert_eq!(server.seen_tonic(), vec![None, node_identity()]);
    assert_eq!(server.seen_http(), vec![None, node_identity()]);

    // A certificate that is offered must still chain to the CA.
    let foreign = TlsFiles {
        ca: node.ca.clone(),
        ..other.files(Role::Node, "n1")
    };
    server
        .check(client_config(&foreign, "localhost").unwrap())
        .await
        .expect_err("a cert from another CA under Optional");
    assert_eq!(server.seen_tonic().len(), 2);
}
