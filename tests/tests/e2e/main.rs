//! End-to-end flows across roles, over real NATS JetStream and real SQLite
//! and PostgreSQL databases. One test binary; each test isolated by its own
//! subject/stream prefix, databases and ports (see guichet-testkit).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod appointment_ants;
mod appointment_booking;
mod appointment_cache;
mod appointment_timers;
mod auth;
mod config;
mod counter_checkin;
mod counter_desks;
mod deploy;
mod desks;
mod dossier_api;
mod dossier_intake;
mod dossier_store;
mod email_imap;
mod email_replies;
mod email_roundtrip;
mod email_smtp;
mod events;
mod indicators;
mod intake;
mod limits;
mod notification_delivery;
mod objects_s3;
mod portal;
mod public;
mod routing_correlation;
mod routing_intake;
mod routing_offers;
mod routing_queue;
mod scan_letters;
mod scan_quarantine;
mod scan_restart;
mod scene;
mod signature_evidence;
mod signature_flow;
mod slice;
mod state_actions;
mod studio;
mod studio_rules;
mod telephony_cdr;
mod telephony_cti;
mod up;
