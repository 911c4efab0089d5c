//! The telephony ingress role — **not yet served**.
//!
//! It will receive PBX call events on a Zammad-compatible generic CTI
//! webhook, import Asterisk CDRs and turn missed calls and callback requests
//! into intake events. Contract: `proto/guichet/telephony/v1`. Until it is
//! built, `guichet serve ingress-telephony` refuses to start and `guichet up`
//! leaves it out.
