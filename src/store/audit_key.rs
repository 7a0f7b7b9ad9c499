//! Keys of the audit trail and its anchor.
//!
//! *Audit keys.* Records are authenticated with HMAC-SHA256 under an audit key: HKDF-SHA256 of the
//! master key with its own label, so it is available exactly when the store is unsealed. Each
//! database generation has its own master key, hence its own audit key (its *epoch* is the
//! generation); a re-key keeps the audit keys of earlier epochs, sealed under the new master key
//! in the key file, so records written before a passphrase change still verify.
//!
//! *Anchor.* `<store>/audit.anchor` holds, authenticated by the current audit key: a counter that
//! grows with every write, the oldest sequence number kept (`HEAD`), the newest record that is on
//! disk, and the SHA-256 of that record's bytes. It sits outside `<store>/audit/` so that
//! replacing the trail directory with an older copy, cutting its tail or deleting its newest
//! segment leaves an anchor the trail no longer matches. Two fixed slots are written in turn
//! (`counter % 2`), each with one `pwrite` and `fdatasync`: a write torn by a crash leaves the
//! other slot, and the newest valid slot wins.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::crypto::{MasterKey, Sealed, open, seal};
use super::records::{SealedRec, hex_bytes};

/// The anchor's file name in the store directory.
pub(crate) const ANCHOR_FILE: &str = "audit.anchor";
/// The anchor of the journal of retained records (refusals and changes).
pub(crate) const RETAINED_ANCHOR_FILE: &str = "audit-retained.anchor";
const HKDF_INFO: &[u8] = b"keyward/audit-key/v1";
const AD_OLD_KEYS: &[u8] = b"keyward/store/audit-keys/v1\0";
const DS_ANCHOR: &[u8] = b"keyward/audit-anchor/v1\0";
const MAGIC: &[u8; 8] = b"KWANCHR1";
/// One slot: magic, epoch, counter, head, seq, record hash, MAC.
const SLOT: usize = 8 + 8 + 8 + 8 + 8 + 32 + 32;
/// Slots start at multiples of this (room for a later, larger format).
const SLOT_STRIDE: u64 = 128;

type HmacSha256 = Hmac<Sha256>;

/// One audit key. Zeroized on drop, no `Debug`.
#[derive(Clone)]
pub(crate) struct AuditKey(Zeroizing<[u8; 32]>);

impl AuditKey {
    /// The audit key of `master`.
    pub(crate) fn derive(master: &MasterKey) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(None, master.expose());
        let mut k = Zeroizing::new([0u8; 32]);
        hk.expand(HKDF_INFO, k.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Self(k)
    }

    /// HMAC-SHA256 of `parts`, in order.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <HmacSha256 as hmac::Mac>::new_from_slice(self.0.as_ref())
            .expect("HMAC takes keys of any length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `parts` (constant time).
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() == 32 && bool::from(self.mac(parts).ct_eq(tag))
    }
}

/// Every audit key the store has: the current epoch's and earlier ones.
#[derive(Clone)]
pub(crate) struct AuditKeys {
    pub(crate) epoch: u64,
    pub(crate) current: AuditKey,
    pub(crate) older: BTreeMap<u64, AuditKey>,
}

impl AuditKeys {
    /// The key of `epoch`, if the store has it.
    pub(crate) fn get(&self, epoch: u64) -> Option<&AuditKey> {
        if epoch == self.epoch {
            Some(&self.current)
        } else {
            self.older.get(&epoch)
        }
    }

    /// The keys of a store at `epoch` whose master key is `master`, with the earlier keys the key
    /// file holds sealed under it. `None` if that seal does not open.
    pub(crate) fn open(master: &MasterKey, epoch: u64, sealed: Option<&Sealed>) -> Option<Self> {
        let older = match sealed {
            None => BTreeMap::new(),
            Some(s) => {
                let plain = open(master.expose(), AD_OLD_KEYS, s)?;
                let list: Vec<OldKey> = serde_json::from_slice(&plain).ok()?;
                list.into_iter()
                    .map(|k| {
                        let key: [u8; 32] = k.key.as_slice().try_into().ok()?;
                        Some((k.epoch, AuditKey(Zeroizing::new(key))))
                    })
                    .collect::<Option<_>>()?
            }
        };
        Some(Self {
            epoch,
            current: AuditKey::derive(master),
            older,
        })
    }

    /// Every key up to and including the current one, sealed under `new_master` for the key file
    /// of the next epoch.
    pub(crate) fn seal_all(&self, new_master: &MasterKey) -> SealedRec {
        let mut list: Vec<OldKey> = self
            .older
            .iter()
            .map(|(e, k)| OldKey {
                epoch: *e,
                key: k.0.to_vec(),
            })
            .collect();
        list.push(OldKey {
            epoch: self.epoch,
            key: self.current.0.to_vec(),
        });
        let json = Zeroizing::new(serde_json::to_vec(&list).expect("keys serialize"));
        for k in &mut list {
            zeroize::Zeroize::zeroize(&mut k.key);
        }
        SealedRec::from_sealed(seal(new_master.expose(), AD_OLD_KEYS, &json))
    }
}

#[derive(Serialize, Deserialize)]
struct OldKey {
    epoch: u64,
    #[serde(with = "hex_bytes")]
    key: Vec<u8>,
}

/// What the anchor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Anchor {
    /// The audit key's epoch.
    pub(crate) epoch: u64,
    /// Grows by one with every write.
    pub(crate) counter: u64,
    /// The oldest sequence number kept.
    pub(crate) head: u64,
    /// The newest record on disk when it was written (0: none).
    pub(crate) seq: u64,
    /// SHA-256 of that record's envelope.
    pub(crate) record_hash: [u8; 32],
}

impl Anchor {
    fn fields(&self) -> [u8; SLOT - 8 - 32] {
        let mut b = [0u8; SLOT - 8 - 32];
        b[..8].copy_from_slice(&self.epoch.to_be_bytes());
        b[8..16].copy_from_slice(&self.counter.to_be_bytes());
        b[16..24].copy_from_slice(&self.head.to_be_bytes());
        b[24..32].copy_from_slice(&self.seq.to_be_bytes());
        b[32..].copy_from_slice(&self.record_hash);
        b
    }

    fn encode(&self, key: &AuditKey) -> [u8; SLOT] {
        let fields = self.fields();
        let mut out = [0u8; SLOT];
        out[..8].copy_from_slice(MAGIC);
        out[8..SLOT - 32].copy_from_slice(&fields);
        out[SLOT - 32..].copy_from_slice(&key.mac(&[DS_ANCHOR, &fields]));
        out
    }

    /// A slot's anchor, if its MAC verifies under a key of `keys`.
    fn decode(slot: &[u8], keys: &AuditKeys) -> Option<Self> {
        if slot.len() < SLOT || &slot[..8] != MAGIC {
            return None;
        }
        let fields = &slot[8..SLOT - 32];
        let u = |i: usize| u64::from_be_bytes(fields[i..i + 8].try_into().expect("8 bytes"));
        let anchor = Self {
            epoch: u(0),
            counter: u(8),
            head: u(16),
            seq: u(24),
            record_hash: fields[32..].try_into().expect("32 bytes"),
        };
        keys.get(anchor.epoch)?
            .verify(&[DS_ANCHOR, fields], &slot[SLOT - 32..SLOT])
            .then_some(anchor)
    }
}

/// What the anchor vouches for (see [`AnchorCheck`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorInfo {
    /// How many times it was written.
    pub counter: u64,
    /// The oldest sequence number it says is kept.
    pub head: u64,
    /// The newest record it vouches for (0: none).
    pub seq: u64,
}

/// The audit anchor compared with the trail on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorCheck {
    /// The anchor, if there is an authentic one.
    pub anchor: Option<AnchorInfo>,
    /// The first disagreement: a sequence number and what is wrong.
    pub problem: Option<(u64, String)>,
}

/// What reading the anchor file found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AnchorRead {
    /// No file.
    Missing,
    /// A file, but no slot authenticates under the store's keys.
    Invalid,
    /// The newest authentic slot.
    Found(Anchor),
}

/// Reads the anchor file at `path`.
pub(crate) fn read_anchor(path: &Path, keys: &AuditKeys) -> io::Result<AnchorRead> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AnchorRead::Missing),
        Err(e) => return Err(e),
    };
    let slot = |i: u64| {
        let start = usize::try_from(i * SLOT_STRIDE).expect("small");
        bytes
            .get(start..start + SLOT)
            .and_then(|s| Anchor::decode(s, keys))
    };
    Ok(match (slot(0), slot(1)) {
        (Some(a), Some(b)) => AnchorRead::Found(if a.counter >= b.counter { a } else { b }),
        (Some(a), None) | (None, Some(a)) => AnchorRead::Found(a),
        (None, None) => AnchorRead::Invalid,
    })
}

/// The open anchor file, written in place.
pub(crate) struct AnchorFile {
    file: File,
}

impl AnchorFile {
    /// Opens (creating, `0600`) the anchor file at `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        Ok(Self { file })
    }

    /// Writes `anchor` into its slot and syncs it.
    pub(crate) fn write(&self, anchor: &Anchor, key: &AuditKey) -> io::Result<()> {
        let slot = anchor.encode(key);
        self.file
            .write_all_at(&slot, (anchor.counter % 2) * SLOT_STRIDE)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(master: &MasterKey, epoch: u64) -> AuditKeys {
        AuditKeys::open(master, epoch, None).unwrap()
    }

    fn anchor(counter: u64, seq: u64) -> Anchor {
        Anchor {
            epoch: 1,
            counter,
            head: 1,
            seq,
            record_hash: [7; 32],
        }
    }

    #[test]
    fn the_audit_key_depends_on_the_master_key_and_is_not_it() {
        let m = MasterKey::random();
        let a = AuditKey::derive(&m);
        assert_ne!(*a.0, *m.expose());
        assert_eq!(*a.0, *AuditKey::derive(&m.duplicate()).0);
        assert_ne!(*a.0, *AuditKey::derive(&MasterKey::random()).0);
        let tag = a.mac(&[b"x", b"y"]);
        assert!(a.verify(&[b"xy"], &tag), "parts are concatenated");
        assert!(!a.verify(&[b"xz"], &tag));
        assert!(!AuditKey::derive(&MasterKey::random()).verify(&[b"xy"], &tag));
    }

    #[test]
    fn older_keys_survive_a_rekey_and_open_only_under_the_new_master() {
        let m1 = MasterKey::random();
        let k1 = keys(&m1, 1);
        let m2 = MasterKey::random();
        let sealed = k1.seal_all(&m2).to_sealed().unwrap();
        let k2 = AuditKeys::open(&m2, 2, Some(&sealed)).unwrap();
        assert_eq!(*k2.get(1).unwrap().0, *k1.current.0);
        assert_eq!(*k2.get(2).unwrap().0, *AuditKey::derive(&m2).0);
        assert!(k2.get(3).is_none());
        assert!(AuditKeys::open(&m1, 2, Some(&sealed)).is_none());
    }

    #[test]
    fn the_newest_authentic_slot_wins_and_forgeries_are_invalid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(ANCHOR_FILE);
        let m = MasterKey::random();
        let k = keys(&m, 1);
        assert_eq!(read_anchor(&dir, &k).unwrap(), AnchorRead::Missing);
        let f = AnchorFile::open(&dir).unwrap();
        f.write(&anchor(1, 10), &k.current).unwrap();
        f.write(&anchor(2, 20), &k.current).unwrap();
        f.write(&anchor(3, 30), &k.current).unwrap();
        assert_eq!(
            read_anchor(&dir, &k).unwrap(),
            AnchorRead::Found(anchor(3, 30))
        );
        // A torn newest slot: the other one is used.
        let path = &dir;
        let mut bytes = std::fs::read(path).unwrap();
        bytes[usize::try_from(SLOT_STRIDE).unwrap() + 40] ^= 1;
        std::fs::write(path, &bytes).unwrap();
        assert_eq!(
            read_anchor(&dir, &k).unwrap(),
            AnchorRead::Found(anchor(2, 20))
        );
        // Written under another key (someone without this store's master key): invalid.
        let other = keys(&MasterKey::random(), 1);
        let forged = AnchorFile::open(&dir).unwrap();
        forged.write(&anchor(8, 99), &other.current).unwrap();
        forged.write(&anchor(9, 99), &other.current).unwrap();
        assert_eq!(read_anchor(&dir, &k).unwrap(), AnchorRead::Invalid);
    }
}
