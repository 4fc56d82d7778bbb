//! Tampering with a chain, one edit at a time, is named at its first bad sequence number.
#![expect(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use routero_audit::{
    Anchor, ChainHead, ChainedRecord, Checkpoint, ExportLine, Tamper, Verified, Violation,
    read_witness, verify_chain, verify_export,
};
use routero_core::audit::{Actor, ActorKind, AuditEvent, EventType, Outcome, Resource};
use routero_crypto::{CheckpointSigner, CheckpointVerifier};
use serde_json::{Map, Value};

const TENANT: &str = "tnt_a";

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        event_id: format!("0190a0a0-0000-7000-8000-{i:012}"),
        tenant_id: TENANT.into(),
        time: format!("2026-11-22T12:00:{:02}.000Z", i % 60),
        actor: Actor {
            kind: ActorKind::VirtualKey,
            id: Some(format!("key_{i}")),
            source_ip: Some("10.0.0.1".into()),
            user_agent: None,
        },
        action: EventType::RequestRouted,
        resource: Resource {
            kind: "model".into(),
            id: Some("gpt-a".into()),
        },
        outcome: Outcome::Success,
        reason_code: None,
        request_id: Some(format!("req-{i}")),
        policy_version: None,
        details: Map::from_iter([("tokens".to_string(), Value::from(i * 10))]),
    }
}

struct Log {
    records: Vec<ChainedRecord>,
    checkpoints: Vec<Checkpoint>,
    signer: CheckpointSigner,
}

/// Ten records with checkpoints at 5 and 10.
fn log() -> Log {
    let signer = CheckpointSigner::generate().unwrap();
    let mut head = ChainHead::genesis(TENANT);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    for i in 1..=10 {
        records.push(head.append(event(i)).unwrap());
        if i % 5 == 0 {
            checkpoints.push(
                Checkpoint::sign(
                    &signer,
                    TENANT,
                    head.seq,
                    &head.hash,
                    "2026-11-22T12:01:00Z",
                )
                .unwrap(),
            );
        }
    }
    Log {
        records,
        checkpoints,
        signer,
    }
}

impl Log {
    fn verifier(&self) -> CheckpointVerifier {
        self.signer.verifier()
    }

    fn verify(&self) -> Result<Verified, Violation> {
        verify_chain(
            TENANT,
            &self.records,
            &self.checkpoints,
            None,
            &self.verifier(),
        )
    }

    /// Renumbers records from `index` on by `delta`, as an attacker keeping seq gapless would.
    fn renumber_from(&mut self, index: usize, delta: i64) {
        for record in &mut self.records[index..] {
            record.seq = (record.seq as i64 + delta) as u64;
        }
    }
}

fn found(result: Result<Verified, Violation>) -> (u64, Tamper) {
    let violation = result.expect_err("tampering must be found");
    assert_eq!(violation.tenant_id, TENANT);
    (violation.seq, violation.kind)
}

#[test]
fn an_untouched_chain_verifies() {
    let log = log();
    let verified = log.verify().unwrap();
    assert_eq!(
        verified,
        Verified {
            tenant_id: TENANT.into(),
            records: 10,
            last_seq: 10,
            signed_through: 10
        }
    );
}

#[test]
fn appending_to_another_tenant_is_refused() {
    let mut head = ChainHead::genesis("tnt_b");
    assert!(head.append(event(1)).is_err());
}

#[test]
fn a_modified_record_is_named() {
    let mut log = log();
    log.records[3]
        .event
        .details
        .insert("tokens".into(), Value::from(1));
    assert_eq!(found(log.verify()), (4, Tamper::Modified));
    let mut log = self::log();
    log.records[6].event.actor.source_ip = Some("203.0.113.9".into());
    assert_eq!(found(log.verify()), (7, Tamper::Modified));
}

#[test]
fn a_deleted_record_is_named() {
    let mut log = log();
    log.records.remove(3);
    assert_eq!(found(log.verify()), (4, Tamper::Deleted));
}

#[test]
fn a_deleted_record_is_named_even_when_the_rest_is_renumbered() {
    let mut log = log();
    log.records.remove(3);
    log.renumber_from(3, -1);
    assert_eq!(found(log.verify()), (4, Tamper::Deleted));
}

#[test]
fn deleting_the_signed_tail_is_named() {
    let mut log = log();
    log.records.truncate(8);
    assert_eq!(found(log.verify()), (9, Tamper::Deleted));
}

#[test]
fn swapped_sequence_numbers_are_named_reordered() {
    let mut log = log();
    log.records.swap(3, 4);
    log.records[3].seq = 4;
    log.records[4].seq = 5;
    assert_eq!(found(log.verify()), (4, Tamper::Reordered));
}

#[test]
fn swapped_lines_are_named_reordered() {
    let mut log = log();
    log.records.swap(3, 4);
    assert_eq!(found(log.verify()), (4, Tamper::Reordered));
}

#[test]
fn an_inserted_record_with_a_valid_looking_hash_is_named() {
    let mut log = log();
    // The forger chains a record properly after seq 3 and renumbers what follows.
    let mut head = ChainHead {
        tenant_id: TENANT.into(),
        seq: 3,
        hash: log.records[2].digest().unwrap(),
    };
    let forged = head.append(event(99)).unwrap();
    log.records.insert(3, forged);
    log.renumber_from(4, 1);
    assert_eq!(found(log.verify()), (4, Tamper::Inserted));
}

#[test]
fn an_inserted_garbage_record_is_named() {
    let mut log = log();
    let mut garbage = log.records[3].clone();
    garbage.prev_hash = "ab".repeat(32);
    garbage.hash = "cd".repeat(32);
    garbage.event.event_id = "forged".into();
    log.records.insert(3, garbage);
    log.renumber_from(4, 1);
    assert_eq!(found(log.verify()), (4, Tamper::Inserted));
}

#[test]
fn a_duplicated_record_is_named_inserted() {
    let mut log = log();
    let copy = log.records[3].clone();
    log.records.insert(4, copy);
    assert_eq!(found(log.verify()), (4, Tamper::Inserted));
}

#[test]
fn a_tampered_checkpoint_signature_is_named() {
    let mut log = log();
    log.checkpoints[0].time = "2030-01-01T00:00:00Z".into();
    assert_eq!(found(log.verify()), (5, Tamper::BadCheckpointSignature));
    let mut log = self::log();
    let other = CheckpointSigner::generate().unwrap();
    log.checkpoints[1] =
        Checkpoint::sign(&other, TENANT, 10, &log.records[9].digest().unwrap(), "t").unwrap();
    assert_eq!(found(log.verify()), (10, Tamper::BadCheckpointSignature));
}

#[test]
fn a_rewritten_chain_is_caught_by_the_next_checkpoint() {
    let mut log = log();
    // Without the signing key, the forger rewrites seq 7 and rechains everything after it.
    let mut head = ChainHead {
        tenant_id: TENANT.into(),
        seq: 6,
        hash: log.records[5].digest().unwrap(),
    };
    let tail: Vec<AuditEvent> = log.records[6..].iter().map(|r| r.event.clone()).collect();
    log.records.truncate(6);
    for (i, mut event) in tail.into_iter().enumerate() {
        if i == 0 {
            event.outcome = Outcome::Denied;
        }
        log.records.push(head.append(event).unwrap());
    }
    assert_eq!(found(log.verify()), (10, Tamper::CheckpointMismatch));
}

/// The anchor pruning would leave at seq 5 (events of 2026-11-22, 90 days' retention).
fn anchor_at_5(log: &Log) -> Anchor {
    let record = &log.records[4];
    Anchor::sign(
        &log.signer,
        TENANT,
        (5, &record.digest().unwrap(), &record.event.time),
        90,
        "2027-03-01T00:00:00.000Z",
    )
    .unwrap()
}

#[test]
fn a_pruned_chain_verifies_from_its_signed_anchor() {
    let log = log();
    let anchor = anchor_at_5(&log);
    let rest = &log.records[5..];
    let verify = |anchor: Option<&Anchor>| {
        verify_chain(TENANT, rest, &log.checkpoints, anchor, &log.verifier())
    };
    let verified = verify(Some(&anchor)).unwrap();
    assert_eq!(
        (verified.records, verified.last_seq, verified.signed_through),
        (5, 10, 10)
    );
    let mut forged = anchor.clone();
    forged.seq = 4;
    assert_eq!(
        found(verify(Some(&forged))),
        (4, Tamper::BadAnchorSignature)
    );
    // The checkpoint at 5, relabelled as an anchor (as by copying its row, or by editing the
    // kind of its export line).
    let checkpoint = &log.checkpoints[0];
    let relabelled = Anchor {
        signature: checkpoint.signature.clone(),
        pruned_at: checkpoint.time.clone(),
        ..anchor.clone()
    };
    assert_eq!(
        found(verify(Some(&relabelled))),
        (5, Tamper::CheckpointAsAnchor)
    );
    // Another tenant's anchor does not stand for this one.
    let theirs = Anchor::sign(
        &log.signer,
        "other",
        (
            5,
            &log.records[4].digest().unwrap(),
            "2026-11-22T12:00:05.000Z",
        ),
        90,
        "2027-03-01T00:00:00.000Z",
    )
    .unwrap();
    assert_eq!(
        found(verify(Some(&theirs))),
        (5, Tamper::BadAnchorSignature)
    );
    // Pruned a day after the records were written: still within retention.
    let early = Anchor::sign(
        &log.signer,
        TENANT,
        (
            5,
            &log.records[4].digest().unwrap(),
            &log.records[4].event.time,
        ),
        90,
        "2026-11-23T00:00:00.000Z",
    )
    .unwrap();
    assert_eq!(
        found(verify(Some(&early))),
        (5, Tamper::AnchorWithinRetention)
    );
    // Without its anchor the remainder does not verify.
    assert_eq!(found(verify(None)), (1, Tamper::Deleted));
}

#[test]
fn a_witnessed_head_beyond_the_stored_chain_names_the_cut() {
    let log = log();
    // The database lost its last three records and the checkpoint at 10; a SIEM holds it.
    let cut = &log.records[..7];
    let stored = &log.checkpoints[..1];
    assert_eq!(
        verify_chain(TENANT, cut, stored, None, &log.verifier())
            .unwrap()
            .last_seq,
        7,
        "on its own, the cut chain verifies"
    );
    let witness = ndjson(&log);
    let witnessed = read_witness(witness.as_bytes(), &log.verifier()).unwrap();
    assert_eq!(witnessed.len(), 2);
    let mut with_witness = stored.to_vec();
    with_witness.extend(witnessed);
    assert_eq!(
        found(verify_chain(
            TENANT,
            cut,
            &with_witness,
            None,
            &log.verifier()
        )),
        (8, Tamper::Deleted)
    );
    // A forged witness line is refused, not silently ignored.
    let mut moved = log.checkpoints[1].clone();
    moved.seq = 11;
    let forged = serde_json::to_string(&ExportLine::Checkpoint(moved)).unwrap();
    let error = read_witness(forged.as_bytes(), &log.verifier()).unwrap_err();
    assert!(
        error.to_string().contains("not signed by this key"),
        "{error}"
    );
}

fn ndjson(log: &Log) -> String {
    let mut lines: Vec<ExportLine> = log
        .records
        .iter()
        .cloned()
        .map(|r| ExportLine::Record(Box::new(r)))
        .collect();
    lines.extend(log.checkpoints.iter().cloned().map(ExportLine::Checkpoint));
    lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap() + "\n")
        .collect()
}

#[test]
fn an_export_verifies_with_the_public_key_alone() {
    let log = log();
    let public = CheckpointVerifier::from_base64(&log.verifier().to_base64()).unwrap();
    let results = verify_export(ndjson(&log).as_bytes(), &public).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap().signed_through, 10);

    let tampered = ndjson(&log).replacen("\"tokens\":30", "\"tokens\":31", 1);
    let results = verify_export(tampered.as_bytes(), &public).unwrap();
    assert_eq!(results[0].clone().unwrap_err().seq, 3);

    let broken = ndjson(&log) + "{\"kind\":\"record\",\"oops\":1}\n";
    let error = verify_export(broken.as_bytes(), &public).unwrap_err();
    assert!(error.to_string().starts_with("line 13:"), "{error}");

    // A checkpoint line relabelled as an anchor is refused by name.
    let relabelled = ndjson(&log).replacen("\"kind\":\"checkpoint\"", "\"kind\":\"anchor\"", 1);
    let error = verify_export(relabelled.as_bytes(), &public).unwrap_err();
    assert!(
        error.to_string().contains("relabelled as an anchor"),
        "{error}"
    );
}
