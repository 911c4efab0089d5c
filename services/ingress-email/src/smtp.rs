//! The SMTP and LMTP listener: the session state machine on tokio, the
//! protocol parsing by `smtp-proto` (Stalwart's SMTP parser).
//!
//! A message is answered 250 only once [`EmailApi::accept`] has its intake
//! event held by JetStream; any failure answers 451 so the relaying server
//! keeps the message and retries. LMTP answers once per accepted recipient
//! (the message is recorded once for all of them).

use std::sync::Arc;
use std::time::Duration;

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, RequestReceiver};
use smtp_proto::{EhloResponse, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{Config, EmailApi, Source};

/// At most this many recipients per message.
const MAX_RECIPIENTS: usize = 100;
/// A session ends after this many unknown or refused commands.
const MAX_ERRORS: u32 = 20;

pub struct Listener {
    pub listener: Arc<TcpListener>,
    pub lmtp: bool,
    pub tls: Option<TlsAcceptor>,
}

/// The STARTTLS acceptor from `email.tls_cert_file` / `tls_key_file`.
pub fn tls_acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if config.tls_cert_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let certs = CertificateDer::pem_file_iter(&config.tls_cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("email.tls_cert_file: cannot read certificates: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("email.tls_cert_file: no certificate found");
    }
    let key = PrivateKeyDer::from_pem_file(&config.tls_key_file)
        .map_err(|e| anyhow::anyhow!("email.tls_key_file: cannot read the private key: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("email.tls_cert_file / tls_key_file: {e}"))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// Accept connections until shutdown; each session runs on its own task.
pub async fn serve(api: EmailApi, l: Listener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let proto = if l.lmtp { "lmtp" } else { "smtp" };
    if let Ok(addr) = l.listener.local_addr() {
        tracing::info!(%addr, proto, "email listener ready");
    }
    let mut sessions = tokio::task::JoinSet::new();
    // Sessions in all and per client address: one client cannot hold every
    // session.
    let table = guichet_platform::net::ConnectionTable::new(
        api.config.max_sessions,
        api.config.max_sessions_per_address,
    );
    for reason in ["listener_full", "address_full"] {
        metrics::counter!("guichet_email_sessions_refused_total", "reason" => reason).increment(0);
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = l.listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let held = match table.hold(peer.ip()) {
                    Ok(held) => held,
                    Err(reason) => {
                        metrics::counter!("guichet_email_sessions_refused_total", "reason" => reason).increment(1);
                        let text = if reason == "address_full" {
                            "too many connections from your address, try again later"
                        } else {
                            "too many connections, try again later"
                        };
                        let mut stream = stream;
                        let mut out = Vec::new();
                        reply(&mut out, 421, [4, 3, 2], text);
                        // Never wait on a client that does not read.
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
                        continue;
                    }
                };
                let session = Session::new(api.clone(), l.lmtp, l.tls.clone(), shutdown.clone());
                sessions.spawn(async move {
                    metrics::counter!("guichet_email_sessions_total", "proto" => if session.lmtp { "lmtp" } else { "smtp" }).increment(1);
                    if let Err(e) = session.run(Box::new(stream)).await {
                        tracing::debug!(error = %e, "session ended with an error");
                    }
                    drop(held);
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    // In-flight messages finish (their 250 is owed once published).
    while sessions.join_next().await.is_some() {}
    Ok(())
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Default)]
struct Transaction {
    helo: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
}

struct Session {
    api: EmailApi,
    lmtp: bool,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    is_tls: bool,
    tx: Transaction,
    errors: u32,
}

enum State {
    Command(RequestReceiver),
    Data(DataReceiver, Vec<u8>),
    /// The message is over the size limit: read to its end, then 552.
    Discard(DummyDataReceiver),
}

enum Next {
    Continue,
    StartTls,
    Quit,
}

fn reply(out: &mut Vec<u8>, code: u16, esc: [u8; 3], msg: &str) {
    let _ = Response::new(code, esc[0], esc[1], esc[2], msg).write(&mut *out);
}

impl Session {
    fn new(
        api: EmailApi,
        lmtp: bool,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) -> Session {
        Session {
            api,
            lmtp,
            tls,
            shutdown,
            is_tls: false,
            tx: Transaction::default(),
            errors: 0,
        }
    }

    fn config(&self) -> &Config {
        &self.api.config
    }

    async fn run(mut self, mut io: Box<dyn Io>) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(self.config().session_timeout_secs);
        let greeting = format!(
            "{} {} guichet ready",
            self.config().hostname,
            if self.lmtp { "LMTP" } else { "ESMTP" }
        );
        let mut out = Vec::new();
        reply(&mut out, 220, [0, 0, 0], &greeting);
        io.write_all(&out).await?;
        let mut state = State::Command(RequestReceiver::default());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                _ = self.shutdown.cancelled(), if matches!(state, State::Command(_)) => {
                    let mut out = Vec::new();
                    reply(&mut out, 421, [4, 3, 2], "shutting down, try again later");
                    let _ = io.write_all(&out).await;
                    return Ok(());
                }
                r = tokio::time::timeout(timeout, io.read(&mut buf)) => match r {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        let mut out = Vec::new();
                        reply(&mut out, 421, [4, 4, 2], "idle too long, closing");
                        let _ = io.write_all(&out).await;
                        return Ok(());
                    }
                },
            };
            let mut out = Vec::new();
            let mut bytes = buf[..n].iter();
            let mut next = Next::Continue;
            loop {
                match &mut state {
                    State::Command(receiver) => match receiver.ingest(&mut bytes) {
                        Ok(req) => {
                            let req = req.into_owned();
                            let (n, new_state) = self.command(req, &mut out);
                            if let Some(s) = new_state {
                                state = s;
                            }
                            match n {
                                Next::Continue => {}
                                other => {
                                    next = other;
                                    break;
                                }
                            }
                        }
                        Err(smtp_proto::Error::NeedsMoreData { .. }) => break,
                        Err(e) => {
                            self.errors += 1;
                            let (code, esc, msg) = match e {
                                smtp_proto::Error::UnknownCommand => {
                                    (500, [5, 5, 1], "command not recognised")
                                }
                                smtp_proto::Error::InvalidSenderAddress => {
                                    (501, [5, 1, 7], "bad sender address")
                                }
                                smtp_proto::Error::InvalidRecipientAddress => {
                                    (501, [5, 1, 3], "bad recipient address")
                                }
                                smtp_proto::Error::ResponseTooLong => {
                                    (500, [5, 5, 2], "line too long")
                                }
                                _ => (501, [5, 5, 4], "syntax error in parameters"),
                            };
                            reply(&mut out, code, esc, msg);
                            if self.errors > MAX_ERRORS {
                                reply(&mut out, 421, [4, 7, 0], "too many errors");
                                next = Next::Quit;
                                break;
                            }
                        }
                    },
                    State::Data(receiver, message) => {
                        if receiver.ingest(&mut bytes, message) {
                            let message = std::mem::take(message);
                            state = State::Command(RequestReceiver::default());
                            // Answer what came before, then take the message.
                            self.deliver(message, &mut out).await;
                        } else if message.len() as u64 > self.config().max_message_bytes {
                            let dummy = DummyDataReceiver::new_data(receiver);
                            state = State::Discard(dummy);
                        } else {
                            break;
                        }
                    }
                    State::Discard(receiver) => {
                        if receiver.ingest(&mut bytes) {
                            state = State::Command(RequestReceiver::default());
                            metrics::counter!("guichet_email_messages_total", "outcome" => "too_large").increment(1);
                            tracing::info!("message refused: larger than email.max_message_bytes");
                            for _ in 0..self.replies() {
                                reply(
                                    &mut out,
                                    552,
                                    [5, 3, 4],
                                    "message size exceeds the fixed maximum",
                                );
                            }
                            self.tx.mail_from = None;
                            self.tx.rcpts.clear();
                        } else {
                            break;
                        }
                    }
                }
                if bytes.as_slice().is_empty() {
                    break;
                }
            }
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
            }
            match next {
                Next::Continue => {}
                Next::Quit => {
                    let _ = io.shutdown().await;
                    return Ok(());
                }
                Next::StartTls => {
                    let Some(acceptor) = self.tls.clone() else {
                        return Ok(());
                    };
                    io = Box::new(acceptor.accept(io).await?);
                    self.is_tls = true;
                    self.tx = Transaction::default();
                    state = State::Command(RequestReceiver::default());
                }
            }
        }
    }

    /// LMTP answers the end of data once per recipient; SMTP once.
    fn replies(&self) -> usize {
        if self.lmtp {
            self.tx.rcpts.len().max(1)
        } else {
            1
        }
    }

    fn command(&mut self, req: Request<String>, out: &mut Vec<u8>) -> (Next, Option<State>) {
        match req {
            Request::Ehlo { .. } | Request::Helo { .. } if self.lmtp => {
                reply(out, 500, [5, 5, 1], "this is LMTP: use LHLO");
            }
            Request::Lhlo { .. } if !self.lmtp => {
                reply(out, 500, [5, 5, 1], "this is SMTP: use EHLO");
            }
            Request::Helo { .. } => {
                self.tx = Transaction {
                    helo: true,
                    ..Default::default()
                };
                reply(out, 250, [0, 0, 0], &self.config().hostname.clone());
            }
            Request::Ehlo { .. } | Request::Lhlo { .. } => {
                self.tx = Transaction {
                    helo: true,
                    ..Default::default()
                };
                let mut r = EhloResponse::new(self.config().hostname.clone());
                r.capabilities = smtp_proto::EXT_SIZE
                    | smtp_proto::EXT_8BIT_MIME
                    | smtp_proto::EXT_ENHANCED_STATUS_CODES
                    | smtp_proto::EXT_PIPELINING
                    | smtp_proto::EXT_SMTP_UTF8;
                if self.tls.is_some() && !self.is_tls {
                    r.capabilities |= smtp_proto::EXT_START_TLS;
                }
                r.size = self.config().max_message_bytes as usize;
                let _ = r.write(&mut *out);
            }
            Request::StartTls => {
                if self.tls.is_none() || self.is_tls {
                    reply(out, 502, [5, 5, 1], "STARTTLS not available");
                } else {
                    reply(out, 220, [2, 0, 0], "ready to start TLS");
                    return (Next::StartTls, None);
                }
            }
            Request::Mail { from } => {
                if !self.tx.helo {
                    reply(out, 503, [5, 5, 1], "say hello first");
                } else if self.tx.mail_from.is_some() {
                    reply(out, 503, [5, 5, 1], "sender already given");
                } else if from.size as u64 > self.config().max_message_bytes {
                    reply(
                        out,
                        552,
                        [5, 3, 4],
                        "message size exceeds the fixed maximum",
                    );
                } else {
                    self.tx.mail_from = Some(from.address);
                    self.tx.rcpts.clear();
                    reply(out, 250, [2, 1, 0], "sender ok");
                }
            }
            Request::Rcpt { to } => {
                if self.tx.mail_from.is_none() {
                    reply(out, 503, [5, 5, 1], "need MAIL first");
                } else if !self.config().accepts(&to.address) {
                    metrics::counter!("guichet_email_recipients_refused_total").increment(1);
                    reply(out, 550, [5, 1, 1], "recipient not accepted here");
                } else if self.tx.rcpts.len() >= MAX_RECIPIENTS {
                    reply(out, 452, [4, 5, 3], "too many recipients");
                } else {
                    self.tx.rcpts.push(to.address.to_lowercase());
                    reply(out, 250, [2, 1, 5], "recipient ok");
                }
            }
            Request::Data => {
                if self.tx.mail_from.is_none() || self.tx.rcpts.is_empty() {
                    reply(out, 503, [5, 5, 1], "need RCPT first");
                } else {
                    reply(out, 354, [0, 0, 0], "end data with <CR><LF>.<CR><LF>");
                    return (
                        Next::Continue,
                        Some(State::Data(
                            DataReceiver::new(),
                            Vec::with_capacity(64 * 1024),
                        )),
                    );
                }
            }
            Request::Bdat { .. } => {
                reply(out, 502, [5, 5, 1], "CHUNKING not offered");
            }
            Request::Rset => {
                self.tx.mail_from = None;
                self.tx.rcpts.clear();
                reply(out, 250, [2, 0, 0], "reset");
            }
            Request::Noop { .. } => reply(out, 250, [2, 0, 0], "ok"),
            Request::Vrfy { .. } => reply(out, 252, [2, 5, 2], "cannot verify, send it"),
            Request::Quit => {
                reply(out, 221, [2, 0, 0], "bye");
                return (Next::Quit, None);
            }
            _ => {
                self.errors += 1;
                reply(out, 502, [5, 5, 1], "command not implemented");
            }
        }
        (Next::Continue, None)
    }

    /// The end of DATA: 250 once published, 451 otherwise.
    async fn deliver(&mut self, message: Vec<u8>, out: &mut Vec<u8>) {
        let source = if self.lmtp {
            Source::Lmtp
        } else {
            Source::Smtp
        };
        let mailbox = self.tx.rcpts.first().cloned().unwrap_or_default();
        let replies = self.replies();
        let result = if message.len() as u64 > self.config().max_message_bytes {
            None
        } else {
            Some(self.api.accept(&message, source, &mailbox).await)
        };
        for _ in 0..replies {
            match &result {
                None => reply(
                    out,
                    552,
                    [5, 3, 4],
                    "message size exceeds the fixed maximum",
                ),
                Some(Ok((_, id))) => reply(out, 250, [2, 0, 0], &format!("queued as {id}")),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "message not taken, sender will retry");
                    reply(out, 451, [4, 3, 0], "temporary failure, try again later")
                }
            }
        }
        self.tx.mail_from = None;
        self.tx.rcpts.clear();
    }
}
