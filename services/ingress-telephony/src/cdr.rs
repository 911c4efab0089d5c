//! Asterisk `Master.csv` call-detail records (cdr_csv), in the standard
//! column order:
//!
//! accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp,
//! lastdata, start, answer, end, duration, billsec, disposition, amaflags,
//! uniqueid, userfield (then, on recent versions, peeraccount, linkedid,
//! sequence — ignored).
//!
//! `uniqueid` is required (cdr_csv's `loguniqueid = yes`): it is what makes
//! an import idempotent. Times are `YYYY-MM-DD HH:MM:SS`, in the PBX's local
//! time unless `usegmtime` is set.

use chrono::{DateTime, NaiveDateTime, Utc};

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr {
    pub uniqueid: String,
    pub src: String,
    pub dst: String,
    /// The caller ID as the PBX shows it: `"Jean Dupont" <0612345678>`.
    pub clid: String,
    pub dcontext: String,
    pub start: DateTime<Utc>,
    pub answer: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    pub duration: u32,
    pub billsec: u32,
    /// ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION.
    pub disposition: String,
}

/// Parse every line; malformed lines are reported as `line N: reason` and
/// the others kept.
pub fn parse(csv_bytes: &[u8], local_time: bool) -> (Vec<Cdr>, Vec<String>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_bytes);
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 1;
        match row {
            Ok(r) => {
                if r.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                match record(&r, local_time) {
                    Ok(c) => records.push(c),
                    Err(e) => errors.push(format!("line {line}: {e}")),
                }
            }
            Err(e) => errors.push(format!("line {line}: not CSV ({e})")),
        }
    }
    (records, errors)
}

fn record(r: &csv::StringRecord, local_time: bool) -> Result<Cdr, String> {
    if r.len() < 17 {
        return Err(format!(
            "{} columns, expected at least 17 (Master.csv with uniqueid)",
            r.len()
        ));
    }
    let field = |i: usize| r.get(i).unwrap_or_default().trim().to_owned();
    let time = |i: usize, name: &str| -> Result<Option<DateTime<Utc>>, String> {
        let s = field(i);
        if s.is_empty() {
            return Ok(None);
        }
        let t = NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S")
            .map_err(|_| format!("{name} `{s}` is not YYYY-MM-DD HH:MM:SS"))?;
        Ok(Some(if local_time {
            guichet_platform::calendar::from_paris(t)
        } else {
            t.and_utc()
        }))
    };
    let number = |i: usize, name: &str| -> Result<u32, String> {
        field(i)
            .parse::<u32>()
            .map_err(|_| format!("{name} `{}` is not a number of seconds", field(i)))
    };
    let uniqueid = field(16);
    if uniqueid.is_empty() || uniqueid.len() > 200 {
        return Err("uniqueid is missing".into());
    }
    let start = time(9, "start")?.ok_or("start is missing")?;
    let answer = time(10, "answer")?;
    let end = time(11, "end")?.ok_or("end is missing")?;
    let duration = number(12, "duration")?;
    let billsec = number(13, "billsec")?;
    if billsec > duration {
        return Err("billsec is longer than duration".into());
    }
    Ok(Cdr {
        uniqueid,
        src: field(1),
        dst: field(2),
        clid: field(4),
        dcontext: field(3),
        start,
        answer,
        end,
        duration,
        billsec,
        disposition: field(14).to_ascii_uppercase(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SAMPLE: &str = r#""","0612345678","200","from-trunk","""Martin"" <0612345678>","SIP/trunk-0001","SIP/200-0002","Dial","SIP/200","2026-11-27 10:00:00","2026-11-27 10:00:20","2026-11-27 10:03:20",200,180,"ANSWERED","DOCUMENTATION","1700000000.1",""
"","anonymous","200","from-trunk","","SIP/trunk-0003","","Dial","SIP/200","2026-11-27 11:00:00",,"2026-11-27 11:00:30",30,0,"NO ANSWER","DOCUMENTATION","1700000000.2",""
this,is,not,a,record
"#;

    #[test]
    fn parses_records_and_reports_malformed_lines() {
        let (records, errors) = parse(SAMPLE.as_bytes(), true);
        assert_eq!(records.len(), 2);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 3:"), "{errors:?}");
        let a = &records[0];
        assert_eq!(a.uniqueid, "1700000000.1");
        assert_eq!(a.billsec, 180);
        // 10:00 in Paris in November is 09:00 UTC.
        assert_eq!(a.start.to_rfc3339(), "2026-11-27T09:00:00+00:00");
        assert_eq!(records[1].answer, None);
        assert_eq!(records[1].disposition, "NO ANSWER");
    }
}
