//! Writing a parsed contact directory ([`crate::contacts`]) to the store: all rows in one
//! transaction, so that an import is whole or not at all.

use chrono::{DateTime, Utc};
use store::{ContactRecord, Store};

use crate::contacts::Contact;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub added: usize,
    pub updated: usize,
}

/// Stores `contacts` (new numbers added, known ones replaced), calling `progress(done,
/// total)` as it goes.
pub async fn import_contacts(
    store: &Store,
    contacts: &[Contact],
    now: DateTime<Utc>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Imported, store::StoreError> {
    let mut tx = store.begin().await?;
    let mut done = Imported::default();
    for (i, c) in contacts.iter().enumerate() {
        let record = ContactRecord {
            phone: c.phone.to_string(),
            name: c.name.clone(),
            commune: c.commune.to_string(),
            role: c.role.code().to_owned(),
            language: c.language.clone(),
            opted_out: c.opted_out,
            updated: now,
        };
        if tx.upsert_contact(&record).await? {
            done.added += 1;
        } else {
            done.updated += 1;
        }
        if (i + 1) % 250 == 0 || i + 1 == contacts.len() {
            progress(i + 1, contacts.len());
        }
    }
    tx.commit().await?;
    Ok(done)
}
