//! The same semantics, asserted against both backends: the in-process counters and a real Redis
//! (`ROUTERO_TEST_REDIS_URL`, by default `redis://127.0.0.1:6379`; `make test` starts one).

use std::sync::Arc;

use super::*;

fn redis_url() -> String {
    std::env::var("ROUTERO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Both backends, each with names of its own (tests share one Redis).
fn backends() -> Vec<(Limits, String)> {
    let unique = |kind: &str| format!("{kind}-{}-{}", std::process::id(), now_ms());
    vec![
        (Limits::in_process(), unique("local")),
        (Limits::redis(&redis_url()).unwrap(), unique("redis")),
    ]
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn budget(name: &str, limit: i64, reserve: i64) -> BudgetAsk {
    BudgetAsk {
        name: name.into(),
        limit_micros: limit,
        period: Period::Every(3600),
        reserve_micros: reserve,
        thresholds: vec![50, 80, 100],
    }
}

fn granted(verdict: Verdict) -> Grant {
    match verdict {
        Verdict::Granted(grant) => grant,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[tokio::test]
async fn reservations_hold_room_until_settled_to_the_actual_cost() {
    for (limits, name) in backends() {
        let now = now_ms();
        let ask = Ask {
            budgets: vec![budget(&format!("{name}:key"), 100, 30)],
            rates: vec![],
        };
        let grants: Vec<Grant> = reserve_times(&limits, &ask, now, 3).await;
        match limits.reserve(&ask, now).await.unwrap() {
            Verdict::OverBudget {
                name: refused,
                used_micros,
                limit_micros,
                resets_at,
            } => {
                assert_eq!((used_micros, limit_micros), (90, 100));
                assert!(refused.ends_with(":key") && resets_at.is_some());
            }
            other => panic!("{name}: expected over budget, got {other:?}"),
        }
        // Settled below the reservations: the room comes back.
        let mut reached = Vec::new();
        for grant in &grants {
            reached.extend(limits.settle(grant, 20, 0).await.unwrap());
        }
        assert_eq!(
            reached.iter().map(|c| c.percent).collect::<Vec<_>>(),
            vec![50],
            "{name}: 60 of 100 reaches 50% once"
        );
        let grant = granted(limits.reserve(&ask, now).await.unwrap());
        let reached = limits.settle(&grant, 30, 0).await.unwrap();
        assert_eq!(
            reached
                .iter()
                .map(|c| (c.percent, c.spent_micros))
                .collect::<Vec<_>>(),
            vec![(80, 90)],
            "{name}"
        );
    }
}

async fn reserve_times(limits: &Limits, ask: &Ask, now: i64, count: usize) -> Vec<Grant> {
    let mut grants = Vec::new();
    for _ in 0..count {
        grants.push(granted(limits.reserve(ask, now).await.unwrap()));
    }
    grants
}

#[tokio::test]
async fn concurrent_reservations_never_overshoot() {
    for (limits, name) in backends() {
        let limits = Arc::new(limits);
        let ask = Arc::new(Ask {
            budgets: vec![
                budget(&format!("{name}:key"), 100, 5),
                budget(&format!("{name}:team"), 1_000, 5),
            ],
            rates: vec![],
        });
        let now = now_ms();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (limits, ask) = (Arc::clone(&limits), Arc::clone(&ask));
                tokio::spawn(async move { limits.reserve(&ask, now).await.unwrap() })
            })
            .collect();
        let mut served = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), Verdict::Granted(_)) {
                served += 1;
            }
        }
        assert_eq!(served, 20, "{name}: exactly what fits in 100 at 5 each");
    }
}

#[tokio::test]
async fn a_minute_limit_lets_its_count_through_then_one_per_interval() {
    for (limits, name) in backends() {
        let ask = Ask {
            budgets: vec![],
            rates: vec![RateAsk {
                name: format!("{name}:key"),
                kind: RateKind::Requests,
                per_minute: 60,
                cost: 1,
            }],
        };
        let now = now_ms();
        for i in 0..60 {
            let grant = granted(limits.reserve(&ask, now).await.unwrap());
            assert_eq!(grant.remaining[0].2, 59 - i, "{name}");
        }
        match limits.reserve(&ask, now).await.unwrap() {
            Verdict::RateLimited {
                kind,
                retry_after_ms,
                ..
            } => {
                assert_eq!(kind, RateKind::Requests);
                assert!(
                    (900..=1001).contains(&retry_after_ms),
                    "{name}: {retry_after_ms}"
                );
            }
            other => panic!("{name}: expected a rate limit, got {other:?}"),
        }
        // A second later, one more fits; a minute later, all of them.
        granted(limits.reserve(&ask, now + 1_000).await.unwrap());
        assert!(matches!(
            limits.reserve(&ask, now + 1_000).await.unwrap(),
            Verdict::RateLimited { .. }
        ));
        let later = granted(limits.reserve(&ask, now + 61_000).await.unwrap());
        assert_eq!(later.remaining[0].2, 59, "{name}");
    }
}

#[tokio::test]
async fn token_limits_settle_to_the_actual_tokens() {
    for (limits, name) in backends() {
        let ask = Ask {
            budgets: vec![],
            rates: vec![RateAsk {
                name: format!("{name}:key"),
                kind: RateKind::Tokens,
                per_minute: 1_000,
                cost: 600,
            }],
        };
        let now = now_ms();
        let grant = granted(limits.reserve(&ask, now).await.unwrap());
        // 600 estimated: another 600 does not fit until the first settles at 100.
        assert!(matches!(
            limits.reserve(&ask, now).await.unwrap(),
            Verdict::RateLimited { .. }
        ));
        limits.settle(&grant, 0, 100).await.unwrap();
        granted(limits.reserve(&ask, now).await.unwrap());
    }
}

#[tokio::test]
async fn periods_reset_and_refusals_take_nothing() {
    for (limits, name) in backends() {
        let key = budget(&format!("{name}:key"), 10, 10);
        let ask = Ask {
            budgets: vec![key, budget(&format!("{name}:tenant"), 15, 10)],
            rates: vec![],
        };
        let now = now_ms();
        let grant = granted(limits.reserve(&ask, now).await.unwrap());
        limits.settle(&grant, 10, 0).await.unwrap();
        // The key is spent; its refusal reserves nothing on the tenant.
        assert!(matches!(
            limits.reserve(&ask, now).await.unwrap(),
            Verdict::OverBudget { .. }
        ));
        let tenant_only = Ask {
            budgets: vec![budget(&format!("{name}:tenant"), 15, 5)],
            rates: vec![],
        };
        granted(limits.reserve(&tenant_only, now).await.unwrap());
        // The next hour is a new period.
        granted(limits.reserve(&ask, now + 3_600_000).await.unwrap());
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_at_once() {
    let limits = Limits::redis("redis://127.0.0.1:1").unwrap();
    let started = std::time::Instant::now();
    let ask = Ask {
        budgets: vec![budget("unreachable:key", 10, 1)],
        rates: vec![],
    };
    assert!(matches!(
        limits.reserve(&ask, now_ms()).await,
        Err(LimitsError::Unavailable(_))
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(matches!(
        Limits::redis("not a url"),
        Err(LimitsError::Settings(_))
    ));
}
