//! Dossier's own domain values.

/// A dossier's human reference: `<PREFIX>-<year>-<6 digits>` (the platform's
/// vocabulary, shared with every channel that finds references in text).
pub use guichet_platform::reference::Reference;
