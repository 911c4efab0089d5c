//! Conversions between protobuf well-known types and domain types.

use chrono::{DateTime, TimeZone, Utc};

/// A UTC time as a protobuf `Timestamp`.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf `Timestamp` as a UTC time; `None` when out of range.
pub fn datetime(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts.seconds, ts.nanos.max(0) as u32)
        .single()
}

impl crate::intake::v1::Channel {
    /// Lower-case channel name used in subjects and metrics (`counter`, `email`…).
    pub fn slug(self) -> &'static str {
        use crate::intake::v1::Channel;
        match self {
            Channel::Unspecified => "unspecified",
            Channel::Telephony => "telephony",
            Channel::Email => "email",
            Channel::Scan => "scan",
            Channel::Counter => "counter",
        }
    }

    /// Parse a slug back; `None` for anything unknown.
    pub fn from_slug(s: &str) -> Option<Self> {
        use crate::intake::v1::Channel;
        Some(match s {
            "telephony" => Channel::Telephony,
            "email" => Channel::Email,
            "scan" => Channel::Scan,
            "counter" => Channel::Counter,
            _ => return None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_to_the_nanosecond() {
        let t = Utc
            .timestamp_opt(1_790_000_000, 123_456_789)
            .single()
            .unwrap();
        assert_eq!(datetime(&timestamp(t)), Some(t));
    }

    #[test]
    fn channel_slugs_round_trip() {
        use crate::intake::v1::Channel;
        for c in [
            Channel::Telephony,
            Channel::Email,
            Channel::Scan,
            Channel::Counter,
        ] {
            assert_eq!(Channel::from_slug(c.slug()), Some(c));
        }
    }
}
