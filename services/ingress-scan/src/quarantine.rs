//! Why a file was not turned into a request: a reason operators can act on
//! (the proto's `QuarantineReason`) and a detail that never quotes the
//! letter's content.

use guichet_proto::scan::v1::QuarantineReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    EmptyFile,
    Truncated,
    UnsupportedType,
    EncryptedPdf,
    Unreadable,
    ImageTooSmall,
    OcrTimeout,
    TooManyPages,
    TooLarge,
    NoText,
    OcrFailed,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::EmptyFile,
        Reason::Truncated,
        Reason::UnsupportedType,
        Reason::EncryptedPdf,
        Reason::Unreadable,
        Reason::ImageTooSmall,
        Reason::OcrTimeout,
        Reason::TooManyPages,
        Reason::TooLarge,
        Reason::NoText,
        Reason::OcrFailed,
    ];

    /// The stored and filterable name (the proto enum value without prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EmptyFile => "EMPTY_FILE",
            Reason::Truncated => "TRUNCATED",
            Reason::UnsupportedType => "UNSUPPORTED_TYPE",
            Reason::EncryptedPdf => "ENCRYPTED_PDF",
            Reason::Unreadable => "UNREADABLE",
            Reason::ImageTooSmall => "IMAGE_TOO_SMALL",
            Reason::OcrTimeout => "OCR_TIMEOUT",
            Reason::TooManyPages => "TOO_MANY_PAGES",
            Reason::TooLarge => "TOO_LARGE",
            Reason::NoText => "NO_TEXT",
            Reason::OcrFailed => "OCR_FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        let s = s.trim().trim_start_matches("QUARANTINE_REASON_");
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn to_proto(self) -> QuarantineReason {
        match self {
            Reason::EmptyFile => QuarantineReason::EmptyFile,
            Reason::Truncated => QuarantineReason::Truncated,
            Reason::UnsupportedType => QuarantineReason::UnsupportedType,
            Reason::EncryptedPdf => QuarantineReason::EncryptedPdf,
            Reason::Unreadable => QuarantineReason::Unreadable,
            Reason::ImageTooSmall => QuarantineReason::ImageTooSmall,
            Reason::OcrTimeout => QuarantineReason::OcrTimeout,
            Reason::TooManyPages => QuarantineReason::TooManyPages,
            Reason::TooLarge => QuarantineReason::TooLarge,
            Reason::NoText => QuarantineReason::NoText,
            Reason::OcrFailed => QuarantineReason::OcrFailed,
        }
    }
}

/// A file set aside, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub reason: Reason,
    pub detail: String,
}

impl Quarantine {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Quarantine {
        Quarantine {
            reason,
            detail: detail.into(),
        }
    }
}

/// Reading a file either sets it aside (its own fault) or cannot happen now
/// (ours: a tool missing, a disk full); the file is then left where it is
/// and tried again.
#[derive(Debug)]
pub enum ReadError {
    Quarantine(Quarantine),
    Unavailable(String),
}

impl From<Quarantine> for ReadError {
    fn from(q: Quarantine) -> Self {
        ReadError::Quarantine(q)
    }
}
