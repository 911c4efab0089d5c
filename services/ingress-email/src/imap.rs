//! The IMAP poller: fetches new messages of a mailbox by UID, hands each to
//! [`EmailApi::accept`], and only once its intake event is held by JetStream
//! moves it to the processed folder (MOVE, else COPY + `\Deleted` +
//! EXPUNGE). Nothing is ever deleted before that. The mailbox's
//! UIDVALIDITY and last UID are kept in the database; a message fetched
//! again (a crash between publication and move, a new UIDVALIDITY) is
//! recognised by its Message-ID and only moved.
//!
//! IDLE is used when the server offers it (woken by the server, at most
//! `poll_interval_ms` apart), else the mailbox is polled at that interval.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::db::entities::imap_state;
use crate::{EmailApi, Source};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// Messages fetched per round.
const BATCH: usize = 20;

/// The pause before reconnecting after `failures` failures in a row:
/// 400 ms doubling up to 25.6 s (backon's exponential backoff).
fn reconnect_pause(failures: u32) -> Duration {
    use backon::BackoffBuilder;
    let cap = Duration::from_millis(25_600);
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(400))
        .with_max_delay(cap)
        .with_factor(2.0)
        .without_max_times()
        .build()
        .nth(failures.saturating_sub(1) as usize)
        // Whole milliseconds: the float factor leaves nanosecond dust.
        .map(|d| Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
        .unwrap_or(cap)
}

/// Poll until shutdown; connection failures are retried with backoff.
pub async fn run(api: EmailApi, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match connect(&api).await {
            Ok(session) => {
                tracing::info!("imap connected");
                match poll_loop(&api, session, &shutdown, &mut failures).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        metrics::counter!("guichet_email_imap_errors_total").increment(1);
                        tracing::warn!(error = %e, "imap session failed, reconnecting");
                    }
                }
            }
            Err(e) => {
                metrics::counter!("guichet_email_imap_errors_total").increment(1);
                tracing::warn!(error = %e, "imap connection failed, will retry");
            }
        }
        failures += 1;
        let pause = reconnect_pause(failures);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    Ok(())
}

async fn connect(api: &EmailApi) -> anyhow::Result<Session> {
    let c = &api.config.imap;
    let tcp = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::net::TcpStream::connect((c.host.as_str(), c.port)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let io: Box<dyn Io> = if c.security == "tls" {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !c.ca_file.as_os_str().is_empty() {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            for cert in CertificateDer::pem_file_iter(&c.ca_file)? {
                roots.add(cert?)?;
            }
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(c.host.clone())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut client = async_imap::Client::new(io);
    let _greeting = client
        .read_response()
        .await?
        .ok_or_else(|| anyhow::anyhow!("server closed before greeting"))?;
    let session = client
        .login(&c.username, c.password.expose_secret())
        .await
        .map_err(|(e, _)| anyhow::anyhow!("login refused: {e}"))?;
    Ok(session)
}

fn state_key(api: &EmailApi) -> String {
    let c = &api.config.imap;
    format!("{}@{}/{}", c.username, c.host, c.mailbox)
}

async fn poll_loop(
    api: &EmailApi,
    mut session: Session,
    shutdown: &CancellationToken,
    failures: &mut u32,
) -> anyhow::Result<()> {
    let c = api.config.imap.clone();
    let caps = session.capabilities().await?;
    let can_move = caps.has_str("MOVE");
    let can_idle = c.idle && caps.has_str("IDLE");
    let uidplus = caps.has_str("UIDPLUS");
    // The processed folder (exists already: the error is ignored).
    let _ = session.create(&c.processed_mailbox).await;
    let interval = Duration::from_millis(c.poll_interval_ms);
    loop {
        let moved = round(api, &mut session, can_move, uidplus).await?;
        *failures = 0;
        if shutdown.is_cancelled() {
            let _ = session.logout().await;
            return Ok(());
        }
        if moved >= BATCH {
            continue;
        }
        if can_idle {
            let mut idle = session.idle();
            idle.init().await?;
            {
                let (wait, _stop) = idle.wait_with_timeout(interval);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = wait => { r?; }
                }
            }
            session = idle.done().await?;
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
        if shutdown.is_cancelled() {
            let _ = session.logout().await;
            return Ok(());
        }
    }
}

/// One pass over the mailbox: returns how many messages were handled.
async fn round(
    api: &EmailApi,
    session: &mut Session,
    can_move: bool,
    uidplus: bool,
) -> anyhow::Result<usize> {
    let c = &api.config.imap;
    let mailbox = session.select(&c.mailbox).await?;
    let validity = i64::from(mailbox.uid_validity.unwrap_or(0));
    let key = state_key(api);
    let state = imap_state::Entity::find_by_id(key.clone())
        .one(&api.db)
        .await?;
    let last_uid = match &state {
        Some(s) if s.uid_validity == validity => s.last_uid,
        Some(_) => {
            // The server renumbered the mailbox: everything is fetched
            // again and recognised by its Message-ID.
            tracing::warn!("imap uidvalidity changed, mailbox read again");
            0
        }
        None => 0,
    };
    let mut uids: Vec<u32> = session
        .uid_search(format!("UID {}:*", last_uid + 1))
        .await?
        .into_iter()
        .filter(|u| i64::from(*u) > last_uid)
        .collect();
    uids.sort_unstable();
    uids.truncate(BATCH);
    let mut handled = 0;
    for uid in uids {
        let raw = {
            let mut fetches = session
                .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                .await?;
            let mut raw = None;
            while let Some(f) = fetches.next().await {
                let f = f?;
                if f.uid == Some(uid)
                    && let Some(b) = f.body()
                {
                    raw = Some(b.to_vec());
                }
            }
            raw
        };
        let Some(raw) = raw else {
            continue;
        };
        if raw.len() as u64 > api.config.max_message_bytes {
            // Left in the mailbox for a person to look at; never deleted.
            metrics::counter!("guichet_email_messages_total", "outcome" => "too_large")
                .increment(1);
            tracing::warn!(
                uid,
                size = raw.len(),
                "imap message larger than email.max_message_bytes, left in the mailbox"
            );
        } else {
            // Published (or already known) before anything moves.
            api.accept(&raw, Source::Imap, &c.mailbox)
                .await
                .map_err(|e| anyhow::anyhow!("message uid {uid} not taken: {e}"))?;
            let set = uid.to_string();
            if can_move {
                session.uid_mv(&set, &c.processed_mailbox).await?;
            } else {
                session.uid_copy(&set, &c.processed_mailbox).await?;
                {
                    let updates = session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                    let _: Vec<_> = updates.collect().await;
                }
                if uidplus {
                    let s = session.uid_expunge(&set).await?;
                    let _: Vec<_> = s.collect().await;
                } else {
                    let s = session.expunge().await?;
                    let _: Vec<_> = s.collect().await;
                }
            }
            metrics::counter!("guichet_email_imap_moved_total").increment(1);
        }
        save(
            api,
            &key,
            validity,
            i64::from(uid),
            state.is_some() || handled > 0,
        )
        .await?;
        handled += 1;
    }
    if handled == 0 && state.as_ref().is_some_and(|s| s.uid_validity != validity) {
        save(api, &key, validity, 0, true).await?;
    }
    Ok(handled)
}

async fn save(
    api: &EmailApi,
    key: &str,
    validity: i64,
    last_uid: i64,
    exists: bool,
) -> Result<(), sea_orm::DbErr> {
    let row = imap_state::ActiveModel {
        mailbox: Set(key.to_owned()),
        uid_validity: Set(validity),
        last_uid: Set(last_uid),
        updated_at: Set(Utc::now()),
    };
    if exists {
        row.update(&api.db).await?;
    } else {
        row.insert(&api.db).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_reconnects_back_off_from_400_ms_to_25_6_s() {
        assert_eq!(reconnect_pause(1), Duration::from_millis(400));
        assert_eq!(reconnect_pause(2), Duration::from_millis(800));
        assert_eq!(reconnect_pause(7), Duration::from_millis(25_600));
        assert_eq!(reconnect_pause(40), Duration::from_millis(25_600));
    }
}
