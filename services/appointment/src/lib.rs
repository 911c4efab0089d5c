//! The appointment role — **not yet served**.
//!
//! It will manage sites, desks, schedules, slots and bookings without
//! double-booking, with reminders. Contract: `proto/guichet/appointment/v1`.
//! Until it is built, `guichet serve appointment` refuses to start and
//! `guichet up` leaves it out.
