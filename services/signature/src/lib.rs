//! The signature role — **not yet served**.
//!
//! It will collect simple electronic signatures by SMS one-time code and
//! seal their evidence. Contract: `proto/guichet/signature/v1`. Until it is
//! built, `guichet serve signature` refuses to start and `guichet up` leaves
//! it out.
