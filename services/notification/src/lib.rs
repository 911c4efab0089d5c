//! The notification role — **not yet served**.
//!
//! It will deliver SMS and email from stream NOTIFY with retries, French
//! templates and delivery status. Contract: `proto/guichet/notification/v1`.
//! Until it is built, `guichet serve notification` refuses to start and
//! `guichet up` leaves it out.
