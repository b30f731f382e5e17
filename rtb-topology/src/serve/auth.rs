//! Bearer tokens and roles of `rtb serve`.
//!
//! A token file has one `TOKEN ROLE` pair a line (`#` starts a comment line; blank lines are skipped);
//! a role is `admin`, `ingest` or `advertiser:{id}`. Without a file the server makes a one-time
//! development set (one `admin`, one `ingest` token) and prints it at start.
//!
//! Every `/v1` request passes [`require_token`]: no `Authorization: Bearer …` header, or a token not in
//! the set, is answered 401 (with `WWW-Authenticate: Bearer`); the caller's [`Role`] is then put in the
//! request's extensions for the handler, which answers 403 when the role may not do what is asked.
//! Tokens are compared in constant time.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::api::ApiError;
use crate::error::{Error, Result};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Campaign approval, every advertiser's data, advertisers and campaigns.
    Admin,
    /// One advertiser's own campaigns, balance, ledger and metrics.
    Advertiser(String),
    /// The events routes (and the rankings read of the ad-serving path).
    Ingest,
}

impl Role {
    /// Parses `admin`, `ingest` or `advertiser:{id}`.
    pub fn parse(s: &str) -> std::result::Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "ingest" => Ok(Role::Ingest),
            _ => match s.strip_prefix("advertiser:") {
                Some(id) if !id.is_empty() => Ok(Role::Advertiser(id.to_string())),
                Some(_) => Err("`advertiser:` needs an advertiser id, as in `advertiser:advertiser_1`".into()),
                None => Err(format!("unknown role `{s}` (expected admin, ingest or advertiser:{{id}})")),
            },
        }
    }

    /// 403 unless admin.
    pub fn admin(&self) -> std::result::Result<(), ApiError> {
        match self {
            Role::Admin => Ok(()),
            _ => Err(ApiError::forbidden(format!("{self} may not do this: it needs the admin role"))),
        }
    }

    /// 403 unless admin or the advertiser `id` itself.
    pub fn advertiser(&self, id: &str) -> std::result::Result<(), ApiError> {
        match self {
            Role::Admin => Ok(()),
            Role::Advertiser(me) if me == id => Ok(()),
            _ => Err(ApiError::forbidden(format!("{self} may not access advertiser `{id}`"))),
        }
    }

    /// 403 unless ingest.
    pub fn ingest(&self) -> std::result::Result<(), ApiError> {
        match self {
            Role::Ingest => Ok(()),
            _ => Err(ApiError::forbidden(format!("{self} may not post events: it needs the ingest role"))),
        }
    }

    /// 403 for an advertiser (rankings show every competitor's bid and price).
    pub fn serving(&self) -> std::result::Result<(), ApiError> {
        match self {
            Role::Admin | Role::Ingest => Ok(()),
            Role::Advertiser(_) => Err(ApiError::forbidden(format!(
                "{self} may not read rankings: they show other advertisers' bids (admin or ingest only)"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Ingest => f.write_str("ingest"),
            Role::Advertiser(id) => write!(f, "advertiser:{id}"),
        }
    }
}

/// The accepted tokens.
#[derive(Clone)]
pub struct Tokens {
    entries: Arc<Vec<(Vec<u8>, Role)>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        f.debug_struct("Tokens").field("count", &self.entries.len()).finish()
    }
}

impl Tokens {
    /// Reads a token file (`TOKEN ROLE` a line); errors name the file and line.
    pub fn from_file(path: &Path) -> Result<Tokens> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Run(format!("token file {}: {e}", path.display())))?;
        Tokens::parse(&text).map_err(|e| Error::Run(format!("token file {}: {e}", path.display())))
    }

    /// Parses the token file format.
    pub fn parse(text: &str) -> std::result::Result<Tokens, String> {
        let mut entries: Vec<(Vec<u8>, Role)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(role), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `TOKEN ROLE`", i + 1));
            };
            let role = Role::parse(role).map_err(|e| format!("line {}: {e}", i + 1))?;
            if token.len() < 16 {
                return Err(format!("line {}: a token must be at least 16 characters long", i + 1));
            }
            if entries.iter().any(|(t, _)| t == token.as_bytes()) {
                return Err(format!("line {}: the token is listed twice", i + 1));
            }
            entries.push((token.as_bytes().to_vec(), role));
        }
        if entries.is_empty() {
            return Err("no tokens".to_string());
        }
        Ok(Tokens { entries: Arc::new(entries) })
    }

    /// A fresh random development set: one `admin` and one `ingest` token.
    pub fn development() -> Tokens {
        let make = || {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            let bytes: [u8; 16] = rng.gen();
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        Tokens {
            entries: Arc::new(vec![
                (format!("dev-admin-{}", make()).into_bytes(), Role::Admin),
                (format!("dev-ingest-{}", make()).into_bytes(), Role::Ingest),
            ]),
        }
    }

    /// Every `(token, role)`, for printing the development set.
    pub fn list(&self) -> impl Iterator<Item = (String, &Role)> {
        self.entries.iter().map(|(t, r)| (String::from_utf8_lossy(t).into_owned(), r))
    }

    /// The role of `token` (constant time in the token's content).
    pub fn role(&self, token: &[u8]) -> Option<Role> {
        let mut found = None;
        for (t, role) in self.entries.iter() {
            if bool::from(t.as_slice().ct_eq(token)) && found.is_none() {
                found = Some(role.clone());
            }
        }
        found
    }
}

/// Middleware: 401 without a known bearer token, else the [`Role`] goes into the request's extensions.
pub async fn require_token(State(tokens): State<Tokens>, mut req: Request, next: Next) -> Response {
    let unauthorized = |msg: &str| {
        let mut r = ApiError::unauthorized(msg).into_response();
        r.headers_mut().insert(WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        r
    };
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return unauthorized("missing `Authorization: Bearer <token>` header");
    };
    let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return unauthorized("the Authorization header must be `Bearer <token>`");
    };
    let Some(role) = tokens.role(token.trim_ascii()) else {
        return unauthorized("unknown token");
    };
    req.extensions_mut().insert(role);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_parse_into_roles_and_errors_name_the_line() {
        let t = Tokens::parse("# comment\n\nadmin-token-0123456789 admin\nadv-token-0123456789 advertiser:a1\n")
            .expect("valid");
        assert_eq!(t.role(b"admin-token-0123456789"), Some(Role::Admin));
        assert_eq!(t.role(b"adv-token-0123456789"), Some(Role::Advertiser("a1".into())));
        assert_eq!(t.role(b"nope"), None);
        let e = Tokens::parse("admin-token-0123456789 admin\nx-token-01234567890 boss\n").expect_err("bad role");
        assert!(e.contains("line 2") && e.contains("boss"), "{e}");
        assert!(Tokens::parse("short admin").expect_err("short").contains("16"));
        assert!(Tokens::parse("admin-token-0123456789 advertiser:").is_err());
        assert!(Tokens::parse("").is_err());
    }

    #[test]
    fn development_tokens_differ_per_start() {
        let a: Vec<String> = Tokens::development().list().map(|(t, _)| t).collect();
        let b: Vec<String> = Tokens::development().list().map(|(t, _)| t).collect();
        assert_ne!(a, b);
        assert_eq!(a.len(), 2);
    }
}
