//! Where a ticket stands and how long the wait is, for citizens: the
//! ticket page of the kiosk's QR code and the town's public waiting times.
//!
//! The estimate is deliberately simple and explainable: the tickets ahead
//! shared among the desks open for the service (desks that called one of
//! its tickets in the last [`OPEN_DESK_MINUTES`], at least one), times the
//! mean service time of the service over the last [`RECENT_HOURS`]
//! ([`DEFAULT_SERVICE_SECS`] when none was served), plus half a service
//! for the visit under way at the desk.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::CounterApi;
use crate::core::{paris_day, secs};
use crate::db::entities::ticket;
use crate::error::{Error, internal_err, not_found};

/// A desk that called a ticket of the service this recently is open.
pub const OPEN_DESK_MINUTES: i64 = 30;
/// Service times are averaged over this many hours.
pub const RECENT_HOURS: i64 = 2;
/// The service time assumed when none was measured recently.
pub const DEFAULT_SERVICE_SECS: u32 = 600;

/// The wait of one service of a site, now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wait {
    pub waiting: u32,
    pub open_desks: u32,
    pub average_service: u32,
    /// For a ticket with `ahead` tickets before it (a new one: all).
    pub estimate: u32,
    pub ahead: u32,
    pub longest: u32,
}

/// The estimate for `ahead` tickets before, `desks` open desks and a mean
/// service of `average` seconds.
pub fn estimate(ahead: u32, desks: u32, average: u32) -> u32 {
    let desks = f64::from(desks.max(1));
    let secs = (f64::from(ahead) + 0.5) / desks * f64::from(average);
    // Rounded up to the minute: a citizen reads minutes.
    ((secs / 60.0).ceil() * 60.0) as u32
}

struct Figures {
    open_desks: u32,
    average: u32,
}

/// Open desks and the mean service time of each service, from the day's
/// tickets of `site`.
fn figures(rows: &[ticket::Model], now: DateTime<Utc>) -> BTreeMap<String, Figures> {
    let open_since = now - Duration::minutes(OPEN_DESK_MINUTES);
    let recent = now - Duration::hours(RECENT_HOURS);
    let mut desks: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut served: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in rows {
        if let (Some(call), Some(desk)) = (t.call_time, t.desk.as_deref())
            && call >= open_since
        {
            desks.entry(&t.service).or_default().insert(desk);
        }
        if let (Some(s), Some(f)) = (t.start_time, t.finish_time)
            && f >= recent
        {
            let e = served.entry(&t.service).or_default();
            e.0 += u64::from(secs(s, f));
            e.1 += 1;
        }
    }
    let services: BTreeSet<&str> = rows.iter().map(|t| t.service.as_str()).collect();
    services
        .into_iter()
        .map(|s| {
            let open_desks = desks.get(s).map_or(0, |d| d.len() as u32).max(1);
            let average = match served.get(s) {
                Some((total, n)) if *n > 0 => u32::try_from(total / n).unwrap_or(u32::MAX),
                _ => DEFAULT_SERVICE_SECS,
            };
            (
                s.to_owned(),
                Figures {
                    open_desks,
                    average,
                },
            )
        })
        .collect()
}

impl CounterApi {
    async fn day_of_site(
        &self,
        site: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ticket::Model>, Error> {
        ticket::Entity::find()
            .filter(ticket::Column::Site.eq(site))
            .filter(ticket::Column::Day.eq(paris_day(now)))
            .all(&self.db)
            .await
            .map_err(internal_err("read the day's tickets"))
    }

    /// The ticket of a public token, and where it stands.
    pub(crate) async fn position(&self, token: &str) -> Result<(ticket::Model, Wait), Error> {
        if token.len() < 16 || token.len() > 64 {
            return Err(not_found("ticket", "(public token)"));
        }
        let t = ticket::Entity::find()
            .filter(ticket::Column::PublicToken.eq(token))
            .one(&self.db)
            .await
            .map_err(internal_err("get ticket"))?
            .ok_or_else(|| not_found("ticket", "(public token)"))?;
        let now = self.clock.now();
        let rows = self.day_of_site(&t.site, now).await?;
        let f = figures(&rows, now);
        let fig = f.get(&t.service);
        let (open_desks, average) =
            fig.map_or((1, DEFAULT_SERVICE_SECS), |f| (f.open_desks, f.average));
        let ahead = if t.status == "waiting" {
            rows.iter()
                .filter(|o| o.status == "waiting" && o.service == t.service)
                .filter(|o| (o.rank_at, &o.id) < (t.rank_at, &t.id))
                .count() as u32
        } else {
            0
        };
        let waiting = rows
            .iter()
            .filter(|o| o.status == "waiting" && o.service == t.service)
            .count() as u32;
        Ok((
            t.clone(),
            Wait {
                waiting,
                open_desks,
                average_service: average,
                estimate: if t.status == "waiting" {
                    estimate(ahead, open_desks, average)
                } else {
                    0
                },
                ahead,
                longest: 0,
            },
        ))
    }

    /// The wait of every service of `site` (those with a letter, even
    /// empty), for a ticket taken now.
    pub(crate) async fn waiting_times(&self, site: &str) -> Result<Vec<(String, Wait)>, Error> {
        let now = self.clock.now();
        let rows = self.day_of_site(site, now).await?;
        let f = figures(&rows, now);
        Ok(self
            .config
            .services
            .keys()
            .map(|s| {
                let (open_desks, average) = f
                    .get(s)
                    .map_or((1, DEFAULT_SERVICE_SECS), |f| (f.open_desks, f.average));
                let waiting: Vec<&ticket::Model> = rows
                    .iter()
                    .filter(|t| t.status == "waiting" && t.service == *s)
                    .collect();
                let n = waiting.len() as u32;
                (
                    s.clone(),
                    Wait {
                        waiting: n,
                        open_desks,
                        average_service: average,
                        estimate: if n == 0 {
                            0
                        } else {
                            estimate(n, open_desks, average)
                        },
                        ahead: n,
                        longest: waiting
                            .iter()
                            .map(|t| secs(t.waiting_since, now))
                            .max()
                            .unwrap_or(0),
                    },
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_shares_the_queue_among_open_desks_in_whole_minutes() {
        // First in line, one desk, 10-minute visits: half a visit.
        assert_eq!(estimate(0, 1, 600), 300);
        // Four ahead and the visit under way, two desks: 2.25 visits,
        // 22.5 minutes, told as 23.
        assert_eq!(estimate(4, 2, 600), 1380);
        // No desk seen open counts as one.
        assert_eq!(estimate(1, 0, 60), 120);
        assert_eq!(estimate(0, 3, 100), 60);
    }
}
