//! Server-side sessions: the cookie holds a random secret, the table its
//! SHA-256 with who is signed in, their CSRF token and when the session
//! ends (inactivity or age). Logging out ends the session; disabling an
//! account or resetting its password ends all of its sessions.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use guichet_platform::auth::{Authenticator, Role};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use sha2::{Digest, Sha256};

use crate::db::entities::session;

/// The session cookie.
pub const COOKIE: &str = "guichet_session";
/// The login form's CSRF cookie (before a session exists).
pub const LOGIN_COOKIE: &str = "guichet_login";

/// A session is touched at most this often (one UPDATE per minute, not per
/// page).
const TOUCH_EVERY_SECS: i64 = 60;

/// Who is signed in.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the cookie secret (the row's id).
    pub id: String,
    /// The agent's id as the roles know it (the token subject).
    pub subject: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    /// `local` or `oidc`.
    pub kind: String,
    /// The provider's token (oidc), passed to the roles as is.
    pub bearer: String,
    pub csrf: String,
}

impl Session {
    pub fn has(&self, role: Role) -> bool {
        guichet_platform::auth::Principal {
            subject: self.subject.clone(),
            roles: self.roles.clone(),
            groups: self.groups.clone(),
            audience: String::new(),
        }
        .has(role)
    }

    /// The bearer token for a call to a role on this agent's behalf: the
    /// provider's own token, or (local accounts) one the portal signs with
    /// the shared key, short-lived.
    pub fn token(&self, auth: &Authenticator, ttl: Duration) -> String {
        if self.kind == "oidc" && !self.bearer.is_empty() {
            self.bearer.clone()
        } else {
            auth.issue(&self.subject, &self.roles, &self.groups, ttl)
        }
    }
}

/// A new random secret, URL-safe.
pub fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn digest(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a new session is for.
pub struct NewSession {
    pub subject: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    pub kind: &'static str,
    pub bearer: String,
    pub bearer_expire_time: Option<DateTime<Utc>>,
}

/// Start a session; returns the cookie's secret.
pub async fn create(
    db: &DatabaseConnection,
    new: NewSession,
    now: DateTime<Utc>,
    max_age: chrono::Duration,
) -> Result<String, sea_orm::DbErr> {
    let secret = random_token();
    let mut expire = now + max_age;
    if let Some(t) = new.bearer_expire_time {
        expire = expire.min(t);
    }
    session::ActiveModel {
        id: Set(digest(&secret)),
        subject: Set(new.subject),
        display_name: Set(new.display_name),
        roles: Set(crate::accounts::roles_text(&new.roles)),
        groups: Set(new.groups.join(",")),
        kind: Set(new.kind.to_owned()),
        bearer: Set(new.bearer),
        bearer_expire_time: Set(new.bearer_expire_time),
        csrf: Set(random_token()),
        create_time: Set(now),
        last_seen_time: Set(now),
        expire_time: Set(expire),
    }
    .insert(db)
    .await?;
    Ok(secret)
}

/// The live session behind a cookie secret, touched; `None` when unknown,
/// idle too long or past its end (and then deleted).
pub async fn load(
    db: &DatabaseConnection,
    secret: &str,
    now: DateTime<Utc>,
    idle: chrono::Duration,
) -> Result<Option<Session>, sea_orm::DbErr> {
    let id = digest(secret);
    let Some(row) = session::Entity::find_by_id(id.clone()).one(db).await? else {
        return Ok(None);
    };
    if row.expire_time <= now || row.last_seen_time + idle <= now {
        session::Entity::delete_by_id(id).exec(db).await?;
        return Ok(None);
    }
    if (now - row.last_seen_time).num_seconds() >= TOUCH_EVERY_SECS {
        let mut model: session::ActiveModel = row.clone().into();
        model.last_seen_time = Set(now);
        model.update(db).await?;
    }
    Ok(Some(Session {
        id: row.id,
        subject: row.subject,
        display_name: row.display_name,
        roles: row
            .roles
            .split(',')
            .filter_map(|r| r.parse().ok())
            .collect(),
        groups: crate::accounts::parse_groups(&row.groups),
        kind: row.kind,
        bearer: row.bearer,
        csrf: row.csrf,
    }))
}

/// End one session (logout).
pub async fn end(db: &DatabaseConnection, id: &str) -> Result<(), sea_orm::DbErr> {
    session::Entity::delete_by_id(id.to_owned())
        .exec(db)
        .await?;
    Ok(())
}

/// End every session of `subject` ("logout everywhere", a disabled account).
pub async fn end_all(db: &DatabaseConnection, subject: &str) -> Result<u64, sea_orm::DbErr> {
    let res = session::Entity::delete_many()
        .filter(session::Column::Subject.eq(subject))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Delete sessions past their end or idle too long, and stale login flows.
pub async fn purge(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    idle: chrono::Duration,
) -> Result<u64, sea_orm::DbErr> {
    use sea_orm::Condition;
    let res = session::Entity::delete_many()
        .filter(
            Condition::any()
                .add(session::Column::ExpireTime.lte(now))
                .add(session::Column::LastSeenTime.lte(now - idle)),
        )
        .exec(db)
        .await?;
    crate::db::entities::login_flow::Entity::delete_many()
        .filter(
            crate::db::entities::login_flow::Column::CreateTime
                .lte(now - chrono::Duration::minutes(15)),
        )
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the OIDC redirect back is
/// a top-level GET), Secure behind HTTPS; `max_age` None: a browser-session
/// cookie; Some(0): delete.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<i64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

/// Add a `Set-Cookie` of [`set_cookie`] to `response`.
pub fn add_cookie(
    response: &mut axum::response::Response,
    name: &str,
    value: &str,
    secure: bool,
    max_age: Option<i64>,
) {
    // Names and values are ours (base64url, urlencoded): always valid.
    if let Ok(v) = http::HeaderValue::from_str(&set_cookie(name, value, secure, max_age)) {
        response.headers_mut().append(http::header::SET_COOKIE, v);
    }
}

/// Whether two secrets are equal, in constant time.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; guichet_session=abc".parse().unwrap(),
        );
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(set_cookie(COOKIE, "x", true, Some(0)).contains("Secure; Max-Age=0"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
        assert_ne!(random_token(), random_token());
    }
}
