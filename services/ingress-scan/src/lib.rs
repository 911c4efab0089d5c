//! The scanned-mail ingress role — **not yet served**.
//!
//! It will take scanned letters (PDF, TIFF, PNG, JPEG), run French OCR and
//! extract references and senders. Contract: `proto/guichet/scan/v1`. Until
//! it is built, `guichet serve ingress-scan` refuses to start and `guichet up`
//! leaves it out.
