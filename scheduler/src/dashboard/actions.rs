//! The dashboard's actions: approve, reject, rollback and scale. Each is a form POST that
//! must carry this session's CSRF token, is refused unless the visitor's role may write (the
//! rule gRPC applies, [`crate::auth::Access::Write`]), and then calls the DeploymentService
//! handler itself, which audits it under the visitor's name. Answers redirect to the
//! deployment's page, so the forms work without JavaScript.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use berth_proto::v1::deployment_service_server::DeploymentService;
use berth_proto::v1::{ApproveRequest, RejectRequest, RollbackRequest, ScaleRequest};

use super::Dashboard;
use super::pages::deployment_url;
use super::session::Visitor;
use super::view::PageError;
use crate::auth::Access;

/// Every action's form: the CSRF token, and the numbers scale and rollback take.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ActionForm {
    csrf: Option<String>,
    /// Scale: the replicas wanted.
    replicas: Option<String>,
    /// Rollback: the revision to return to (empty: the one before).
    to_revision: Option<String>,
}

/// Field `name` as a number; None when absent or empty (an input left blank).
fn number<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, PageError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("`{name}` must be a whole number, not {v:?}"),
            )
        }),
    }
}

pub(crate) async fn act(
    State(d): State<Dashboard>,
    v: Visitor,
    Path((env, name, action)): Path<(String, String, String)>,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Result<Response, PageError> {
    let form = form.map_err(PageError::from_form)?;
    // The role first: a viewer is refused for what it is, whatever its form holds (a viewer
    // signed in by certificate has no form, so no CSRF token, to forge with).
    if !v.can_write() {
        tracing::warn!(
            caller = %v.name(),
            role = %v.role().as_str(),
            action = %action,
            "dashboard: refused"
        );
        let roles: Vec<&str> = Access::Write.roles().iter().map(|r| r.as_str()).collect();
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} ({}) may not {action}: it needs the {} role",
                v.name(),
                v.role().as_str(),
                roles.join(" or ")
            ),
        ));
    }
    v.check_csrf(&d, form.csrf.as_deref())?;
    let (environment, n) = (env.clone(), name.clone());
    match action.as_str() {
        "approve" => {
            let req = ApproveRequest {
                name: n,
                environment,
            };
            d.deploy.approve(v.request(req)).await?;
        }
        "reject" => {
            let req = RejectRequest {
                name: n,
                environment,
            };
            d.deploy.reject(v.request(req)).await?;
        }
        "rollback" => {
            let to_revision = number("to_revision", form.to_revision.as_deref())?.unwrap_or(0);
            let req = RollbackRequest {
                name: n,
                environment,
                to_revision,
            };
            d.deploy.rollback(v.request(req)).await?;
        }
        "scale" => {
            let replicas = number("replicas", form.replicas.as_deref())?.ok_or_else(|| {
                PageError::new(StatusCode::BAD_REQUEST, "scale needs `replicas`, a number")
            })?;
            let req = ScaleRequest {
                name: n,
                environment,
                replicas,
            };
            d.deploy.scale(v.request(req)).await?;
        }
        other => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: approve, reject, rollback or scale"),
            ));
        }
    }
    Ok(Redirect::to(&deployment_url(&env, &name)).into_response())
}
