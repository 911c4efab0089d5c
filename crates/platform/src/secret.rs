//! Comparing secrets (webhook tokens, form tokens) in constant time, so the
//! time an answer takes says nothing about how much of a guess was right.

use subtle::ConstantTimeEq;

/// Whether `a` and `b` are equal, in time independent of their content
/// (their lengths may show).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_secrets_match_and_others_do_not() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-tokem"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
        assert!(constant_time_eq(b"", b""));
    }
}
