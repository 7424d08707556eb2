//! Authentication and authorization end to end, against real `berth-scheduler` and
//! `berth-agent` processes run with certificates from `berth certs`: calls without credentials,
//! with a certificate from another CA, with an expired certificate or with a token whose role
//! does not allow them are refused and change nothing; tokens are stored hashed; an agent acts
//! only as the node its certificate names; plaintext beyond loopback needs `--insecure`; audit
//! entries name the caller.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_proto::tls::{Role, TlsFiles, client_config, client_config_ca_only};
use berth_proto::v1::agent_service_client::AgentServiceClient;
use berth_proto::v1::deployment_service_client::DeploymentServiceClient;
use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::{
    AgentMessage, ApplyRequest, ApproveRequest, DeleteDeploymentRequest, DeploymentSpec,
    GetDeploymentRequest, Hello, ListContainersRequest, ListDeploymentsRequest, ListNodesRequest,
    RegisterRequest, agent_message,
};
use berth_tests::agent_node::{AgentNode, AgentOptions, unique_node_name};
use berth_tests::cluster::{STORE_ENV, SchedulerProc};
use berth_tests::{Berth, binary, busybox_image, free_loopback_addr, poll_until};
use serde_json::Value;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(90);
const IMAGE: &str = "auth-busybox:1";

/// A CA with a scheduler certificate and admin, deployer and viewer client certificates, in
/// `<data-dir>/pki` of a `berth` of its own.
struct Pki {
    berth: Berth,
}

impl Pki {
    fn new() -> Self {
        let berth = Berth::new();
        berth.json(["certs", "init"]);
        berth.json(["certs", "scheduler", "sched"]);
        for role in ["admin", "deployer", "viewer"] {
            berth.json(["certs", "client", role, "--role", role]);
        }
        Self { berth }
    }

    fn dir(&self) -> PathBuf {
        self.berth.data_dir.path().join("pki")
    }

    fn files(&self, role: Role, name: &str) -> TlsFiles {
        TlsFiles::for_role(&self.dir(), role, name)
    }

    fn client(&self, role: Role) -> TlsFiles {
        self.files(role, role.as_str())
    }

    /// `berth certs ARGS...` in this PKI.
    fn certs(&self, args: &[&str]) {
        let args: Vec<&str> = ["certs"].into_iter().chain(args.iter().copied()).collect();
        self.berth.json(args);
    }

    fn scheduler(&self) -> SchedulerProc {
        SchedulerProc::start_tls(&self.files(Role::Scheduler, "sched"), &[])
    }
}

/// A tokio runtime and raw gRPC clients, to see the exact status of each call.
struct Calls {
    rt: tokio::runtime::Runtime,
}

impl Calls {
    fn new() -> Self {
        Self {
            rt: tokio::runtime::Runtime::new().expect("a tokio runtime"),
        }
    }

    /// A channel to `url` with `tls`, or the transport error (a refused handshake).
    fn channel(&self, url: &str, tls: ClientTlsConfig) -> Result<Channel, String> {
        self.rt.block_on(async {
            Endpoint::from_shared(url.to_string())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .tls_config(tls)
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("{e:?}"))
        })
    }

    fn deploy_client(&self, url: &str, tls: ClientTlsConfig) -> DeploymentServiceClient<Channel> {
        DeploymentServiceClient::new(self.channel(url, tls).expect("connect to the scheduler"))
    }
}

/// `msg` with `authorization: Bearer TOKEN` when there is a token.
fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(token) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    req
}

fn spec(name: &str) -> DeploymentSpec {
    DeploymentSpec {
        name: name.to_string(),
        image: IMAGE.to_string(),
        replicas: 1,
        command: vec!["sleep".into(), "1000".into()],
        ..Default::default()
    }
}

fn host_of(url: &str) -> String {
    let uri: tonic::codegen::http::Uri = url.parse().expect("a URL");
    uri.host().expect("a host").to_string()
}

/// The deployments an admin certificate sees.
fn deployments_as_admin(calls: &Calls, pki: &Pki, sched: &SchedulerProc) -> Vec<String> {
    let url = sched.endpoint();
    let tls = client_config(&pki.client(Role::Admin), &host_of(&url)).unwrap();
    let mut client = calls.deploy_client(&url, tls);
    calls
        .rt
        .block_on(client.list(ListDeploymentsRequest {
            ..Default::default()
        }))
        .expect("list as admin")
        .into_inner()
        .deployments
        .into_iter()
        .map(|d| d.spec.map(|s| s.name).unwrap_or_default())
        .collect()
}

/// `berth ARGS` against `sched` with the PKI's CA and `creds` as environment variables.
fn berth(sched: &SchedulerProc, pki: &Pki, args: &[&str], creds: &[(&str, String)]) -> Output {
    let mut cmd = if args[0] == "token" {
        // `--scheduler` is the token subcommands' flag, one level below where
        // `SchedulerProc::berth` puts it.
        let mut cmd = Command::new(binary("berth"));
        cmd.args(&args[..2])
            .arg("--scheduler")
            .arg(sched.endpoint())
            .args(&args[2..])
            .env_remove("BERTH_SCHEDULER");
        cmd
    } else {
        sched.berth(args)
    };
    cmd.env("BERTH_TLS_CA", pki.dir().join("ca.pem"))
        .env_remove("BERTH_TLS_CERT")
        .env_remove("BERTH_TLS_KEY")
        .env_remove("BERTH_TOKEN")
        .envs(creds.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"))
}

fn as_cert(files: &TlsFiles) -> Vec<(&'static str, String)> {
    vec![
        ("BERTH_TLS_CERT", files.cert.display().to_string()),
        ("BERTH_TLS_KEY", files.key.display().to_string()),
    ]
}

fn as_token(token: &str) -> Vec<(&'static str, String)> {
    vec![("BERTH_TOKEN", token.to_string())]
}

fn ok_json(out: Output, what: &str) -> Value {
    assert!(out.status.success(), "{what}: {out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: bad JSON ({e}): {out:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_refused_unauthenticated(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert!(!status.message().is_empty(), "{what}: a reason is given");
}

fn assert_denied(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    assert!(
        status.message().contains("needs the"),
        "{what}: the reason names the role needed: {status:?}"
    );
}

#[test]
fn calls_without_valid_credentials_are_refused_and_change_nothing() {
    let pki = Pki::new();
    let sched = pki.scheduler();
    let calls = Calls::new();
    let url = sched.endpoint();
    let host = host_of(&url);

    // (a) TLS, but neither a certificate nor a token.
    let mut anonymous = calls.deploy_client(
        &url,
        client_config_ca_only(&pki.dir().join("ca.pem"), &host).unwrap(),
    );
    assert_refused_unauthenticated(
        calls.rt.block_on(anonymous.apply(ApplyRequest {
            spec: Some(spec("anon")),
        })),
        "Apply without credentials",
    );
    assert_refused_unauthenticated(
        calls.rt.block_on(anonymous.list(ListDeploymentsRequest {
            ..Default::default()
        })),
        "List without credentials",
    );
    // Health checks stay open: load balancers and `berth up` probe them.
    let health = tonic_health::pb::health_client::HealthClient::new(
        calls
            .channel(
                &url,
                client_config_ca_only(&pki.dir().join("ca.pem"), &host).unwrap(),
            )
            .unwrap(),
    );
    let mut health = health;
    calls
        .rt
        .block_on(health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }))
        .expect("health is open");
    // The CLI says why, in one line.
    let out = berth(&sched, &pki, &["status"], &[]);
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("no credentials"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // (b) A certificate from another CA: the handshake fails, no call is made.
    let rogue = Berth::new();
    rogue.json(["certs", "init"]);
    rogue.json(["certs", "client", "mallory", "--role", "admin"]);
    let rogue_files = TlsFiles {
        // Trusting the real CA (the server is genuine), presenting a foreign certificate.
        ca: pki.dir().join("ca.pem"),
        ..TlsFiles::for_role(&rogue.data_dir.path().join("pki"), Role::Admin, "mallory")
    };
    let refused = refused_with_cert(&calls, &url, &rogue_files, "rogue");
    assert!(refused, "a certificate from another CA was refused");

    // (c) An expired certificate from the right CA.
    pki.certs(&[
        "client",
        "old",
        "--role",
        "admin",
        "--backdate-days",
        "3",
        "--days",
        "1",
    ]);
    let expired = pki.files(Role::Admin, "old");
    assert!(refused_with_cert(&calls, &url, &expired, "expired"));
    let out = berth(&sched, &pki, &["status"], &as_cert(&expired));
    assert!(!out.status.success(), "an expired certificate: {out:?}");

    // Nothing reached the store.
    assert_eq!(
        deployments_as_admin(&calls, &pki, &sched),
        Vec::<String>::new()
    );
    let log = sched.log();
    assert!(
        log.contains("refused") && log.contains("/berth.v1.DeploymentService/Apply"),
        "refusals are logged with the method:\n{log}"
    );
}

/// Whether an Apply with `files`'s certificate was refused (by the handshake or the call).
fn refused_with_cert(calls: &Calls, url: &str, files: &TlsFiles, name: &str) -> bool {
    let tls = client_config(files, &host_of(url)).unwrap();
    match calls.channel(url, tls) {
        Err(_) => true,
        Ok(channel) => {
            let mut client = DeploymentServiceClient::new(channel);
            let result = calls.rt.block_on(client.apply(ApplyRequest {
                spec: Some(spec(name)),
            }));
            match result {
                Ok(reply) => panic!("{name}: Apply succeeded: {reply:?}"),
                Err(status) => {
                    // A TLS alert after the client's side of the handshake surfaces here.
                    assert_ne!(status.code(), Code::Ok);
                    true
                }
            }
        }
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn tokens_carry_roles_are_revocable_and_stored_hashed() {
    let pki = Pki::new();
    let sched = pki.scheduler();
    let calls = Calls::new();
    let url = sched.endpoint();
    let admin = as_cert(&pki.client(Role::Admin));

    // Only admins manage tokens.
    let out = berth(
        &sched,
        &pki,
        &["token", "create", "--role", "admin"],
        &as_cert(&pki.client(Role::Deployer)),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("permission denied"), "{out:?}");

    let viewer = ok_json(
        berth(
            &sched,
            &pki,
            &[
                "token", "create", "--role", "viewer", "--name", "dash", "-o", "json",
            ],
            &admin,
        ),
        "token create viewer",
    );
    let deployer = ok_json(
        berth(
            &sched,
            &pki,
            &[
                "token", "create", "--role", "deployer", "--name", "ci", "--ttl", "1d", "-o",
                "json",
            ],
            &admin,
        ),
        "token create deployer",
    );
    let viewer_token = viewer["token"].as_str().expect("a token").to_string();
    let deployer_token = deployer["token"].as_str().expect("a token").to_string();
    assert!(viewer_token.starts_with("berth_"), "{viewer}");
    assert_eq!(viewer["role"], "viewer");
    assert_ne!(deployer["expires"], "never");

    let mut anon = calls.deploy_client(
        &url,
        client_config_ca_only(&pki.dir().join("ca.pem"), &host_of(&url)).unwrap(),
    );
    let rt = &calls.rt;

    // A viewer reads...
    rt.block_on(anon.list(req(
        ListDeploymentsRequest {
            ..Default::default()
        },
        Some(&viewer_token),
    )))
    .expect("a viewer lists");
    let status = rt
        .block_on(anon.get(req(
            GetDeploymentRequest {
                name: "web".into(),
                ..Default::default()
            },
            Some(&viewer_token),
        )))
        .expect_err("no deployment yet");
    assert_eq!(status.code(), Code::NotFound, "past auth: {status:?}");
    // ...but changes nothing.
    assert_denied(
        rt.block_on(anon.apply(req(
            ApplyRequest {
                spec: Some(spec("web")),
            },
            Some(&viewer_token),
        ))),
        "viewer Apply",
    );
    assert_denied(
        rt.block_on(anon.delete(req(
            DeleteDeploymentRequest {
                name: "web".into(),
                ..Default::default()
            },
            Some(&viewer_token),
        ))),
        "viewer Delete",
    );
    assert_denied(
        rt.block_on(anon.approve(req(
            ApproveRequest {
                name: "web".into(),
                ..Default::default()
            },
            Some(&viewer_token),
        ))),
        "viewer Approve",
    );
    let specs = tempfile::tempdir().unwrap();
    let file = specs.path().join("web.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"web\"\nimage = \"{IMAGE}\"\nreplicas = 1\ncommand = [\"sleep\", \"1000\"]\n"
        ),
    )
    .unwrap();
    let out = berth(
        &sched,
        &pki,
        &["deploy", "-f", file.to_str().unwrap()],
        &as_token(&viewer_token),
    );
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("permission denied") && err.contains("viewer"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        deployments_as_admin(&calls, &pki, &sched),
        Vec::<String>::new()
    );

    // A deployer deploys.
    let out = berth(
        &sched,
        &pki,
        &["deploy", "-f", file.to_str().unwrap()],
        &as_token(&deployer_token),
    );
    assert!(out.status.success(), "deployer deploy: {out:?}");
    assert_eq!(
        deployments_as_admin(&calls, &pki, &sched),
        vec!["web".to_string()]
    );

    // Listing shows no secret.
    let listed = ok_json(
        berth(&sched, &pki, &["token", "ls", "-o", "json"], &admin),
        "token ls",
    );
    let rows = listed.as_array().expect("an array");
    assert_eq!(rows.len(), 2, "{listed}");
    let text = listed.to_string();
    for token in [&viewer_token, &deployer_token] {
        let secret = token.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "token ls shows a secret: {text}");
    }

    // Revoked and garbage tokens are nobody.
    let id = deployer["id"].as_str().expect("an id");
    let out = berth(&sched, &pki, &["token", "revoke", id], &admin);
    assert!(out.status.success(), "{out:?}");
    assert_refused_unauthenticated(
        rt.block_on(anon.list(req(
            ListDeploymentsRequest {
                ..Default::default()
            },
            Some(&deployer_token),
        ))),
        "a revoked token",
    );
    let forged = format!("berth_{id}_{}", "0".repeat(64));
    for garbage in ["nonsense", "berth_0123456789abcdef_00", forged.as_str()] {
        assert_refused_unauthenticated(
            rt.block_on(anon.list(req(
                ListDeploymentsRequest {
                    ..Default::default()
                },
                Some(garbage),
            ))),
            garbage,
        );
    }
    let out = berth(
        &sched,
        &pki,
        &["status"],
        &as_token("berth_0123456789abcdef_00"),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("unauthenticated"), "{out:?}");

    // The store keeps digests, never secrets.
    if std::env::var(STORE_ENV).as_deref() != Ok("etcd") {
        let db = std::fs::read(sched.data_dir().join("state.redb")).expect("the redb store");
        for token in [&viewer_token, &deployer_token] {
            let secret = token.rsplit('_').next().unwrap().as_bytes();
            assert!(
                !db.windows(secret.len()).any(|w| w == secret),
                "the store holds a token's secret"
            );
        }
    }
}

/// Runs `cmd` to its exit, within `within`; kills it and fails if it keeps running.
fn exits_within(mut cmd: Command, within: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let mut guard = KillOnDrop(Some(child));
    let deadline = Instant::now() + within;
    loop {
        let child = guard.0.as_mut().unwrap();
        if child.try_wait().expect("wait").is_some() {
            return guard.0.take().unwrap().wait_with_output().expect("output");
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} still runs after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process killed (and reaped) when the test ends, also on failure.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tls_flags(files: &TlsFiles) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
        "--tls-ca".into(),
        files.ca.display().to_string(),
    ]
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn agents_act_only_as_their_own_node_and_serve_schedulers_only() {
    berth_tests::require_root();
    let pki = Pki::new();
    let sched = pki.scheduler();
    let calls = Calls::new();
    let url = sched.endpoint();
    let node_a = unique_node_name("auth-a");
    let node_b = unique_node_name("auth-b");
    pki.certs(&["node", &node_a]);
    let a_files = pki.files(Role::Node, &node_a);

    // (e) An agent given node A's certificate but another name does not start.
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary("berth-agent"));
    cmd.args([
        "--scheduler",
        &url,
        "--node-name",
        &node_b,
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data.path())
    .args(tls_flags(&a_files));
    let out = exits_within(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("node {node_a:?}'s")) && err.contains(&node_b),
        "the error names both nodes: {err}"
    );

    // A client holding A's certificate cannot register or open a session as B.
    let tls = client_config(&a_files, &host_of(&url)).unwrap();
    let mut nodes = NodeServiceClient::new(calls.channel(&url, tls).unwrap());
    let status = calls
        .rt
        .block_on(nodes.register(RegisterRequest {
            node_name: node_b.clone(),
            node_address: "127.0.0.1".into(),
            agent_endpoint: "https://127.0.0.1:1".into(),
            ..Default::default()
        }))
        .expect_err("registering as another node");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "certificate for node {node_a} cannot act as node {node_b}"
        )),
        "{status:?}"
    );
    let hello = AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            node_name: node_b.clone(),
            session: 1,
        })),
    };
    let status = calls
        .rt
        .block_on(nodes.session(tokio_stream::iter(vec![hello])))
        .expect_err("a session as another node");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Deployment clients' certificates are no node's.
    let viewer_tls = client_config(&pki.client(Role::Viewer), &host_of(&url)).unwrap();
    let mut as_viewer = NodeServiceClient::new(calls.channel(&url, viewer_tls).unwrap());
    let status = calls
        .rt
        .block_on(as_viewer.register(RegisterRequest {
            node_name: node_b.clone(),
            ..Default::default()
        }))
        .expect_err("a viewer registering");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A correct agent joins over mutual TLS and runs a deployment end to end.
    let data = Berth::new();
    busybox_image(&data, IMAGE);
    let opts = AgentOptions {
        extra_args: [tls_flags(&a_files), vec!["--stop-grace".into(), "1".into()]].concat(),
        ..Default::default()
    };
    let agent = AgentNode::start_for(data, &url, &node_a, opts);
    assert!(
        agent.endpoint_url().starts_with("https://"),
        "{}",
        agent.endpoint_url()
    );
    let admin = as_cert(&pki.client(Role::Admin));
    let listed = poll_until("node A ready", WAIT, || {
        let nodes = ok_json(
            berth(&sched, &pki, &["nodes", "-o", "json"], &admin),
            "nodes",
        );
        let ready = nodes
            .as_array()?
            .iter()
            .any(|n| n["name"] == node_a.as_str() && n["ready"] == true);
        ready.then_some(nodes)
    });
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, vec![node_a.as_str()], "B never registered");

    let token = ok_json(
        berth(
            &sched,
            &pki,
            &["token", "create", "--role", "deployer", "-o", "json"],
            &admin,
        ),
        "token create",
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let specs = tempfile::tempdir().unwrap();
    let file = specs.path().join("echo.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"echo\"\nimage = \"{IMAGE}\"\nreplicas = 1\ncpu = \"100m\"\nmemory = \"32m\"\n\
             command = [\"sh\", \"-c\", \"echo hello-over-mtls; exec sleep 1000\"]\n"
        ),
    )
    .unwrap();
    let out = berth(
        &sched,
        &pki,
        &[
            "deploy",
            "-f",
            file.to_str().unwrap(),
            "--wait",
            "--timeout",
            "120s",
        ],
        &as_token(&token),
    );
    assert!(out.status.success(), "deploy --wait: {out:?}");
    // `berth logs` goes through the scheduler, which dials the agent with its certificate.
    poll_until("the replica's output through the scheduler", WAIT, || {
        let out = berth(&sched, &pki, &["logs", "echo"], &admin);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hello-over-mtls"))
            .then_some(())
    });

    // (g) AgentService admits schedulers and admins only.
    let agent_url = agent.endpoint_url();
    let agent_host = host_of(&agent_url);
    let viewer_tls = client_config(&pki.client(Role::Viewer), &agent_host).unwrap();
    let mut as_viewer = AgentServiceClient::new(calls.channel(&agent_url, viewer_tls).unwrap());
    let status = calls
        .rt
        .block_on(as_viewer.list_containers(ListContainersRequest {}))
        .expect_err("a viewer on the agent");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let admin_tls = client_config(&pki.client(Role::Admin), &agent_host).unwrap();
    let mut as_admin = AgentServiceClient::new(calls.channel(&agent_url, admin_tls).unwrap());
    let listed = calls
        .rt
        .block_on(as_admin.list_containers(ListContainersRequest {}))
        .expect("an admin on the agent")
        .into_inner();
    assert_eq!(listed.containers.len(), 1, "{listed:?}");
    // Without a certificate there is no connection at all.
    let anonymous = client_config_ca_only(&pki.dir().join("ca.pem"), &agent_host).unwrap();
    if let Ok(channel) = calls.channel(&agent_url, anonymous) {
        let mut client = AgentServiceClient::new(channel);
        calls
            .rt
            .block_on(client.list_containers(ListContainersRequest {}))
            .expect_err("no certificate on the agent");
    }
    assert!(
        agent.log().contains("AgentService call refused"),
        "refusals are logged"
    );
    // Nothing about B reached the cluster.
    let mut nodes_list = calls.deploy_client(
        &url,
        client_config(&pki.client(Role::Admin), &host_of(&url)).unwrap(),
    );
    let nodes = calls
        .rt
        .block_on(nodes_list.list_nodes(ListNodesRequest {}))
        .unwrap()
        .into_inner()
        .nodes;
    assert!(nodes.iter().all(|n| n.name != node_b), "{nodes:?}");
    let out = berth(&sched, &pki, &["delete", "echo"], &as_token(&token));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn plaintext_beyond_loopback_needs_insecure() {
    let data = tempfile::tempdir().unwrap();
    // The scheduler.
    let mut cmd = Command::new(binary("berth-scheduler"));
    cmd.args(["--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(data.path());
    let out = exits_within(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:") && err.contains("--insecure"),
        "{err}"
    );
    let port = free_loopback_addr().port();
    let mut cmd = Command::new(binary("berth-scheduler"));
    cmd.args(["--listen", &format!("0.0.0.0:{port}"), "--insecure"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut insecure = KillOnDrop(Some(cmd.spawn().expect("start berth-scheduler")));
    poll_until("the --insecure scheduler to listen", WAIT, || {
        if let Some(status) = insecure.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("berth-scheduler --insecure exited with {status}");
        }
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });

    // The agent, before it touches anything.
    let agent_data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary("berth-agent"));
    cmd.args([
        "--scheduler",
        &format!("http://127.0.0.1:{port}"),
        "--node-name",
        "n1",
        "--listen",
        "0.0.0.0:0",
    ])
    .arg("--data-dir")
    .arg(agent_data.path());
    let out = exits_within(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("refusing to listen on 0.0.0.0:"), "{err}");
    // An https scheduler address without TLS flags is refused up front too.
    let mut cmd = Command::new(binary("berth-agent"));
    cmd.args(["--scheduler", "https://127.0.0.1:1", "--node-name", "n1"])
        .arg("--data-dir")
        .arg(agent_data.path());
    let out = exits_within(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("is https"), "{out:?}");
    // Half the TLS flags is an error naming the missing ones.
    let mut cmd = Command::new(binary("berth-scheduler"));
    cmd.args(["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem"])
        .arg("--data-dir")
        .arg(data.path());
    let out = exits_within(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("--tls-key and --tls-ca are missing"),
        "{out:?}"
    );

    {
        berth_tests::require_root();
        let sched = SchedulerProc::start(&[]);
        let opts = AgentOptions {
            listen: Some("0.0.0.0:0".into()),
            extra_args: vec!["--insecure".into()],
            ..Default::default()
        };
        let agent = AgentNode::start_for(
            Berth::new(),
            &sched.endpoint(),
            &unique_node_name("insecure"),
            opts,
        );
        assert!(
            agent.endpoint().contains(":"),
            "the --insecure agent serves"
        );
    }
}

/// Two TLS schedulers on one etcd: the standby authenticates its callers itself and forwards
/// them to the leader by name and role, so a token works through either scheduler and a
/// viewer is refused at the standby before anything reaches the leader.
#[test]
fn a_standby_checks_callers_and_forwards_who_they_are_to_the_leader() {
    let pki = Pki::new();
    let etcd = berth_tests::etcd::EtcdCluster::start(1);
    let files = pki.files(Role::Scheduler, "sched");
    let mut flags = tls_flags(&files);
    flags.extend(etcd.scheduler_flags("auth-ha", 2));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let first = SchedulerProc::start_exact(&flags);
    poll_until("the first scheduler to lead", WAIT, || {
        first.log().contains("elected leader").then_some(())
    });
    let standby = SchedulerProc::start_exact(&flags);
    assert!(standby.endpoint().starts_with("https://"));

    // An admin certificate creates a deployer and a viewer token through the standby.
    let admin = as_cert(&pki.client(Role::Admin));
    let token = |role: &str| {
        let created = ok_json(
            berth(
                &standby,
                &pki,
                &["token", "create", "--role", role, "-o", "json"],
                &admin,
            ),
            "token create through the standby",
        );
        created["token"].as_str().expect("a token").to_string()
    };
    let (deployer, viewer) = (token("deployer"), token("viewer"));

    let calls = Calls::new();
    let url = standby.endpoint();
    let mut client = calls.deploy_client(
        &url,
        client_config_ca_only(&pki.dir().join("ca.pem"), &host_of(&url)).unwrap(),
    );
    let rt = &calls.rt;
    assert_refused_unauthenticated(
        rt.block_on(client.list(req(
            ListDeploymentsRequest {
                ..Default::default()
            },
            None,
        ))),
        "no credentials at the standby",
    );
    assert_denied(
        rt.block_on(client.apply(req(
            ApplyRequest {
                spec: Some(spec("ha-web")),
            },
            Some(&viewer),
        ))),
        "viewer Apply at the standby",
    );
    assert!(deployments_as_admin(&calls, &pki, &first).is_empty());
    rt.block_on(client.apply(req(
        ApplyRequest {
            spec: Some(spec("ha-web")),
        },
        Some(&deployer),
    )))
    .expect("a deployer applies through the standby");
    assert_eq!(deployments_as_admin(&calls, &pki, &first), ["ha-web"]);
    // Only schedulers may vouch for someone: a viewer certificate claiming to forward an
    // admin is taken for the viewer it is.
    let leader_url = first.endpoint();
    let tls = client_config(&pki.client(Role::Viewer), &host_of(&leader_url)).unwrap();
    let mut forger = calls.deploy_client(&leader_url, tls);
    let mut forged = req(
        DeleteDeploymentRequest {
            name: "ha-web".into(),
            ..Default::default()
        },
        None,
    );
    forged
        .metadata_mut()
        .insert("berth-forwarded-identity", "root;admin".parse().unwrap());
    assert_denied(
        rt.block_on(forger.delete(forged)),
        "a forged forwarded identity",
    );
    assert_eq!(deployments_as_admin(&calls, &pki, &first), ["ha-web"]);
}

/// The audit log under auth: a viewer lists it (`berth audit`, and as events) but cannot
/// write; a deployer token's Apply is recorded under the token's name, a certificate's under
/// its CN.
#[test]
fn audit_entries_name_the_caller_and_viewers_only_read_them() {
    let pki = Pki::new();
    let sched = pki.scheduler();
    let calls = Calls::new();
    let url = sched.endpoint();
    let admin = as_cert(&pki.client(Role::Admin));
    let token = |role: &str, name: &str| {
        let created = ok_json(
            berth(
                &sched,
                &pki,
                &[
                    "token", "create", "--role", role, "--name", name, "-o", "json",
                ],
                &admin,
            ),
            "token create",
        );
        created["token"].as_str().expect("a token").to_string()
    };
    let viewer = token("viewer", "dash");
    let deployer = token("deployer", "ci-pipeline");
    let mut anon = calls.deploy_client(
        &url,
        client_config_ca_only(&pki.dir().join("ca.pem"), &host_of(&url)).unwrap(),
    );
    let rt = &calls.rt;
    assert_denied(
        rt.block_on(anon.apply(req(
            ApplyRequest {
                spec: Some(spec("audited")),
            },
            Some(&viewer),
        ))),
        "viewer Apply",
    );
    rt.block_on(anon.apply(req(
        ApplyRequest {
            spec: Some(spec("audited")),
        },
        Some(&deployer),
    )))
    .expect("a deployer applies");
    let mut cert = calls.deploy_client(
        &url,
        client_config(&pki.client(Role::Deployer), &host_of(&url)).unwrap(),
    );
    rt.block_on(
        cert.scale(tonic::Request::new(berth_proto::v1::ScaleRequest {
            name: "audited".into(),
            replicas: 2,
            ..Default::default()
        })),
    )
    .expect("a deployer certificate scales");

    let listed = ok_json(
        berth(&sched, &pki, &["audit", "-o", "json"], &as_token(&viewer)),
        "viewer audit",
    );
    let entries = listed.as_array().expect("an array");
    let who: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["who"].as_str().unwrap()))
        .collect();
    // The viewer's refused Apply never reached a handler: no entry.
    assert_eq!(
        who,
        [("apply", "ci-pipeline"), ("scale", "deployer")],
        "{listed}"
    );
    let releases = berth(&sched, &pki, &["releases"], &as_token(&viewer));
    assert!(
        releases.status.success(),
        "a viewer lists releases: {releases:?}"
    );
    // Events are Read too: a viewer streams them, the audit entries among them, no token.
    // (Events are written just after the calls return: wait for them.)
    let (events, audited) = poll_until("the audit events", Duration::from_secs(30), || {
        let events = ok_json(
            berth(&sched, &pki, &["events", "-o", "json"], &as_token(&viewer)),
            "viewer events",
        );
        let audited: Vec<String> = events
            .as_array()
            .expect("an array")
            .iter()
            .filter(|e| e["kind"] == "audit")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect();
        (audited.len() >= 2).then_some((events, audited))
    });
    assert!(
        audited.len() == 2
            && audited[0].starts_with("ci-pipeline: apply")
            && audited[1].starts_with("deployer: scale"),
        "{events}"
    );
    let text = events.to_string();
    assert!(!text.contains(&viewer) && !text.contains(&deployer));
}
