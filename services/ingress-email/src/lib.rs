//! The email ingress role — **not yet served**.
//!
//! It will run an SMTP/LMTP listener and an IMAP poller, parse MIME, follow
//! threads and protect against loops, publishing intake events with
//! `EmailDetails` (`proto/guichet/intake/v1`). Until it is built,
//! `guichet serve ingress-email` refuses to start and `guichet up` leaves it out.
