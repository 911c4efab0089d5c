//! Who is on the other end of an HTTP request: the peer, or the client a
//! trusted reverse proxy forwarded (the signing pages' evidence, the
//! citizens' pages' per-address limits).

use std::net::IpAddr;

use http::HeaderMap;

/// The client address: the peer, or — when the peer is a trusted proxy —
/// the right-most X-Forwarded-For entry that is not a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut ip = peer;
    for h in headers.get_all("x-forwarded-for") {
        let Ok(v) = h.to_str() else { continue };
        for part in v.split(',').rev() {
            match part.trim().parse::<IpAddr>() {
                Ok(p) if trusted.contains(&p) => continue,
                Ok(p) => return p,
                Err(_) => return ip,
            }
        }
    }
    // Only proxies in the chain: keep the last one seen.
    if let Some(first) = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|p| p.trim().parse().ok())
    {
        ip = first;
    }
    ip
}
