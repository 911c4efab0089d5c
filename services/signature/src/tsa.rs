//! RFC 3161 time-stamping of sealed evidence.
//!
//! The seal (Ed25519) proves the evidence was not changed since this
//! service sealed it, but its times are the service's own word. When
//! `signature.tsa_url` names a time-stamping authority, the SHA-256 of the
//! seal's signature value is sent to it (`application/timestamp-query`) and
//! the token it returns is kept next to the seal (as CAdES-T does for a
//! signature): an independent, dated proof that the sealed evidence existed
//! then. `Verify` checks the token is the authority's answer for this very
//! seal (message imprint and nonce) and reports its time; the authority's
//! own signature on the token is checked offline with its certificate
//! (`openssl ts -verify`, see the README).
//!
//! The DER here is the small fixed subset RFC 3161 needs, written and read
//! by hand: a `TimeStampReq`, and in the answer the status, the token
//! (`ContentInfo`/`SignedData`) and its `TSTInfo`.

use chrono::{DateTime, NaiveDateTime, Utc};

/// id-sha256 (2.16.840.1.101.3.4.2.1).
const SHA256_OID: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// id-signedData (1.2.840.113549.1.7.2).
const SIGNED_DATA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// id-ct-TSTInfo (1.2.840.113549.1.9.16.1.4).
const TST_INFO_OID: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04,
];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const GENERALIZED_TIME: u8 = 0x18;
const CONTEXT_0: u8 = 0xa0;

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of a non-negative number.
fn integer(n: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> = n
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.is_empty() || bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    tlv(INTEGER, &bytes)
}

/// `TimeStampReq` for the SHA-256 `hash`, with `nonce`, asking for the
/// authority's certificate in the token.
pub fn request(hash: &[u8; 32], nonce: u64) -> Vec<u8> {
    let algorithm = tlv(SEQUENCE, &[tlv(OID, SHA256_OID), tlv(NULL, &[])].concat());
    let imprint = tlv(SEQUENCE, &[algorithm, tlv(OCTET_STRING, hash)].concat());
    tlv(
        SEQUENCE,
        &[integer(1), imprint, integer(nonce), tlv(BOOLEAN, &[0xff])].concat(),
    )
}

/// One DER element: its tag, its content, and the whole encoding.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    raw: &'a [u8],
}

fn read(input: &[u8]) -> Result<(Element<'_>, &[u8]), String> {
    let bad = || "réponse DER tronquée ou invalide".to_owned();
    let tag = *input.first().ok_or_else(bad)?;
    if tag & 0x1f == 0x1f {
        return Err("étiquette DER longue non prise en charge".into());
    }
    let first = *input.get(1).ok_or_else(bad)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(2 + i).ok_or_else(bad)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len).ok_or_else(bad)?;
    if input.len() < end {
        return Err(bad());
    }
    Ok((
        Element {
            tag,
            content: &input[header..end],
            raw: &input[..end],
        },
        &input[end..],
    ))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(Element<'a>, &'a [u8]), String> {
    let (e, rest) = read(input)?;
    if e.tag != tag {
        return Err(format!("{what} attendu dans la réponse de l'horodatage"));
    }
    Ok((e, rest))
}

fn uint(content: &[u8]) -> u64 {
    content.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
}

/// What a token says: the hash it time-stamps, when, its serial number and
/// the nonce of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TstInfo {
    pub imprint: Vec<u8>,
    pub gen_time: DateTime<Utc>,
    pub serial_hex: String,
    pub nonce: Option<u64>,
}

/// The token of a `TimeStampResp`, when the authority granted it.
pub fn token_of_response(der: &[u8]) -> Result<Vec<u8>, String> {
    let (resp, _) = expect(der, SEQUENCE, "TimeStampResp")?;
    let (status_info, rest) = expect(resp.content, SEQUENCE, "PKIStatusInfo")?;
    let (status, _) = expect(status_info.content, INTEGER, "PKIStatus")?;
    let status = uint(status.content);
    if status > 1 {
        return Err(format!(
            "l'autorité d'horodatage a refusé la demande (statut {status})"
        ));
    }
    let (token, _) = expect(rest, SEQUENCE, "TimeStampToken")?;
    Ok(token.raw.to_vec())
}

/// Read the `TSTInfo` inside a token (`ContentInfo` of `SignedData`).
pub fn inspect(token: &[u8]) -> Result<TstInfo, String> {
    let (content_info, _) = expect(token, SEQUENCE, "ContentInfo")?;
    let (oid, rest) = expect(content_info.content, OID, "contentType")?;
    if oid.content != SIGNED_DATA_OID {
        return Err("le jeton d'horodatage n'est pas un SignedData".into());
    }
    let (explicit, _) = expect(rest, CONTEXT_0, "[0] content")?;
    let (signed_data, _) = expect(explicit.content, SEQUENCE, "SignedData")?;
    let (_version, rest) = expect(signed_data.content, INTEGER, "version")?;
    let (_digests, rest) = expect(rest, SET, "digestAlgorithms")?;
    let (encap, _) = expect(rest, SEQUENCE, "encapContentInfo")?;
    let (ctype, rest) = expect(encap.content, OID, "eContentType")?;
    if ctype.content != TST_INFO_OID {
        return Err("le jeton ne contient pas de TSTInfo".into());
    }
    let (explicit, _) = expect(rest, CONTEXT_0, "[0] eContent")?;
    let (octets, _) = expect(explicit.content, OCTET_STRING, "eContent")?;
    let (tst, _) = expect(octets.content, SEQUENCE, "TSTInfo")?;
    let (_version, rest) = expect(tst.content, INTEGER, "version")?;
    let (_policy, rest) = expect(rest, OID, "policy")?;
    let (imprint, rest) = expect(rest, SEQUENCE, "messageImprint")?;
    let (_alg, after_alg) = expect(imprint.content, SEQUENCE, "hashAlgorithm")?;
    let (hashed, _) = expect(after_alg, OCTET_STRING, "hashedMessage")?;
    let (serial, rest) = expect(rest, INTEGER, "serialNumber")?;
    let (time, mut rest) = expect(rest, GENERALIZED_TIME, "genTime")?;
    let text = std::str::from_utf8(time.content).map_err(|_| "genTime illisible".to_owned())?;
    let gen_time = parse_generalized_time(text)?;
    // Optional: accuracy (SEQUENCE), ordering (BOOLEAN), nonce (INTEGER).
    let mut nonce = None;
    while !rest.is_empty() {
        let (e, next) = read(rest)?;
        if e.tag == INTEGER {
            nonce = Some(uint(e.content));
            break;
        }
        rest = next;
    }
    Ok(TstInfo {
        imprint: hashed.content.to_vec(),
        gen_time,
        serial_hex: serial.content.iter().map(|b| format!("{b:02x}")).collect(),
        nonce,
    })
}

/// `YYYYMMDDHHMMSS[.f…]Z`.
fn parse_generalized_time(s: &str) -> Result<DateTime<Utc>, String> {
    let bad = || format!("genTime « {s} » illisible");
    let s = s.strip_suffix('Z').ok_or_else(bad)?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let t = NaiveDateTime::parse_from_str(whole, "%Y%m%d%H%M%S").map_err(|_| bad())?;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        let n: u32 = digits.parse().map_err(|_| bad())?;
        n * 10u32.pow(9 - digits.len() as u32)
    };
    Ok(t.and_utc() + chrono::Duration::nanoseconds(i64::from(nanos)))
}

/// Ask the authority at `url` to time-stamp `hash`; returns the token and
/// what it says, checked against the request.
pub async fn stamp(
    http: &reqwest::Client,
    url: &str,
    hash: &[u8; 32],
) -> Result<(Vec<u8>, TstInfo), String> {
    let nonce: u64 = rand::random::<u64>() >> 1;
    let resp = http
        .post(url)
        .header("Content-Type", "application/timestamp-query")
        .body(request(hash, nonce))
        .send()
        .await
        .map_err(|e| format!("autorité d'horodatage injoignable : {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "l'autorité d'horodatage a répondu {}",
            resp.status()
        ));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("réponse de l'horodatage illisible : {e}"))?;
    let token = token_of_response(&body)?;
    let info = inspect(&token)?;
    if info.imprint != hash {
        return Err("le jeton d'horodatage porte sur une autre empreinte".into());
    }
    if info.nonce != Some(nonce) {
        return Err("le jeton d'horodatage ne reprend pas le nonce de la demande".into());
    }
    Ok((token, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_der_of_rfc_3161() {
        let der = request(&[0xab; 32], 0x0102);
        // SEQUENCE { INTEGER 1, SEQUENCE { SEQUENCE { OID sha256, NULL },
        // OCTET STRING (32) }, INTEGER 0x0102, BOOLEAN TRUE }
        let mut expected = vec![
            0x30, 0x3d, 0x02, 0x01, 0x01, 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09,
        ];
        expected.extend_from_slice(SHA256_OID);
        expected.extend_from_slice(&[0x05, 0x00, 0x04, 0x20]);
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0x02, 0x02, 0x01, 0x02, 0x01, 0x01, 0xff]);
        assert_eq!(der, expected);
        // A nonce with its high bit set gets a leading zero (positive).
        assert_eq!(integer(0x80), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(0), vec![0x02, 0x01, 0x00]);
    }

    #[test]
    fn long_lengths_are_encoded_and_read_back() {
        let content = vec![7u8; 300];
        let der = tlv(OCTET_STRING, &content);
        assert_eq!(&der[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (e, rest) = read(&der).unwrap();
        assert_eq!(e.content.len(), 300);
        assert!(rest.is_empty());
        assert!(read(&der[..100]).is_err(), "truncated");
    }

    #[test]
    fn generalized_times_with_and_without_fractions() {
        let t = parse_generalized_time("20261129101530Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-29T10:15:30+00:00");
        let t = parse_generalized_time("20261129101530.25Z").unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 250);
        assert!(parse_generalized_time("20261129101530").is_err());
    }

    #[test]
    fn a_refused_request_is_reported() {
        // TimeStampResp { status { INTEGER 2 (rejection) } }
        let der = tlv(SEQUENCE, &tlv(SEQUENCE, &integer(2)));
        let e = token_of_response(&der).unwrap_err();
        assert!(e.contains("statut 2"), "{e}");
    }
}
