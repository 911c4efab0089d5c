//! The Zammad generic CTI webhook's request format, parsed once at the edge.
//!
//! A PBX set up for Zammad posts `newCall`, `answer` and `hangup` events as
//! JSON or as a form (`application/x-www-form-urlencoded`, `user[]=…` for a
//! list). Field names and values follow Zammad's documentation, including
//! both spellings `callId` and `call_id`.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtiEvent {
    NewCall,
    Answer,
    Hangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One CTI request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtiParams {
    pub event: CtiEvent,
    pub call_id: String,
    pub direction: Option<Direction>,
    pub from: String,
    pub to: String,
    pub users: Vec<String>,
    pub queue: String,
    pub cause: String,
    pub answering_number: String,
}

/// Why a request is refused (422, with this text as `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Causes Zammad documents for `hangup`.
pub const CAUSES: &[&str] = &[
    "normalClearing",
    "busy",
    "cancel",
    "noAnswer",
    "congestion",
    "notFound",
    "forwarded",
];

/// Parse a body as JSON (when `content_type` says so, or it looks like an
/// object) or as a form.
pub fn parse(content_type: &str, body: &[u8]) -> Result<CtiParams, Invalid> {
    let is_json = content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let fields = if is_json {
        from_json(body)?
    } else {
        from_form(body)
    };
    from_fields(fields)
}

/// Field name → values (a list for `user`).
type Fields = Vec<(String, Vec<String>)>;

fn from_json(body: &[u8]) -> Result<Fields, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("body is not valid JSON ({e})")))?;
    let Value::Object(map) = value else {
        return Err(Invalid("body must be a JSON object".into()));
    };
    let mut fields = Vec::new();
    for (k, v) in map {
        let values = match v {
            Value::Null => vec![],
            Value::String(s) => vec![s],
            Value::Number(n) => vec![n.to_string()],
            Value::Bool(b) => vec![b.to_string()],
            Value::Array(items) => items
                .into_iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            Value::Object(_) => return Err(Invalid(format!("`{k}` must not be an object"))),
        };
        fields.push((k, values));
    }
    Ok(fields)
}

fn from_form(body: &[u8]) -> Fields {
    let mut fields: Fields = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        let key = k.trim_end_matches("[]").to_owned();
        match fields.iter_mut().find(|(name, _)| *name == key) {
            Some((_, values)) => values.push(v.into_owned()),
            None => fields.push((key, vec![v.into_owned()])),
        }
    }
    fields
}

fn from_fields(fields: Fields) -> Result<CtiParams, Invalid> {
    let get = |names: &[&str]| -> String {
        fields
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .and_then(|(_, v)| v.first().cloned())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let event = match get(&["event"]).as_str() {
        "newCall" => CtiEvent::NewCall,
        "answer" => CtiEvent::Answer,
        "hangup" => CtiEvent::Hangup,
        "" => {
            return Err(Invalid(
                "event is missing (newCall, answer or hangup)".into(),
            ));
        }
        other => {
            return Err(Invalid(format!(
                "event `{}` is not one of newCall, answer, hangup",
                printable(other)
            )));
        }
    };
    let direction = match get(&["direction"]).as_str() {
        "in" => Some(Direction::In),
        "out" => Some(Direction::Out),
        "" => None,
        other => {
            return Err(Invalid(format!(
                "direction `{}` is invalid (in or out)",
                printable(other)
            )));
        }
    };
    if event == CtiEvent::NewCall && direction.is_none() {
        return Err(Invalid("direction is missing (in or out)".into()));
    }
    let call_id = get(&["callId", "call_id"]);
    if call_id.is_empty() {
        return Err(Invalid("callId is missing".into()));
    }
    if call_id.len() > 200 || call_id.chars().any(|c| c.is_control()) {
        return Err(Invalid("callId is too long or not printable".into()));
    }
    let users = fields
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| {
            v.iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let cause = get(&["cause"]);
    Ok(CtiParams {
        event,
        call_id,
        direction,
        from: get(&["from"]),
        to: get(&["to"]),
        users,
        queue: get(&["queue"]).chars().take(100).collect(),
        cause: cause.chars().take(40).collect(),
        answering_number: get(&["answeringNumber", "answering_number"]),
    })
}

/// Echo at most 40 printable characters of a bad value back.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// A caller id that is no number: withheld, anonymous, unknown…
pub fn is_withheld(raw: &str) -> bool {
    let s = raw.trim().to_ascii_lowercase();
    s.is_empty()
        || matches!(
            s.as_str(),
            "anonymous" | "unknown" | "withheld" | "restricted" | "private" | "unavailable"
        )
        || !s.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_with_user_array_and_call_id_spelling() {
        let p = parse(
            "application/json",
            br#"{"event":"answer","call_id":"c1","user":["Anne","Bob"],"direction":"in","answeringNumber":"201"}"#,
        )
        .unwrap();
        assert_eq!(p.event, CtiEvent::Answer);
        assert_eq!(p.call_id, "c1");
        assert_eq!(p.users, vec!["Anne", "Bob"]);
        assert_eq!(p.answering_number, "201");
    }

    #[test]
    fn form_with_user_brackets() {
        let p = parse(
            "application/x-www-form-urlencoded",
            b"event=newCall&from=0612345678&to=0143986500&direction=in&callId=x9&user%5B%5D=Anne&user%5B%5D=Bob&queue=accueil",
        )
        .unwrap();
        assert_eq!(p.event, CtiEvent::NewCall);
        assert_eq!(p.direction, Some(Direction::In));
        assert_eq!(p.users, vec!["Anne", "Bob"]);
        assert_eq!(p.queue, "accueil");
    }

    #[test]
    fn bad_direction_and_event_are_invalid() {
        assert!(
            parse("", b"event=newCall&callId=1&direction=sideways")
                .unwrap_err()
                .0
                .contains("direction")
        );
        assert!(
            parse("", b"event=ring&callId=1&direction=in")
                .unwrap_err()
                .0
                .contains("event")
        );
        assert!(parse("", b"event=hangup").unwrap_err().0.contains("callId"));
    }

    #[test]
    fn withheld_numbers() {
        assert!(is_withheld("anonymous"));
        assert!(is_withheld(""));
        assert!(!is_withheld("+33612345678"));
    }
}
