//! The national anti-duplicate API ("API de coordination" of the ANTS):
//! every passport/ID appointment is declared with its pre-application
//! numbers and deleted when cancelled. There is no update call, so a
//! reschedule is a delete then a declare. Pluggable: disabled when no base
//! URL is configured; tests point it at a local stand-in.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// What the national API knows of an appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntsAppointment {
    pub application_id: String,
    pub meeting_point: String,
    pub meeting_point_id: String,
    /// Paris local time, `YYYY-MM-DDTHH:MM:SS`.
    pub appointment_date: String,
    pub management_url: String,
}

#[async_trait]
pub trait Coordination: Send + Sync {
    async fn declare(&self, a: &AntsAppointment) -> Result<(), String>;
    async fn delete(&self, a: &AntsAppointment) -> Result<(), String>;
}

/// Nothing configured: nothing to tell.
pub struct Disabled;

#[async_trait]
impl Coordination for Disabled {
    async fn declare(&self, _: &AntsAppointment) -> Result<(), String> {
        Ok(())
    }
    async fn delete(&self, _: &AntsAppointment) -> Result<(), String> {
        Ok(())
    }
}

/// The HTTP client: `POST {base}/appointments` and `DELETE
/// {base}/appointments` with query parameters, authenticated by the
/// `x-rdv-opt-auth-token` header.
pub struct Http {
    base: String,
    token: SecretString,
    client: reqwest::Client,
}

pub const TOKEN_HEADER: &str = "x-rdv-opt-auth-token";

impl Http {
    pub fn new(base: &str, token: SecretString) -> Http {
        Http {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        a: &AntsAppointment,
        with_url: bool,
    ) -> Result<(), String> {
        let mut q = vec![
            ("application_id", a.application_id.as_str()),
            ("meeting_point", a.meeting_point.as_str()),
            ("meeting_point_id", a.meeting_point_id.as_str()),
            ("appointment_date", a.appointment_date.as_str()),
        ];
        if with_url {
            q.push(("management_url", a.management_url.as_str()));
        }
        let res = self
            .client
            .request(method, format!("{}/appointments", self.base))
            .header(TOKEN_HEADER, self.token.expose_secret())
            .query(&q)
            .send()
            .await
            .map_err(|e| format!("coordination API unreachable: {e}"))?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("coordination API answered {}", res.status()))
        }
    }
}

#[async_trait]
impl Coordination for Http {
    async fn declare(&self, a: &AntsAppointment) -> Result<(), String> {
        self.call(reqwest::Method::POST, a, true).await
    }
    async fn delete(&self, a: &AntsAppointment) -> Result<(), String> {
        self.call(reqwest::Method::DELETE, a, false).await
    }
}
