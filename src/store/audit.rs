//! Persistence of the audit log ([`crate::audit`]): appended by every admin write in its own
//! transaction ([`Store::audited`]), by denied calls on their own, listed with filters and
//! pruned past the retention.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Change, Result, Store, Tx};
use crate::audit::{Entry, Filter, Record};

impl Store {
    /// A copy of this store whose writes each append `record`, in the write's transaction, with
    /// its target filled from the write's change events when empty. Reads are unaffected.
    pub fn audited(&self, record: Record) -> Store {
        Store {
            audit: Some(std::sync::Arc::new(record)),
            ..self.clone()
        }
    }

    /// The record [`Self::audited`] attached, if any.
    pub(super) fn audit_record(&self) -> Option<&Record> {
        self.audit.as_deref()
    }

    /// Appends a record outside any write (a denied call has none).
    pub async fn append_audit(&self, record: &Record) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert(&mut tx, record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// At most `limit` records matching `filter`, oldest first.
    pub async fn list_audit(&self, filter: &Filter, limit: i64) -> Result<Vec<Entry>> {
        let rows = sqlx::query(
            "SELECT id, at, principal, key_id, peer, action, target, summary, outcome \
             FROM audit_log \
             WHERE ($1 = 0 OR at >= $2) AND ($3 = '' OR principal = $3) \
               AND ($4 = '' OR target LIKE $5 ESCAPE '\\') AND ($6 = '' OR action = $6) \
               AND id > $7 \
             ORDER BY id LIMIT $8",
        )
        .bind(i64::from(filter.since.is_some()))
        .bind(filter.since.unwrap_or(0))
        .bind(filter.principal.as_str())
        .bind(filter.target.as_str())
        .bind(format!("%{}%", like_escaped(&filter.target)))
        .bind(filter.action.as_str())
        .bind(filter.after_id.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Deletes the records older than `before` (Unix seconds); how many went.
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// Appends `record` for a write that made `changes` (its target, when empty, names them).
pub(super) async fn append_for(tx: &mut Tx<'_>, record: &Record, changes: &[Change]) -> Result<()> {
    if !record.target.is_empty() || changes.is_empty() {
        return insert(tx, record).await;
    }
    let mut named: Vec<String> = Vec::with_capacity(changes.len());
    for change in changes {
        let (kind, subject) = change.kind_and_subject();
        let name = format!("{kind}:{subject}");
        if !named.contains(&name) {
            named.push(name);
        }
    }
    let record = Record {
        target: named.join(", "),
        ..record.clone()
    };
    insert(tx, &record).await
}

async fn insert(tx: &mut Tx<'_>, r: &Record) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, principal, key_id, peer, action, target, summary, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(r.at)
    .bind(r.principal.as_str())
    .bind(r.key_id.as_str())
    .bind(r.peer.as_str())
    .bind(r.action.as_str())
    .bind(r.target.as_str())
    .bind(r.summary.as_str())
    .bind(r.outcome.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `text` matched literally inside a `LIKE … ESCAPE '\'` pattern.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn entry_from_row(row: &AnyRow) -> Result<Entry> {
    let outcome: String = row.try_get("outcome")?;
    Ok(Entry {
        id: row.try_get("id")?,
        record: Record {
            at: row.try_get("at")?,
            principal: row.try_get("principal")?,
            key_id: row.try_get("key_id")?,
            peer: row.try_get("peer")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            summary: row.try_get("summary")?,
            outcome: outcome.parse().map_err(super::corrupt)?,
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(super::like_escaped("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
