//! [`CertStore`](super::CertStore) for [`SledStore`]: certificate records in `certs` and the
//! expiry index in `expiry`, always changed together in one transaction.
//!
//! Index key: `not_after` as big-endian `u64` ‖ the 16-byte `CertId`, value empty. Big-endian
//! makes byte order equal time order, so "due before T" is the range `..T‖0…` and touches only
//! due entries. Only active certificates are indexed; a superseded one leaves the index.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree, abort};

use super::CertStore;
use super::error::{CorruptError, Result, StoreError};
use super::records::{CERT_V, CertRec, POLICY_V, decode, encode, what};
use super::sled_store::{SledStore, tx};
use super::types::{CertId, CertRecord, CertStatus, DueCert};

/// Length of an expiry index key.
const INDEX_LEN: usize = 8 + 16;

pub(crate) fn index_key(not_after: u64, id: CertId) -> [u8; INDEX_LEN] {
    let mut k = [0u8; INDEX_LEN];
    k[..8].copy_from_slice(&not_after.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

fn parse_index_key(k: &[u8]) -> Result<DueCert> {
    let err = || StoreError::corrupt(what("expiry", k), CorruptError::Index);
    if k.len() != INDEX_LEN {
        return Err(err());
    }
    let (t, id) = k.split_at(8);
    Ok(DueCert {
        not_after: u64::from_be_bytes(t.try_into().map_err(|_| err())?),
        id: CertId::from_slice(id).ok_or_else(err)?,
    })
}

fn decode_cert(id: CertId, bytes: &[u8]) -> Result<CertRecord> {
    decode::<CertRec>(|| what("certs", id.as_bytes()), CERT_V, bytes).map(|r| r.into_domain(id))
}

fn fail<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    abort(e)
}

/// Inside a transaction: removes `id`'s current index entry, if it is active.
fn unindex(
    c: &TransactionalTree,
    e: &TransactionalTree,
    id: CertId,
) -> Result<Option<CertRecord>, ConflictableTransactionError<StoreError>> {
    let Some(v) = c.get(id.as_bytes())? else {
        return Ok(None);
    };
    let old = decode_cert(id, &v).or_else(fail)?;
    if old.status == CertStatus::Active {
        e.remove(&index_key(old.not_after, id))?;
    }
    Ok(Some(old))
}

/// Iterator over the expiry index below a bound; counts the index entries it read.
pub struct DueIter {
    inner: sled::Iter,
    visited: usize,
}

impl DueIter {
    /// How many index entries have been read so far.
    pub fn visited(&self) -> usize {
        self.visited
    }
}

impl Iterator for DueIter {
    type Item = Result<DueCert>;
    fn next(&mut self) -> Option<Self::Item> {
        let kv = self.inner.next()?;
        self.visited += 1;
        Some(
            kv.map_err(StoreError::Db)
                .and_then(|(k, _)| parse_index_key(&k)),
        )
    }
}

impl SledStore {
    /// Active certificates with `not_after < t`, in expiry order, as a lazy range scan.
    pub fn due_iter(&self, t: u64) -> DueIter {
        let d = self.d();
        DueIter {
            inner: d.t.expiry.range(..t.to_be_bytes()),
            visited: 0,
        }
    }
}

impl CertStore for SledStore {
    fn put_cert(&self, cert: &CertRecord) -> Result<()> {
        self.put_certs(std::slice::from_ref(cert))
    }

    fn put_certs(&self, certs: &[CertRecord]) -> Result<()> {
        let d = self.d();
        let mut encoded = Vec::with_capacity(certs.len());
        for c in certs {
            if c.not_after < c.not_before {
                return Err(StoreError::InvalidCert {
                    id: c.id,
                    reason: "not_after is before not_before",
                });
            }
            encoded.push(encode(CERT_V, &CertRec::from_domain(c)));
        }
        tx(
            (&d.t.certs, &d.t.expiry, &d.t.keys).transaction(|(c, e, k)| {
                for (cert, bytes) in certs.iter().zip(&encoded) {
                    if let Some(key_id) = cert.key_id
                        && k.get(key_id.as_bytes())?.is_none()
                    {
                        return fail(StoreError::KeyIdNotFound(key_id));
                    }
                    unindex(c, e, cert.id)?;
                    c.insert(cert.id.as_bytes(), bytes.as_slice())?;
                    if cert.status == CertStatus::Active {
                        e.insert(&index_key(cert.not_after, cert.id), &[])?;
                    }
                }
                Ok(())
            }),
        )?;
        d.flush()
    }

    fn get_cert(&self, id: CertId) -> Result<CertRecord> {
        let d = self.d();
        match d.t.certs.get(id.as_bytes())? {
            Some(v) => decode_cert(id, &v),
            None => Err(StoreError::CertNotFound(id)),
        }
    }

    fn list_certs(&self) -> Result<Vec<CertRecord>> {
        let d = self.d();
        let mut out = Vec::new();
        for kv in &d.t.certs {
            let (k, v) = kv?;
            let id = CertId::from_slice(&k)
                .ok_or_else(|| StoreError::corrupt(what("certs", &k), CorruptError::Index))?;
            out.push(decode_cert(id, &v)?);
        }
        out.sort_by_key(|c| (c.not_after, c.id));
        Ok(out)
    }

    fn due_before(&self, t: u64) -> Result<Vec<DueCert>> {
        self.due_iter(t).collect()
    }

    fn next_due(&self) -> Result<Option<DueCert>> {
        self.d()
            .t
            .expiry
            .first()?
            .map(|(k, _)| parse_index_key(&k))
            .transpose()
    }

    fn mark_superseded(&self, id: CertId, by: Option<CertId>, at: u64) -> Result<()> {
        let d = self.d();
        tx((&d.t.certs, &d.t.expiry).transaction(|(c, e)| {
            let Some(mut rec) = unindex(c, e, id)? else {
                return fail(StoreError::CertNotFound(id));
            };
            rec.status = CertStatus::Superseded { by, at };
            c.insert(id.as_bytes(), encode(CERT_V, &CertRec::from_domain(&rec)))?;
            Ok(())
        }))?;
        d.flush()
    }

    fn delete_cert(&self, id: CertId) -> Result<()> {
        let d = self.d();
        tx(
            (&d.t.certs, &d.t.expiry, &d.t.renewals).transaction(|(c, e, r)| {
                if unindex(c, e, id)?.is_none() {
                    return fail(StoreError::CertNotFound(id));
                }
                c.remove(id.as_bytes())?;
                r.remove(id.as_bytes())?;
                Ok(())
            }),
        )?;
        d.flush()
    }

    fn put_renewal(&self, id: CertId, policy: &serde_json::Value) -> Result<()> {
        let d = self.d();
        let bytes = encode(POLICY_V, policy);
        tx((&d.t.certs, &d.t.renewals).transaction(|(c, r)| {
            if c.get(id.as_bytes())?.is_none() {
                return fail(StoreError::CertNotFound(id));
            }
            r.insert(id.as_bytes(), bytes.as_slice())?;
            Ok(())
        }))?;
        d.flush()
    }

    fn first_due_from(&self, t: u64) -> Result<Option<DueCert>> {
        self.d()
            .t
            .expiry
            .range(t.to_be_bytes()..)
            .next()
            .transpose()?
            .map(|(k, _)| parse_index_key(&k))
            .transpose()
    }

    fn get_renewal(&self, id: CertId) -> Result<Option<serde_json::Value>> {
        self.d()
            .t
            .renewals
            .get(id.as_bytes())?
            .map(|v| decode(|| what("renewals", id.as_bytes()), POLICY_V, &v))
            .transpose()
    }

    fn renewals(&self) -> Result<Vec<(CertId, serde_json::Value)>> {
        let d = self.d();
        let mut out = Vec::new();
        for kv in &d.t.renewals {
            let (k, v) = kv?;
            let id = CertId::from_slice(&k)
                .ok_or_else(|| StoreError::corrupt(what("renewals", &k), CorruptError::Index))?;
            out.push((id, decode(|| what("renewals", &k), POLICY_V, &v)?));
        }
        Ok(out)
    }
}
