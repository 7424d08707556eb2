//! Bearer tokens: `berth_<id>_<secret>`, created by admins through AuthService. The store keeps
//! `/tokens/<id>` with the role, name, times and the SHA-256 of the secret, never the secret:
//! a check looks the id up and compares digests in constant time.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::tls::Role;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Caller, Via};
use crate::clock::now_ms;
use crate::error::SchedError;
use crate::records::{self, TOKENS, TokenRecord, token_key};
use crate::store::{Expect, Store};

const PREFIX: &str = "berth_";
/// Random bytes in an id (hex in the token): enough that ids never collide in practice.
const ID_BYTES: usize = 8;
/// Random bytes in a secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;

/// The token records in a store.
#[derive(Debug, Clone)]
pub struct Tokens {
    store: Arc<dyn Store>,
}

/// A token just created: the only time its full text exists outside the caller.
#[derive(Debug, Clone)]
pub struct Created {
    pub record: TokenRecord,
    pub token: String,
}

impl Tokens {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// A new token of `role` (admin, deployer or viewer) for `name`, expiring after `ttl`
    /// (None: never; at least a second).
    pub async fn create(
        &self,
        role: &str,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<Created, SchedError> {
        let role: Role = role.parse().map_err(|e: berth_proto::tls::UnknownRole| {
            SchedError::invalid("role", e.to_string())
        })?;
        if !matches!(role, Role::Admin | Role::Deployer | Role::Viewer) {
            return Err(SchedError::invalid(
                "role",
                format!(
                    "tokens are for admin, deployer or viewer, not {role} (which use certificates)"
                ),
            ));
        }
        if name.len() > 128 || name.chars().any(char::is_control) {
            return Err(SchedError::invalid(
                "name",
                "at most 128 characters, none of them control characters",
            ));
        }
        let ttl_ms = match ttl {
            None => None,
            Some(ttl) if ttl < Duration::from_secs(1) => {
                return Err(SchedError::invalid(
                    "ttl_ms",
                    format!(
                        "{} ms is under one second: a token lives at least 1 s (0: never)",
                        ttl.as_millis()
                    ),
                ));
            }
            Some(ttl) => Some(
                i64::try_from(ttl.as_millis())
                    .map_err(|_| SchedError::invalid("ttl_ms", "too large"))?,
            ),
        };
        let id = hex::encode(random::<ID_BYTES>()?);
        let secret = hex::encode(random::<SECRET_BYTES>()?);
        let now = now_ms();
        let record = TokenRecord {
            id: id.clone(),
            role: role.as_str().to_string(),
            name: if name.is_empty() {
                format!("token-{id}")
            } else {
                name.to_string()
            },
            created_at_ms: now,
            expires_at_ms: ttl_ms.map_or(0, |ttl| now.saturating_add(ttl)),
            secret_sha256: digest(&secret),
        };
        // Absent: a colliding id must not overwrite someone else's token.
        self.store
            .put(&token_key(&id), records::encode(&record), Expect::Absent)
            .await?;
        Ok(Created {
            token: format!("{PREFIX}{id}_{secret}"),
            record,
        })
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, SchedError> {
        let (kvs, _) = self.store.list(TOKENS).await?;
        kvs.iter()
            .map(|kv| records::decode::<TokenRecord>(&kv.key, &kv.value))
            .collect()
    }

    /// Deletes the token `id`; NotFound if there is none.
    pub async fn revoke(&self, id: &str) -> Result<(), SchedError> {
        let not_found = || SchedError::NotFound {
            what: format!("token {id}"),
        };
        if !is_id(id) {
            return Err(not_found());
        }
        let key = token_key(id);
        let kv = self.store.get(&key).await?.ok_or_else(not_found)?;
        self.store
            .delete(&key, Expect::Revision(kv.mod_revision))
            .await?;
        Ok(())
    }

    /// The caller a presented token stands for. `Err(SchedError::Unauthenticated)` with the
    /// reason for a malformed, unknown (or revoked), wrong or expired token; other errors are
    /// the store's.
    pub async fn verify(&self, token: &str) -> Result<Caller, SchedError> {
        let bad = |why: &str| SchedError::Unauthenticated(format!("bearer token: {why}"));
        let (id, secret) = token
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(id, secret)| is_id(id) && !secret.is_empty())
            .ok_or_else(|| bad("not a berth token (berth_<id>_<secret>)"))?;
        let key = token_key(id);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| bad(&format!("token {id} does not exist (revoked?)")))?;
        let record: TokenRecord = records::decode(&key, &kv.value)?;
        // Equal-length hex digests compared in constant time: timing says nothing about
        // how much of a guessed secret was right.
        let presented = digest(secret);
        if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            return Err(bad(&format!("wrong secret for token {id}")));
        }
        if record.expires_at_ms != 0 && now_ms() >= record.expires_at_ms {
            return Err(bad(&format!("token {id} has expired")));
        }
        let role: Role = record.role.parse().map_err(|_| SchedError::Corrupt {
            key: key.clone(),
            reason: format!("unknown role {:?}", record.role),
        })?;
        Ok(Caller {
            name: record.name,
            role,
            via: Via::Token { id: record.id },
        })
    }
}

/// 16 lower-case hex digits: also keeps anything else out of the store key.
fn is_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random<const N: usize>() -> Result<[u8; N], SchedError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        SchedError::FailedPrecondition(format!("the system's random number generator: {e}"))
    })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use berth_proto::v1::CreateTokenRequest;

    use super::*;
    use crate::grpc::auth::requested_ttl;
    use crate::store::redb::RedbStore;

    fn tokens() -> (tempfile::TempDir, Tokens) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        (dir, Tokens::new(Arc::new(store)))
    }

    #[tokio::test]
    async fn created_tokens_verify_and_revoked_ones_do_not() {
        let (_dir, tokens) = tokens();
        let created = tokens.create("viewer", "ci", None).await.unwrap();
        assert!(created.token.starts_with("berth_"));
        let secret = created.token.rsplit('_').next().unwrap();
        assert_eq!(secret.len(), SECRET_BYTES * 2);
        assert_ne!(created.record.secret_sha256, secret);
        let caller = tokens.verify(&created.token).await.unwrap();
        assert_eq!(caller.role, Role::Viewer);
        assert_eq!(caller.name, "ci");

        let wrong = format!("{}0", &created.token[..created.token.len() - 1]);
        let wrong = if wrong == created.token {
            format!("{}1", &created.token[..created.token.len() - 1])
        } else {
            wrong
        };
        let err = tokens.verify(&wrong).await.unwrap_err();
        assert!(matches!(err, SchedError::Unauthenticated(_)), "{err}");
        for garbage in ["", "berth_", "berth_zz_x", "Bearer x", "berth_../../x_y"] {
            let err = tokens.verify(garbage).await.unwrap_err();
            assert!(
                matches!(err, SchedError::Unauthenticated(_)),
                "{garbage}: {err}"
            );
        }

        tokens.revoke(&created.record.id).await.unwrap();
        let err = tokens.verify(&created.token).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(matches!(
            tokens.revoke(&created.record.id).await,
            Err(SchedError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn only_client_roles_get_tokens() {
        let (_dir, tokens) = tokens();
        for role in ["node", "scheduler", "root", ""] {
            assert!(matches!(
                tokens.create(role, "x", None).await,
                Err(SchedError::InvalidArgument { .. })
            ));
        }
        assert!(tokens.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let (_dir, tokens) = tokens();
        let created = tokens
            .create("admin", "", Some(Duration::from_secs(1)))
            .await
            .unwrap();
        let key = token_key(&created.record.id);
        let mut record = created.record.clone();
        record.expires_at_ms = now_ms() - 1;
        tokens
            .store
            .put(&key, records::encode(&record), Expect::Any)
            .await
            .unwrap();
        let err = tokens.verify(&created.token).await.unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[tokio::test]
    async fn sub_second_ttls_are_refused_not_made_eternal() {
        let (_dir, tokens) = tokens();
        for ms in [1, 500, 999] {
            let req = CreateTokenRequest {
                role: "viewer".into(),
                name: "short".into(),
                ttl_seconds: 0,
                ttl_ms: ms,
            };
            let err = tokens
                .create(&req.role, &req.name, requested_ttl(&req))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, SchedError::InvalidArgument { .. }),
                "{ms}: {err}"
            );
            assert!(err.to_string().contains("under one second"), "{err}");
        }
        assert!(tokens.list().await.unwrap().is_empty());
        let req = CreateTokenRequest {
            role: "viewer".into(),
            name: "short".into(),
            ttl_seconds: 1,
            ttl_ms: 1500,
        };
        let created = tokens
            .create(&req.role, &req.name, requested_ttl(&req))
            .await
            .unwrap();
        assert_eq!(
            created.record.expires_at_ms - created.record.created_at_ms,
            1500
        );
        let never = CreateTokenRequest::default();
        assert_eq!(requested_ttl(&never), None);
    }
}
