//! Signed tree heads as C2SP checkpoints: the note body, signing through [`TreeHeadSigner`], witness
//! cosignatures, verifier keys, and verification against a configured [`Trust`].
//!
//! # Format
//!
//! A checkpoint is a signed note (<https://c2sp.org/signed-note>) whose text is exactly three lines
//! (<https://c2sp.org/tlog-checkpoint>): the log's origin, the tree size in decimal, the base64 root hash.
//! A blank line follows, then one line per signature: an em dash (U+2014), a space, the key name, a space,
//! and base64 of the 4-byte big-endian key ID followed by the signature bytes.
//!
//! ```text
//! hearth.example/coordinator-audit
//! 1042
//! CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//!
//! — hearth.example/coordinator-audit 3Fz9Yd...
//! — bank-a.example/witness Wm2vZQ...
//! ```
//!
//! Hearth refuses extension lines: a body means exactly (origin, size, root).
//!
//! Signature types, key IDs and vkeys are defined in [`keys`](super::keys).
//!
//! # What verification means
//!
//! As the spec requires, signatures from unknown keys (name and ID not both matching a trusted key) are
//! ignored, a trusted key's signature that fails rejects the whole checkpoint, and a checkpoint without a
//! verifying signature by a trusted log key is rejected. The result names the witnesses that cosigned.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::keys::{
    check_name, cosigned_message, SignatureType, TreeHeadSigner, VerifierKey, MAX_COSIGNATURE_TIME,
};
use super::merkle::Hash;
use super::proof::verify_consistency;
use super::AuditError;

/// Largest signed note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Most signature lines accepted on one checkpoint (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 64;
const SIG_LINE_PREFIX: &str = "\u{2014} ";

fn malformed(what: &'static str, reason: impl Into<String>) -> AuditError {
    AuditError::Malformed { what, reason: reason.into() }
}

/// A tree head: the note text of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
}

impl Checkpoint {
    /// A tree head of `origin`'s log at `size` leaves with root `root`. The origin must be a valid key
    /// name (non-empty, no spaces, no `+`), since the log's key name should equal it.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, AuditError> {
        let origin = origin.into();
        check_name("checkpoint origin", &origin)?;
        Ok(Self { origin, size, root })
    }

    /// For callers that validated `origin` already.
    pub(super) fn new_unchecked(origin: String, size: u64, root: Hash) -> Self {
        Self { origin, size, root }
    }

    /// The log's identity.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root hash of the tree of that size.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The note text that signatures cover: three lines, each ending in a newline.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    /// Parses a note text made by [`Checkpoint::body`].
    pub fn parse_body(body: &str) -> Result<Self, AuditError> {
        let what = "checkpoint body";
        let Some(text) = body.strip_suffix('\n') else {
            return Err(malformed(what, "does not end with a newline"));
        };
        let lines: Vec<&str> = text.split('\n').collect();
        let [origin, size, root] = lines.as_slice() else {
            return Err(malformed(what, format!("{} lines, expected origin, size and root", lines.len())));
        };
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (*size == "0" || !size.starts_with('0'));
        let size: u64 = match size.parse() {
            Ok(n) if size_ok => n,
            _ => {
                return Err(malformed(
                    what,
                    format!("tree size {size:?} is not a decimal without leading zeros"),
                ))
            }
        };
        let root = B64.decode(root).map_err(|e| malformed(what, format!("root hash {root:?}: {e}")))?;
        let root: Hash = root
            .try_into()
            .map_err(|r: Vec<u8>| malformed(what, format!("root hash of {} bytes", r.len())))?;
        Checkpoint::new(*origin, size, root)
    }
}

/// One signature line: key name, key ID and the signature bytes after the ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name.
    pub key_name: String,
    /// The signer's key ID.
    pub key_id: u32,
    /// The signature (for cosignatures, the 8-byte time then the signature).
    pub bytes: Vec<u8>,
}

/// The keys a verifier trusts: the log's keys, and the witnesses whose cosignatures it wants reported.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Keys of the log itself (normally of type [`SignatureType::Log`]); one must sign every checkpoint.
    pub log_keys: Vec<VerifierKey>,
    /// Keys of witnesses (normally of type [`SignatureType::Cosignature`]).
    pub witnesses: Vec<VerifierKey>,
}

/// A witness cosignature that verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CosignatureSeen {
    /// The witness's key name.
    pub witness: String,
    /// When it cosigned (POSIX seconds), for timestamped cosignatures.
    pub time_s: Option<u64>,
}

/// A checkpoint whose log signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The tree head.
    pub checkpoint: Checkpoint,
    /// Name of the trusted log key that signed it.
    pub log_key: String,
    /// Trusted witnesses that cosigned it.
    pub cosignatures: Vec<CosignatureSeen>,
}

/// A checkpoint with its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    signatures: Vec<NoteSignature>,
}

impl SignedCheckpoint {
    /// Signs `checkpoint` as the log, with a [`SignatureType::Log`] signature of the signer's suite.
    pub fn sign(checkpoint: Checkpoint, signer: &dyn TreeHeadSigner) -> Result<Self, AuditError> {
        let key = VerifierKey::of(signer, SignatureType::Log(signer.suite()))?;
        let bytes = signer.sign(checkpoint.body().as_bytes())?;
        let signatures = vec![NoteSignature { key_name: key.name().to_string(), key_id: key.id(), bytes }];
        Ok(Self { checkpoint, signatures })
    }

    /// Adds (or replaces) `witness`'s timestamped cosignature made at `time_s` (POSIX seconds). The
    /// witness must have checked this head's consistency with the last one it cosigned.
    pub fn cosign(&mut self, witness: &dyn TreeHeadSigner, time_s: u64) -> Result<(), AuditError> {
        if time_s > MAX_COSIGNATURE_TIME {
            return Err(malformed("cosignature", format!("time {time_s} exceeds 2^63 - 1")));
        }
        let key = VerifierKey::of(witness, SignatureType::Cosignature(witness.suite()))?;
        let sig = witness.sign(cosigned_message(time_s, &self.checkpoint.body()).as_bytes())?;
        let bytes = [&time_s.to_be_bytes()[..], &sig].concat();
        self.add(NoteSignature { key_name: key.name().to_string(), key_id: key.id(), bytes })
    }

    /// Copies the signature lines of `other`, which must carry the same tree head: gathers cosignatures
    /// that witnesses returned separately.
    pub fn merge(&mut self, other: &SignedCheckpoint) -> Result<(), AuditError> {
        if other.checkpoint != self.checkpoint {
            return Err(malformed("checkpoint", "cannot merge signatures of a different tree head"));
        }
        for s in &other.signatures {
            self.add(s.clone())?;
        }
        Ok(())
    }

    fn add(&mut self, sig: NoteSignature) -> Result<(), AuditError> {
        self.signatures.retain(|s| (s.key_name.as_str(), s.key_id) != (sig.key_name.as_str(), sig.key_id));
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(malformed("checkpoint", format!("more than {MAX_SIGNATURES} signatures")));
        }
        self.signatures.push(sig);
        Ok(())
    }

    /// The tree head.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// The signed note text.
    pub fn encode(&self) -> String {
        let mut out = self.checkpoint.body();
        out.push('\n');
        for s in &self.signatures {
            let bytes = [&s.key_id.to_be_bytes()[..], &s.bytes].concat();
            out.push_str(&format!("{SIG_LINE_PREFIX}{} {}\n", s.key_name, B64.encode(bytes)));
        }
        out
    }

    /// Parses a signed note text, refusing anything over [`MAX_NOTE_BYTES`] or [`MAX_SIGNATURES`], control
    /// characters, and notes without a signature.
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        let what = "signed checkpoint";
        if text.len() > MAX_NOTE_BYTES {
            return Err(malformed(what, format!("{} bytes, at most {MAX_NOTE_BYTES} allowed", text.len())));
        }
        if let Some(c) = text.chars().find(|c| c.is_control() && *c != '\n') {
            return Err(malformed(what, format!("contains control character U+{:04X}", u32::from(c))));
        }
        let Some(split) = text.rfind("\n\n") else {
            return Err(malformed(what, "no blank line between the text and the signatures"));
        };
        let (body, sigs) = (&text[..split + 1], &text[split + 2..]);
        let checkpoint = Checkpoint::parse_body(body)?;
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(malformed(what, "signature lines do not end with a newline"));
        };
        let mut out = Self { checkpoint, signatures: Vec::new() };
        for (i, line) in sigs.split('\n').enumerate() {
            if i >= MAX_SIGNATURES {
                return Err(malformed(what, format!("more than {MAX_SIGNATURES} signatures")));
            }
            let Some(rest) = line.strip_prefix(SIG_LINE_PREFIX) else {
                return Err(malformed(
                    what,
                    format!("signature line {} does not start with an em dash", i + 1),
                ));
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                return Err(malformed(what, format!("signature line {} has no signature", i + 1)));
            };
            check_name("key name", name)?;
            let bytes = B64.decode(sig).map_err(|e| malformed(what, format!("signature by {name}: {e}")))?;
            if bytes.len() < 5 {
                return Err(malformed(what, format!("signature by {name} is {} bytes", bytes.len())));
            }
            let key_id = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            out.signatures.push(NoteSignature {
                key_name: name.to_string(),
                key_id,
                bytes: bytes[4..].to_vec(),
            });
        }
        Ok(out)
    }

    /// Verifies the signatures against `trust`: unknown keys are ignored, a trusted key whose signature
    /// fails rejects the checkpoint, and at least one trusted log key must have signed. A log key signs
    /// only for the log it is named after: a trusted key of another log (its name is not this
    /// checkpoint's origin) rejects the checkpoint, so one log's key cannot vouch for another's history.
    pub fn verify(&self, trust: &Trust) -> Result<VerifiedCheckpoint, AuditError> {
        let body = self.checkpoint.body();
        let mut log_key = None;
        let mut cosignatures = Vec::new();
        for sig in &self.signatures {
            let matches = |k: &&VerifierKey| k.name() == sig.key_name && k.id() == sig.key_id;
            let (key, is_log) = match trust.log_keys.iter().find(matches) {
                Some(k) => (k, true),
                None => match trust.witnesses.iter().find(matches) {
                    Some(k) => (k, false),
                    None => continue,
                },
            };
            let time_s = key.verify(&body, &sig.bytes).map_err(|_| AuditError::BadSignature {
                key: key.name().to_string(),
                origin: self.checkpoint.origin.clone(),
                size: self.checkpoint.size,
            })?;
            if is_log && key.name() != self.checkpoint.origin {
                return Err(AuditError::Malformed {
                    what: "checkpoint",
                    reason: format!(
                        "signed by the log key of {:?}, not of its origin {:?}",
                        key.name(),
                        self.checkpoint.origin
                    ),
                });
            }
            if is_log {
                log_key.get_or_insert_with(|| key.name().to_string());
            } else if !cosignatures.iter().any(|c: &CosignatureSeen| c.witness == key.name()) {
                cosignatures.push(CosignatureSeen { witness: key.name().to_string(), time_s });
            }
        }
        let Some(log_key) = log_key else {
            return Err(AuditError::NoTrustedSignature {
                origin: self.checkpoint.origin.clone(),
                size: self.checkpoint.size,
            });
        };
        Ok(VerifiedCheckpoint { checkpoint: self.checkpoint.clone(), log_key, cosignatures })
    }
}

/// What a witness does with a new checkpoint from a log it follows: verify the log's signature (`log`
/// holds the log's keys), check that the new head extends `last_cosigned` (the last head this witness
/// cosigned for the same origin, `None` the first time) with the log's consistency `proof`, and only then
/// add its cosignature made at `time_s`. The caller stores the new head as its `last_cosigned`.
///
/// Refuses a head of another origin, a smaller head, a same-size head with another root, and a bad proof:
/// cosigning those would let the log show different histories to different readers.
pub fn witness_cosign(
    new: &mut SignedCheckpoint,
    last_cosigned: Option<&Checkpoint>,
    proof: &[Hash],
    log: &Trust,
    witness: &dyn TreeHeadSigner,
    time_s: u64,
) -> Result<(), AuditError> {
    let log_only = Trust { log_keys: log.log_keys.clone(), witnesses: Vec::new() };
    new.verify(&log_only)?;
    if let Some(last) = last_cosigned {
        let cp = &new.checkpoint;
        if last.origin != cp.origin {
            return Err(malformed(
                "checkpoint",
                format!("origin {:?} is not the followed log's {:?}", cp.origin, last.origin),
            ));
        }
        // The suite of the log's key is the suite of its tree: one suite per consortium.
        let suite = log
            .log_keys
            .first()
            .map(|k| k.kind().suite())
            .ok_or(AuditError::NoTrustedSignature { origin: cp.origin.clone(), size: cp.size })?;
        verify_consistency(suite, last.size, cp.size, &last.root, &cp.root, proof)?;
    }
    new.cosign(witness, time_s)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::keys::SoftwareSigner;
    use super::*;
    use hearth_crypto::{SecretBytes, SuiteId};

    const SUITES: [SuiteId; 2] = [SuiteId::International, SuiteId::National];
    const ORIGIN: &str = "hearth.example/audit";

    fn fixed_signer(name: &str, suite: SuiteId, seed: u8) -> SoftwareSigner {
        SoftwareSigner::new(name, suite, SecretBytes::new([seed; 32])).unwrap()
    }

    fn signed(suite: SuiteId) -> (SignedCheckpoint, Trust) {
        let log = fixed_signer(ORIGIN, suite, 7);
        let witness = fixed_signer("bank-a.example/witness", suite, 9);
        let mut cp = SignedCheckpoint::sign(Checkpoint::new(ORIGIN, 42, [0xab; 32]).unwrap(), &log).unwrap();
        cp.cosign(&witness, 1_700_000_000).unwrap();
        let trust = Trust {
            log_keys: vec![VerifierKey::of(&log, SignatureType::Log(suite)).unwrap()],
            witnesses: vec![VerifierKey::of(&witness, SignatureType::Cosignature(suite)).unwrap()],
        };
        (cp, trust)
    }

    #[test]
    fn body_matches_the_checkpoint_format() {
        let cp = Checkpoint::new("example.com/behind-the-sofa", 20852163, [0u8; 32]).unwrap();
        assert_eq!(
            cp.body(),
            "example.com/behind-the-sofa\n20852163\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        );
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
        for bad in [
            "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "o\n+1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "o\n1\nAAAA\n",
            "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n",
            "o o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sign_cosign_encode_parse_verify_in_both_suites() {
        for suite in SUITES {
            let (cp, trust) = signed(suite);
            let text = cp.encode();
            assert!(text.starts_with(&format!("{ORIGIN}\n42\n")), "{text}");
            assert_eq!(text.matches("\n\u{2014} ").count(), 2, "{text}");
            let parsed = SignedCheckpoint::parse(&text).unwrap();
            assert_eq!(parsed, cp);
            let v = parsed.verify(&trust).unwrap();
            assert_eq!(v.log_key, ORIGIN);
            assert_eq!(
                v.cosignatures,
                vec![CosignatureSeen {
                    witness: "bank-a.example/witness".into(),
                    time_s: Some(1_700_000_000)
                }]
            );
            // Without the witness in the trust list its line is ignored, not an error.
            let log_only = Trust { log_keys: trust.log_keys.clone(), witnesses: vec![] };
            assert!(parsed.verify(&log_only).unwrap().cosignatures.is_empty());
            // Without the log key nothing vouches for the head.
            let witness_only = Trust { log_keys: vec![], witnesses: trust.witnesses.clone() };
            assert!(matches!(parsed.verify(&witness_only), Err(AuditError::NoTrustedSignature { .. })));
        }
    }

    #[test]
    fn verification_refuses_other_keys_and_altered_heads() {
        for suite in SUITES {
            let (cp, trust) = signed(suite);
            // Signed by another key under the log's name: unknown ID, so ignored, so no trusted signature.
            let impostor = fixed_signer(ORIGIN, suite, 8);
            let forged = SignedCheckpoint::sign(cp.checkpoint().clone(), &impostor).unwrap();
            assert!(matches!(forged.verify(&trust), Err(AuditError::NoTrustedSignature { .. })), "{suite}");
            // A signature line copied onto another head fails for the trusted key, rejecting the note.
            let other = Checkpoint::new(ORIGIN, 43, [0xab; 32]).unwrap();
            let moved = SignedCheckpoint { checkpoint: other, signatures: cp.signatures.clone() };
            assert!(matches!(moved.verify(&trust), Err(AuditError::BadSignature { .. })), "{suite}");
            // Merging requires the same head.
            let mut a = cp.clone();
            assert!(a.merge(&moved).is_err());
            a.merge(&cp).unwrap();
            assert_eq!(a.signatures().len(), 2, "merging the same lines adds nothing");
        }
    }

    #[test]
    fn a_trusted_log_key_signs_only_for_the_log_it_is_named_after() {
        for suite in SUITES {
            // Both logs' keys are trusted (an auditor checking two institutions); bank-a's key signs a head
            // claiming to be airline-b's log.
            let bank = fixed_signer("hearth/participant/bank-a", suite, 7);
            let airline = fixed_signer("hearth/participant/airline-b", suite, 8);
            let trust = Trust {
                log_keys: vec![
                    VerifierKey::of(&bank, SignatureType::Log(suite)).unwrap(),
                    VerifierKey::of(&airline, SignatureType::Log(suite)).unwrap(),
                ],
                witnesses: vec![],
            };
            let head = Checkpoint::new("hearth/participant/airline-b", 3, [0x11; 32]).unwrap();
            let own = SignedCheckpoint::sign(head.clone(), &airline).unwrap();
            assert_eq!(own.verify(&trust).unwrap().log_key, "hearth/participant/airline-b");
            let crossed = SignedCheckpoint::sign(head, &bank).unwrap();
            let e = crossed.verify(&trust).unwrap_err();
            assert!(e.to_string().contains("not of its origin"), "{suite}: {e}");
        }
    }

    #[test]
    fn witnesses_cosign_only_consistent_heads() {
        use super::super::log::AuditLog;
        use super::super::proof::consistency_proof;
        use super::super::{Event, Outcome};
        for suite in SUITES {
            let key = fixed_signer(ORIGIN, suite, 7);
            let witness = fixed_signer("bank-a.example/witness", suite, 9);
            let log_trust = Trust {
                log_keys: vec![VerifierKey::of(&key, SignatureType::Log(suite)).unwrap()],
                witnesses: vec![],
            };
            let mut log = AuditLog::new(suite, ORIGIN).unwrap();
            let mut leaves = Vec::new();
            let mut heads = Vec::new();
            for i in 0..7u64 {
                leaves.push(
                    log.append(Event::new("system", super::super::Action::NodeStart, Outcome::Ok), i)
                        .unwrap()
                        .leaf_hash,
                );
                heads.push(log.sign_checkpoint(&key).unwrap());
            }
            let (old, mut new) = (heads[2].checkpoint().clone(), heads[6].clone());
            let proof = consistency_proof(suite, &leaves, 3, 7).unwrap();
            // First sight, then a consistent successor.
            let mut first = heads[2].clone();
            witness_cosign(&mut first, None, &[], &log_trust, &witness, 10).unwrap();
            witness_cosign(&mut new, Some(&old), &proof, &log_trust, &witness, 20).unwrap();
            assert_eq!(new.signatures().len(), 2);
            // A wrong proof, a shrinking head, a same-size fork and an unsigned head are all refused.
            let mut again = heads[6].clone();
            assert!(witness_cosign(&mut again, Some(&old), &proof[1..], &log_trust, &witness, 30).is_err());
            let mut older = heads[1].clone();
            assert!(witness_cosign(&mut older, Some(&old), &[], &log_trust, &witness, 30).is_err());
            let fork = Checkpoint::new(ORIGIN, 3, [0; 32]).unwrap();
            let mut forked = SignedCheckpoint::sign(fork, &key).unwrap();
            assert!(witness_cosign(&mut forked, Some(&old), &[], &log_trust, &witness, 30).is_err());
            let impostor = fixed_signer(ORIGIN, suite, 8);
            let mut unsigned = SignedCheckpoint::sign(heads[6].checkpoint().clone(), &impostor).unwrap();
            assert!(witness_cosign(&mut unsigned, Some(&old), &proof, &log_trust, &witness, 30).is_err());
            assert_eq!(again.signatures().len(), 1, "nothing cosigned on refusal");
        }
    }

    #[test]
    fn parser_refuses_malformed_notes() {
        let (cp, _) = signed(SuiteId::International);
        let text = cp.encode();
        let too_many: String = text.clone() + &"\u{2014} x AAAAAAAAAAAA\n".repeat(MAX_SIGNATURES);
        for bad in [
            text.replace("\n\n", "\n"),
            text.replacen('\u{2014}', "-", 1),
            text.trim_end().to_string(),
            text.replace("\n\n", "\n\n\n"),
            text.replacen("42", "4\t2", 1),
            cp.checkpoint().body() + "\n",
            too_many,
            "x".repeat(MAX_NOTE_BYTES + 1),
        ] {
            assert!(SignedCheckpoint::parse(&bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_bit_flip_in_a_signed_checkpoint_is_caught(pos in any::<prop::sample::Index>(), bit in 0..8u8, national in any::<bool>()) {
            let suite = if national { SuiteId::National } else { SuiteId::International };
            let (cp, trust) = signed(suite);
            let mut bytes = cp.encode().into_bytes();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let verified = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| SignedCheckpoint::parse(t).ok())
                .and_then(|c| c.verify(&trust).ok());
            // Either refused, or (a flip inside the witness line only) the head is intact and the altered
            // cosignature is no longer reported.
            if let Some(v) = verified {
                prop_assert_eq!(&v.checkpoint, cp.checkpoint());
                prop_assert!(v.cosignatures.is_empty());
            }
        }

        #[test]
        fn random_text_never_panics_the_parsers(s in "\\PC{0,300}", t in "[a-z/.+0-9A-Za-z=\n\u{2014} ]{0,200}") {
            let _ = SignedCheckpoint::parse(&s);
            let _ = SignedCheckpoint::parse(&t);
            let _ = Checkpoint::parse_body(&t);
            let _ = VerifierKey::parse(&s);
            let _ = VerifierKey::parse(&t);
        }
    }
}
