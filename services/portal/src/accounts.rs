//! Local accounts, for towns without an identity provider (and for
//! `guichet up`): argon2id password hashes in the portal's database, added,
//! disabled and reset with `guichet account …`.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::Utc;
use guichet_platform::auth::Role;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};

use crate::db::entities::account;

/// Wrong passwords in a row before an account is locked (a supervisor or
/// `guichet account reset` unlocks it).
pub const MAX_FAILED_LOGINS: i32 = 10;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no account `{0}`")]
    NotFound(String),
    #[error("an account `{0}` already exists")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

/// Why a login was refused. The page says only "identifiant ou mot de passe
/// incorrect" for the first two, so nobody learns which logins exist.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefused {
    Unknown,
    WrongPassword,
    Disabled,
    Locked,
}

/// What a new account is.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub login: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    pub password: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Check a login: 2 to 64 lower-case letters, digits, `.`, `-` or `_`.
pub fn check_login(login: &str) -> Result<(), AccountError> {
    let ok = (2..=64).contains(&login.len())
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "login",
            "2 to 64 lower-case letters, digits, '.', '-' or '_'",
        ))
    }
}

pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(invalid(
            "password",
            format!("at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

/// Parse `agent,supervisor` into roles (the portal's users are people: not
/// devices or systems).
pub fn parse_roles(text: &str) -> Result<Vec<Role>, AccountError> {
    let mut roles = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let role: Role = part.parse().map_err(|e: String| invalid("roles", e))?;
        if !role.is_person() {
            return Err(invalid(
                "roles",
                format!("`{}` is for devices and systems, not people", role.as_str()),
            ));
        }
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(invalid("roles", "at least one of agent, supervisor, admin"));
    }
    Ok(roles)
}

pub fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_groups(text: &str) -> Vec<String> {
    let mut groups: Vec<String> = text
        .split(',')
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

fn hash(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| invalid("password", e.to_string()))
}

fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash nobody's password matches, verified for unknown logins so they
/// take as long as known ones.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password never used").unwrap_or_default())
}

pub async fn find(
    db: &DatabaseConnection,
    login: &str,
) -> Result<Option<account::Model>, sea_orm::DbErr> {
    account::Entity::find()
        .filter(account::Column::Login.eq(login))
        .one(db)
        .await
}

pub async fn list(db: &DatabaseConnection) -> Result<Vec<account::Model>, sea_orm::DbErr> {
    use sea_orm::QueryOrder;
    account::Entity::find()
        .order_by_asc(account::Column::Login)
        .all(db)
        .await
}

/// Add an account.
pub async fn add(db: &DatabaseConnection, new: NewAccount) -> Result<account::Model, AccountError> {
    check_login(&new.login)?;
    check_password(&new.password)?;
    if new.display_name.trim().is_empty() {
        return Err(invalid("display_name", "must not be empty"));
    }
    if new.roles.is_empty() || new.roles.iter().any(|r| !r.is_person()) {
        return Err(invalid("roles", "at least one of agent, supervisor, admin"));
    }
    if find(db, &new.login).await?.is_some() {
        return Err(AccountError::Exists(new.login));
    }
    let now = Utc::now();
    let model = account::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        login: Set(new.login.clone()),
        display_name: Set(new.display_name.trim().to_owned()),
        password_hash: Set(hash(&new.password)?),
        roles: Set(roles_text(&new.roles)),
        groups: Set(new.groups.join(",")),
        disabled: Set(false),
        failed_logins: Set(0),
        create_time: Set(now),
        update_time: Set(now),
    };
    match model.insert(db).await {
        Ok(m) => Ok(m),
        // Two adds at once: the unique login decides.
        Err(e) if find(db, &new.login).await?.is_some() => {
            tracing::debug!(error = %e, "account added concurrently");
            Err(AccountError::Exists(new.login))
        }
        Err(e) => Err(e.into()),
    }
}

/// Enable or disable an account; disabling also ends its sessions.
pub async fn set_disabled(
    db: &DatabaseConnection,
    login: &str,
    disabled: bool,
) -> Result<account::Model, AccountError> {
    let found = find(db, login)
        .await?
        .ok_or_else(|| AccountError::NotFound(login.to_owned()))?;
    let id = found.id.clone();
    let mut model: account::ActiveModel = found.into();
    model.disabled = Set(disabled);
    model.update_time = Set(Utc::now());
    let updated = model.update(db).await?;
    if disabled {
        crate::session::end_all(db, &id).await?;
    }
    Ok(updated)
}

/// Set a new password (and unlock the account); ends its sessions.
pub async fn reset_password(
    db: &DatabaseConnection,
    login: &str,
    password: &str,
) -> Result<account::Model, AccountError> {
    check_password(password)?;
    let found = find(db, login)
        .await?
        .ok_or_else(|| AccountError::NotFound(login.to_owned()))?;
    let id = found.id.clone();
    let mut model: account::ActiveModel = found.into();
    model.password_hash = Set(hash(password)?);
    model.failed_logins = Set(0);
    model.update_time = Set(Utc::now());
    let updated = model.update(db).await?;
    crate::session::end_all(db, &id).await?;
    Ok(updated)
}

/// Check a login and password.
pub async fn authenticate(
    db: &DatabaseConnection,
    login: &str,
    password: &str,
) -> Result<Result<account::Model, LoginRefused>, sea_orm::DbErr> {
    let login = login.trim().to_lowercase();
    let Some(found) = find(db, &login).await? else {
        let _ = verify(password, decoy_hash());
        return Ok(Err(LoginRefused::Unknown));
    };
    if found.failed_logins >= MAX_FAILED_LOGINS {
        return Ok(Err(LoginRefused::Locked));
    }
    let good = verify(password, &found.password_hash);
    if found.disabled {
        return Ok(Err(LoginRefused::Disabled));
    }
    let failed = if good { 0 } else { found.failed_logins + 1 };
    if failed != found.failed_logins {
        let mut model: account::ActiveModel = found.clone().into();
        model.failed_logins = Set(failed);
        model.update(db).await?;
    }
    if good {
        Ok(Ok(found))
    } else if failed >= MAX_FAILED_LOGINS {
        Ok(Err(LoginRefused::Locked))
    } else {
        Ok(Err(LoginRefused::WrongPassword))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_logins_are_checked() {
        assert!(check_login("marie.durand").is_ok());
        assert!(check_login("Marie").is_err());
        assert!(check_login("a").is_err());
        assert!(parse_roles("agent, supervisor").unwrap().len() == 2);
        assert!(parse_roles("service").is_err());
        assert!(parse_roles("").is_err());
        assert!(parse_roles("chef").is_err());
        assert_eq!(
            parse_groups("social, ,etat-civil,social"),
            ["etat-civil", "social"]
        );
        assert!(check_password("court").is_err());
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let h = hash("un mot de passe assez long").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("un mot de passe assez long", &h));
        assert!(!verify("un autre mot de passe long", &h));
        assert!(!verify("anything", "not a hash"));
    }
}
