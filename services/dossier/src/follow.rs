//! Follow codes: the secret a citizen follows a dossier with on the public
//! pages ("Suivre ma demande"), with its reference. A code is the
//! HMAC-SHA256 of the dossier id under the role's follow key, cut to 12
//! characters of an unambiguous alphabet (60 bits), shown as
//! `XXXX-XXXX-XXXX`: derived, so it is never stored and every message can
//! carry it again; the key is one row of this role's database, created by
//! the first replica that needs it.

use hmac::{Hmac, Mac};
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, ExprTrait, TryGetable};
use sha2::Sha256;
use tokio::sync::OnceCell;

/// Crockford's base 32: no I, L, O nor U; a typed O reads as 0, an I or
/// an L as 1.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#[derive(Clone)]
pub struct Follow {
    db: DatabaseConnection,
    key: std::sync::Arc<OnceCell<Vec<u8>>>,
}

impl Follow {
    pub fn new(db: DatabaseConnection) -> Follow {
        Follow {
            db,
            key: std::sync::Arc::new(OnceCell::new()),
        }
    }

    async fn key(&self) -> Result<&[u8], DbErr> {
        self.key
            .get_or_try_init(|| async {
                let mine = hex(&rand::random::<[u8; 32]>());
                // The first replica's key wins; everyone reads it back.
                let insert = Query::insert()
                    .into_table(Alias::new("follow_keys"))
                    .columns([Alias::new("id"), Alias::new("key")])
                    .values_panic([1.into(), mine.into()])
                    .on_conflict(OnConflict::column(Alias::new("id")).do_nothing().to_owned())
                    .to_owned();
                self.db.execute(&insert).await?;
                let select = Query::select()
                    .column(Alias::new("key"))
                    .from(Alias::new("follow_keys"))
                    .and_where(Expr::col(Alias::new("id")).eq(1))
                    .to_owned();
                let row = self
                    .db
                    .query_one(&select)
                    .await?
                    .ok_or_else(|| DbErr::RecordNotFound("follow key".into()))?;
                let key = String::try_get(&row, "", "key")
                    .map_err(|e| DbErr::Custom(format!("follow key: {e:?}")))?;
                Ok(key.into_bytes())
            })
            .await
            .map(Vec::as_slice)
    }

    /// The follow code of `dossier_id`, `XXXX-XXXX-XXXX`.
    pub async fn code(&self, dossier_id: &str) -> Result<String, DbErr> {
        Ok(format_code(&raw_code(self.key().await?, dossier_id)))
    }

    /// Whether `given` (spaces, dashes and case ignored) is the code of
    /// `dossier_id`, in constant time. The caller runs it for an unknown
    /// reference too, on a stand-in id, so both take the same time.
    pub async fn matches(&self, dossier_id: &str, given: &str) -> Result<bool, DbErr> {
        let want = raw_code(self.key().await?, dossier_id);
        let given = normalize(given);
        Ok(guichet_platform::secret::constant_time_eq(
            want.as_bytes(),
            given.as_bytes(),
        ))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn raw_code(key: &[u8], dossier_id: &str) -> String {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    m.update(b"follow\x1f");
    m.update(dossier_id.as_bytes());
    let bytes = m.finalize().into_bytes();
    // 12 characters of 5 bits from the first 60 bits.
    let mut acc: u64 = 0;
    for b in &bytes[..8] {
        acc = (acc << 8) | u64::from(*b);
    }
    (0..12)
        .map(|i| ALPHABET[((acc >> (55 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// What a citizen typed, as a raw code: separators dropped, upper case.
fn normalize(given: &str) -> String {
    given
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

fn format_code(raw: &str) -> String {
    raw.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_per_dossier_and_read_back_as_typed() {
        let a = raw_code(b"key", "dossier-1");
        assert_eq!(a.len(), 12);
        assert_eq!(a, raw_code(b"key", "dossier-1"));
        assert_ne!(a, raw_code(b"key", "dossier-2"));
        assert_ne!(a, raw_code(b"other key", "dossier-1"));
        let shown = format_code(&a);
        assert_eq!(shown.len(), 14);
        assert_eq!(normalize(&shown.to_lowercase().replace('-', " ")), a);
        assert!(a.chars().all(|c| ALPHABET.contains(&(c as u8))));
        assert_eq!(normalize("o1-il"), "0111");
    }
}
