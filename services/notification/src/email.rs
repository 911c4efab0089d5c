//! Email: building the RFC 5322 message (lettre) and sending it over SMTP,
//! or writing it to the development sink.
//!
//! Every message has a stable Message-ID (the request's, or one generated
//! when it was accepted, so a retry is the same message to the receiving
//! side), In-Reply-To/References when it answers a thread, an
//! `Auto-Submitted` header (RFC 3834: acknowledgements and reminders are
//! automatic, an agent's answer is not, which lets auto-responders and
//! our own email channel avoid loops), the dossier reference in the subject
//! (`[VIN-2026-000123]`, which the email channel reads back from replies)
//! and, for "information" messages only, List-Unsubscribe.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::EmailConfig;
use crate::sms::SendError;

macro_rules! text_header {
    ($ty:ident, $name:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $ty(pub String);

        impl Header for $ty {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }
            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($ty(s.to_owned()))
            }
            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

text_header!(AutoSubmitted, "Auto-Submitted");
text_header!(ListUnsubscribe, "List-Unsubscribe");
text_header!(ListUnsubscribePost, "List-Unsubscribe-Post");
text_header!(NotificationId, "X-Guichet-Notification-Id");

/// A file to attach.
#[derive(Debug, Clone)]
pub struct Part {
    pub filename: String,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// Everything a message is built from.
#[derive(Debug, Clone)]
pub struct Draft {
    pub notification_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// Without angle brackets.
    pub message_id: String,
    pub in_reply_to: String,
    pub references: Vec<String>,
    pub auto_submitted: String,
    pub reference: String,
    pub information: bool,
    pub attachments: Vec<Part>,
}

fn bracket(id: &str) -> String {
    format!("<{}>", id.trim().trim_matches(['<', '>']))
}

/// The subject with `[reference]` appended when set and not already there.
pub fn subject_with_reference(subject: &str, reference: &str) -> String {
    let subject = subject.replace(['\r', '\n'], " ");
    if reference.is_empty() || subject.contains(reference) {
        subject
    } else {
        format!("{subject} [{reference}]")
    }
}

/// Build the message; an error is permanent (bad address, bad media type).
pub fn build(cfg: &EmailConfig, d: &Draft) -> Result<Message, String> {
    let from: Mailbox = cfg
        .from
        .parse()
        .map_err(|e| format!("notification.email.from: {e}"))?;
    let to: Mailbox =
        d.to.parse()
            .map_err(|_| "the recipient address is not valid".to_owned())?;
    let mut b = Message::builder()
        .from(from)
        .to(to)
        .subject(subject_with_reference(&d.subject, &d.reference))
        .message_id(Some(bracket(&d.message_id)))
        .header(AutoSubmitted(if d.auto_submitted.is_empty() {
            "no".into()
        } else {
            d.auto_submitted.clone()
        }))
        .header(NotificationId(d.notification_id.clone()));
    if !cfg.reply_to.is_empty() {
        let r: Mailbox = cfg
            .reply_to
            .parse()
            .map_err(|e| format!("notification.email.reply_to: {e}"))?;
        b = b.reply_to(r);
    }
    if !d.in_reply_to.trim().is_empty() {
        b = b.in_reply_to(bracket(&d.in_reply_to));
    }
    let refs: Vec<String> = d
        .references
        .iter()
        .filter(|r| !r.trim().is_empty())
        .map(|r| bracket(r))
        .collect();
    if !refs.is_empty() {
        b = b.references(refs.join(" "));
    } else if !d.in_reply_to.trim().is_empty() {
        b = b.references(bracket(&d.in_reply_to));
    }
    if d.information && !cfg.list_unsubscribe.is_empty() {
        b = b.header(ListUnsubscribe(format!("<{}>", cfg.list_unsubscribe)));
        if cfg.list_unsubscribe.starts_with("https://") {
            b = b.header(ListUnsubscribePost("List-Unsubscribe=One-Click".into()));
        }
    }
    let text = SinglePart::plain(d.body.clone());
    let message = if d.attachments.is_empty() {
        b.singlepart(text)
    } else {
        let mut mixed = MultiPart::mixed().singlepart(text);
        for a in &d.attachments {
            let ct = ContentType::parse(&a.media_type)
                .map_err(|_| format!("attachment media type `{}` is not valid", a.media_type))?;
            mixed =
                mixed.singlepart(Attachment::new(a.filename.clone()).body(a.content.clone(), ct));
        }
        b.multipart(mixed)
    };
    message.map_err(|e| format!("cannot build the message: {e}"))
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, notification_id: &str, message: Message) -> Result<(), SendError>;
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpMailer {
    pub fn new(cfg: &EmailConfig) -> anyhow::Result<SmtpMailer> {
        let tls = match cfg.smtp_tls.as_str() {
            "starttls" => Tls::Required(TlsParameters::new(cfg.smtp_host.clone())?),
            "tls" => Tls::Wrapper(TlsParameters::new(cfg.smtp_host.clone())?),
            _ => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.smtp_host.clone())
            .port(cfg.smtp_port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(cfg.timeout_secs)));
        if !cfg.smtp_username.is_empty() {
            b = b.credentials(Credentials::new(
                cfg.smtp_username.clone(),
                cfg.smtp_password.expose_secret().to_owned(),
            ));
        }
        Ok(SmtpMailer {
            transport: b.build(),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, _notification_id: &str, message: Message) -> Result<(), SendError> {
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => {
                let code = e.status().map(|c| c.to_string()).unwrap_or_default();
                Err(SendError::Permanent(format!("smtp refused ({code})")))
            }
            Err(e) if e.is_timeout() => Err(SendError::Retryable("smtp timeout".into())),
            Err(e) => {
                let code = e.status().map(|c| c.to_string()).unwrap_or_default();
                Err(SendError::Retryable(if code.is_empty() {
                    "smtp relay unreachable or failed".into()
                } else {
                    format!("smtp temporary failure ({code})")
                }))
            }
        }
    }
}

/// Development sink: `<dir>/<notification id>.eml`.
pub struct SinkMailer {
    dir: PathBuf,
}

impl SinkMailer {
    pub fn new(dir: PathBuf) -> anyhow::Result<SinkMailer> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create notification.email.sink_dir {}: {e}",
                dir.display()
            )
        })?;
        Ok(SinkMailer { dir })
    }
}

#[async_trait]
impl Mailer for SinkMailer {
    async fn send(&self, notification_id: &str, message: Message) -> Result<(), SendError> {
        let name: String = notification_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let tmp = self.dir.join(format!(".{name}.eml.tmp"));
        let path = self.dir.join(format!("{name}.eml"));
        tokio::fs::write(&tmp, message.formatted())
            .await
            .map_err(|e| SendError::Retryable(format!("email sink: {e}")))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| SendError::Retryable(format!("email sink: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EmailConfig {
        EmailConfig {
            transport: "sink".into(),
            sink_dir: PathBuf::new(),
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            smtp_tls: "none".into(),
            smtp_username: String::new(),
            smtp_password: secrecy::SecretString::from(""),
            timeout_secs: 5,
            from: "Mairie de Villeneuve <mairie@villeneuve.example.fr>".into(),
            reply_to: "accueil@villeneuve.example.fr".into(),
            message_id_domain: String::new(),
            max_per_hour: 10,
            list_unsubscribe: "https://villeneuve.example.fr/desabonnement".into(),
        }
    }

    fn draft() -> Draft {
        Draft {
            notification_id: "n-1".into(),
            to: "jeanne@exemple.fr".into(),
            subject: "Votre rendez-vous".into(),
            body: "Bonjour, votre rendez-vous est confirmé à l'hôtel de ville.".into(),
            message_id: "abc@villeneuve.example.fr".into(),
            in_reply_to: "<q1@exemple.fr>".into(),
            references: vec!["q0@exemple.fr".into(), "q1@exemple.fr".into()],
            auto_submitted: "auto-replied".into(),
            reference: "VIN-2026-000123".into(),
            information: false,
            attachments: vec![Part {
                filename: "rendez-vous.ics".into(),
                media_type: "text/calendar; charset=utf-8".into(),
                content: b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n".to_vec(),
            }],
        }
    }

    #[test]
    fn the_message_carries_threading_reference_and_auto_submitted() {
        let raw =
            String::from_utf8(build(&cfg(), &draft()).expect("builds").formatted()).expect("utf-8");
        assert!(
            raw.contains("Message-ID: <abc@villeneuve.example.fr>"),
            "{raw}"
        );
        assert!(raw.contains("In-Reply-To: <q1@exemple.fr>"));
        assert!(raw.contains("References: <q0@exemple.fr> <q1@exemple.fr>"));
        assert!(raw.contains("Auto-Submitted: auto-replied"));
        assert!(raw.contains("Subject: Votre rendez-vous [VIN-2026-000123]"));
        assert!(raw.contains("Reply-To: accueil@villeneuve.example.fr"));
        assert!(raw.contains("filename=\"rendez-vous.ics\""));
        assert!(!raw.contains("List-Unsubscribe"));
    }

    #[test]
    fn only_information_messages_get_list_unsubscribe() {
        let mut d = draft();
        d.information = true;
        let raw = String::from_utf8(build(&cfg(), &d).expect("builds").formatted()).expect("utf-8");
        assert!(raw.contains("List-Unsubscribe: <https://villeneuve.example.fr/desabonnement>"));
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    }

    #[test]
    fn the_reference_is_not_added_twice() {
        assert_eq!(
            subject_with_reference("Re: dossier [VIN-1]", "VIN-1"),
            "Re: dossier [VIN-1]"
        );
        assert_eq!(subject_with_reference("Objet", ""), "Objet");
    }
}
