//! What authenticating the snapshot channel costs a data plane: checking one message's tag,
//! for a delta that revokes one key and for full snapshots of 1,000 and 10,000 keys. No
//! request pays it: messages are checked once, when they arrive.
#![expect(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use routero_crypto::SealingKey;
use routero_proto::v1::{self, snapshot_message::Body};
use routero_proto::{ChannelAuth, WireState};

fn key(i: u32) -> v1::VirtualKey {
    v1::VirtualKey {
        key_hash: i.to_be_bytes().repeat(8),
        key_id: format!("key_{i:032}"),
        tenant_id: "tnt_0123456789abcdef".into(),
        models: vec!["gpt-4o-mini".into()],
        roles: vec!["developer".into()],
        ..v1::VirtualKey::default()
    }
}

fn state(keys: u32) -> WireState {
    WireState::new(7, vec![0; 60], (0..keys).map(key), [], [])
}

fn verify(c: &mut Criterion) {
    let auth = ChannelAuth::new(&SealingKey::generate().unwrap()).unwrap();
    let mut group = c.benchmark_group("verify");
    let before = state(1_000);
    let after = WireState::new(8, vec![0; 60], (1..1_000).map(key), [], []);
    let mut delta = before.delta_to(&after).unwrap();
    assert!(matches!(delta.body, Some(Body::Delta(_))));
    auth.sign(&mut delta, 1);
    group.bench_function(BenchmarkId::new("delta", "1 key revoked"), |b| {
        b.iter(|| auth.verify(&mut delta).unwrap())
    });
    for keys in [1_000, 10_000] {
        let mut full = state(keys).to_full_message();
        auth.sign(&mut full, 1);
        group.bench_function(BenchmarkId::new("full", format!("{keys} keys")), |b| {
            b.iter(|| auth.verify(&mut full).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
