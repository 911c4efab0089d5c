//! iCalendar (RFC 5545) for one booking (attachment / download) and for a
//! desk's agenda feed, built with the `icalendar` crate.

use icalendar::{Calendar, Component, Event, EventLike, EventStatus};

use crate::core::{CANCELLED_BY_CITIZEN, CANCELLED_BY_TOWN, Core, NO_SHOW};
use crate::db::entities::booking;

/// A booking's status as the agent reads it in the agenda.
fn status_fr(s: crate::core::BookingStatus) -> &'static str {
    use crate::core::BookingStatus as S;
    match s {
        S::Booked => "réservé",
        S::CheckedIn => "usager arrivé",
        S::Seen => "reçu",
        S::NoShow => "absent (ne s'est pas présenté)",
        S::CancelledByCitizen => "annulé par l'usager",
        S::CancelledByTown => "annulé par la mairie",
    }
}

impl Core {
    fn ics_event(&self, b: &booking::Model, for_agent: bool) -> Event {
        let t = self
            .model
            .kind(&b.type_id)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let site = self.model.site(&b.site_id);
        let location = site
            .map(|s| format!("{}, {}, {} {}", s.name, s.address, s.zip_code, s.city))
            .unwrap_or_default();
        let desk = self
            .model
            .desk(&b.desk_id)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        let no_show = b.status == NO_SHOW;
        let mut e = Event::new();
        e.uid(&format!("{}@guichet", b.id))
            .summary(&if for_agent && no_show {
                format!("Absent – {t} – {} ({} pers.)", b.reference, b.people)
            } else if for_agent {
                format!("{t} – {} ({} pers.)", b.reference, b.people)
            } else {
                format!("{} – {t}", self.config.town.hall())
            })
            .description(&if for_agent {
                format!("Guichet : {desk}. Statut : {}.", status_fr(b.status))
            } else {
                format!(
                    "Référence {}. Guichet : {desk}. Pour annuler ou déplacer : {}",
                    b.reference,
                    self.manage_url(b)
                )
            })
            .location(&location)
            .starts(b.start_at)
            .ends(b.end_at)
            .timestamp(b.updated_at)
            .sequence(b.version.max(0) as u32)
            .status(
                // A no-show did not take place: not CONFIRMED in an agenda.
                if b.status == CANCELLED_BY_CITIZEN || b.status == CANCELLED_BY_TOWN || no_show {
                    EventStatus::Cancelled
                } else {
                    EventStatus::Confirmed
                },
            );
        e.done()
    }

    pub fn booking_ics(&self, b: &booking::Model) -> String {
        let mut cal = Calendar::new();
        // The email part is `text/calendar; method=PUBLISH`: the object says
        // so too (Outlook refuses a mismatch).
        cal.append_property(icalendar::Property::new("METHOD", "PUBLISH"));
        cal.name(&format!("Rendez-vous – {}", self.config.town.hall()))
            .push(self.ics_event(b, false));
        cal.done().to_string()
    }

    pub fn agenda_ics(&self, desk_name: &str, bookings: &[booking::Model]) -> String {
        let mut cal = Calendar::new();
        cal.append_property(icalendar::Property::new("METHOD", "PUBLISH"));
        cal.name(&format!("Agenda – {desk_name}"));
        for b in bookings {
            cal.push(self.ics_event(b, true));
        }
        cal.done().to_string()
    }
}
