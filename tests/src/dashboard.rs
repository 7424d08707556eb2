//! The scheduler's dashboard as the browser tests meet it: a scheduler with its dashboard on
//! a loopback port of the test's own, tokens made through AuthService, a rollout left
//! waiting for approval, and where screenshots go.

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
