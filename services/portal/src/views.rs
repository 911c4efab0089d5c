//! How the pages say things in French: channels, states, SLA (a word, an
//! icon and a colour, never the colour alone), durations and dates in
//! Paris time.

use chrono::{DateTime, Utc};
use guichet_platform::calendar::to_paris;
use guichet_proto::convert::datetime;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::Channel;
use guichet_proto::routing::v1 as rpb;

/// A label with its icon and CSS modifier (`tag--ok`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub word: &'static str,
    pub icon: &'static str,
    pub class: &'static str,
}

pub fn channel(c: i32) -> Tag {
    match Channel::try_from(c).unwrap_or(Channel::Unspecified) {
        Channel::Telephony => Tag {
            word: "Téléphone",
            icon: "☎",
            class: "channel",
        },
        Channel::Email => Tag {
            word: "Courriel",
            icon: "✉",
            class: "channel",
        },
        Channel::Scan => Tag {
            word: "Courrier",
            icon: "✎",
            class: "channel",
        },
        Channel::Counter => Tag {
            word: "Accueil",
            icon: "⌂",
            class: "channel",
        },
        Channel::Unspecified => Tag {
            word: "Autre",
            icon: "•",
            class: "channel",
        },
    }
}

/// The channels an agent filters on: (slug, French name).
pub const CHANNELS: &[(&str, &str)] = &[
    ("telephony", "Téléphone"),
    ("email", "Courriel"),
    ("scan", "Courrier"),
    ("counter", "Accueil"),
];

pub fn sla(s: i32) -> Tag {
    match rpb::SlaState::try_from(s).unwrap_or(rpb::SlaState::Unspecified) {
        rpb::SlaState::Ok => Tag {
            word: "Dans les délais",
            icon: "✓",
            class: "ok",
        },
        rpb::SlaState::Near => Tag {
            word: "Bientôt en retard",
            icon: "⚠",
            class: "warn",
        },
        rpb::SlaState::Breached => Tag {
            word: "En retard",
            icon: "✖",
            class: "danger",
        },
        rpb::SlaState::Unspecified => Tag {
            word: "Sans délai",
            icon: "–",
            class: "neutral",
        },
    }
}

pub fn dossier_sla(s: i32) -> Tag {
    match dpb::SlaStatus::try_from(s).unwrap_or(dpb::SlaStatus::Unspecified) {
        dpb::SlaStatus::OnTime => Tag {
            word: "Dans les délais",
            icon: "✓",
            class: "ok",
        },
        dpb::SlaStatus::AtRisk => Tag {
            word: "Bientôt en retard",
            icon: "⚠",
            class: "warn",
        },
        dpb::SlaStatus::Breached => Tag {
            word: "En retard",
            icon: "✖",
            class: "danger",
        },
        _ => Tag {
            word: "Sans délai",
            icon: "–",
            class: "neutral",
        },
    }
}

pub fn status(s: i32) -> &'static str {
    match rpb::WorkItemStatus::try_from(s).unwrap_or(rpb::WorkItemStatus::Unspecified) {
        rpb::WorkItemStatus::Pending => "En attente",
        rpb::WorkItemStatus::Offered => "Proposée",
        rpb::WorkItemStatus::Assigned => "En cours",
        rpb::WorkItemStatus::Wrapping => "En clôture",
        rpb::WorkItemStatus::Completed => "Terminée",
        rpb::WorkItemStatus::Cancelled => "Annulée",
        rpb::WorkItemStatus::Unspecified => "Inconnu",
    }
}

pub fn presence(p: i32) -> &'static str {
    match rpb::Presence::try_from(p).unwrap_or(rpb::Presence::Unspecified) {
        rpb::Presence::Available => "Disponible",
        rpb::Presence::Busy => "Occupé(e)",
        rpb::Presence::Away => "En pause",
        rpb::Presence::Offline | rpb::Presence::Unspecified => "Hors ligne",
    }
}

pub fn entry_kind(k: i32) -> &'static str {
    match dpb::EntryKind::try_from(k).unwrap_or(dpb::EntryKind::Unspecified) {
        dpb::EntryKind::Contact => "Contact",
        dpb::EntryKind::Outcome => "Traitement",
        dpb::EntryKind::StateChange => "Étape",
        dpb::EntryKind::Note => "Note",
        dpb::EntryKind::DossierOpened => "Ouverture",
        dpb::EntryKind::Document => "Pièce",
        dpb::EntryKind::Appointment => "Rendez-vous",
        dpb::EntryKind::Signature => "Signature",
        dpb::EntryKind::MessageSent => "Message envoyé",
        dpb::EntryKind::Merge => "Fusion",
        dpb::EntryKind::Task => "À faire",
        dpb::EntryKind::Unspecified => "Autre",
    }
}

/// The entry kinds an agent filters the timeline on: (slug, French).
pub const ENTRY_KINDS: &[(&str, &str, dpb::EntryKind)] = &[
    ("contact", "Contacts", dpb::EntryKind::Contact),
    ("note", "Notes", dpb::EntryKind::Note),
    ("etape", "Étapes", dpb::EntryKind::StateChange),
    ("piece", "Pièces", dpb::EntryKind::Document),
    ("message", "Messages envoyés", dpb::EntryKind::MessageSent),
    ("traitement", "Traitements", dpb::EntryKind::Outcome),
    ("rendez-vous", "Rendez-vous", dpb::EntryKind::Appointment),
    ("signature", "Signatures", dpb::EntryKind::Signature),
    ("a-faire", "À faire", dpb::EntryKind::Task),
];

/// "12 min", "2 h 05", "3 j 4 h".
pub fn duration(d: chrono::Duration) -> String {
    let m = d.num_minutes().max(0);
    if m < 1 {
        "moins d'une minute".into()
    } else if m < 60 {
        format!("{m} min")
    } else if m < 24 * 60 {
        format!("{} h {:02}", m / 60, m % 60)
    } else {
        format!("{} j {} h", m / (24 * 60), (m % (24 * 60)) / 60)
    }
}

/// "02/12/2026 14:05" (Paris).
pub fn when(t: DateTime<Utc>) -> String {
    to_paris(t).format("%d/%m/%Y %H:%M").to_string()
}

/// The machine-readable form for `<time datetime>`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn ts(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref().and_then(datetime)
}

/// "Dupont Jean", or a placeholder for an unidentified person.
pub fn citizen_name(c: &dpb::Citizen) -> String {
    let name = format!("{} {}", c.family_name.to_uppercase(), c.given_name)
        .trim()
        .to_owned();
    if name.is_empty() {
        "Personne non identifiée".into()
    } else {
        name
    }
}

/// The lines of `text` around `line` (1-based; two either side), numbered,
/// the faulty one marked: where an editor's refusal points. Empty when the
/// problem has no line (0).
pub fn excerpt(text: &str, line: u32) -> Vec<(u32, String, bool)> {
    if line == 0 {
        return Vec::new();
    }
    let from = line.saturating_sub(2).max(1);
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u32 + 1, l))
        .filter(|(n, _)| *n >= from && *n <= line + 2)
        .map(|(n, l)| (n, l.to_owned(), n == line))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_french() {
        assert_eq!(
            duration(chrono::Duration::seconds(20)),
            "moins d'une minute"
        );
        assert_eq!(duration(chrono::Duration::minutes(12)), "12 min");
        assert_eq!(duration(chrono::Duration::minutes(125)), "2 h 05");
        assert_eq!(duration(chrono::Duration::hours(76)), "3 j 4 h");
    }

    #[test]
    fn sla_has_a_word_and_an_icon() {
        for s in 0..4 {
            let t = sla(s);
            assert!(!t.word.is_empty() && !t.icon.is_empty());
        }
        assert_eq!(sla(3).word, "En retard");
    }
}
