//! The counters in Redis: one Lua script reserves all of a request's counters (all or nothing,
//! one round trip), another settles them. Scripts are sent by digest (EVALSHA) and loaded once.
//! Every call is bounded in time: a Redis that does not answer is an error, never a wait.

use std::time::Duration;

use deadpool_redis::redis::Script;
use deadpool_redis::{Config, Pool, Runtime};

use crate::{Crossed, Grant, LimitsError, MINUTE_US, Plan, Verdict};

/// The longest a reservation or settlement may take.
const TIMEOUT: Duration = Duration::from_millis(750);

/// ARGV: budget count, rate count, now (µs); then per budget limit, amount, ttl (ms); then per
/// rate interval (µs), cost. KEYS: the budgets' hashes, then the rates' arrival times.
/// Returns `{0, remaining…}`, `{1, budget index, used}` or `{2, rate index, retry after µs}`.
const RESERVE: &str = r"
local nb = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local minute = tonumber(ARGV[4])
local a = 5
for i = 1, nb do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local used = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  if used + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then
    return {1, i, used}
  end
  a = a + 3
end
local arrivals = {}
for j = 1, nr do
  local tat = tonumber(redis.call('GET', KEYS[nb + j]) or '0')
  if tat < now then tat = now end
  local next = tat + tonumber(ARGV[a + 1]) * tonumber(ARGV[a])
  if next - now > minute then
    return {2, j, next - now - minute}
  end
  arrivals[j] = next
  a = a + 2
end
a = 5
for i = 1, nb do
  redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[a + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 2])
  a = a + 3
end
local out = {0}
for j = 1, nr do
  redis.call('SET', KEYS[nb + j], string.format('%d', arrivals[j]), 'PX', math.floor(minute / 1000) + 1000)
  out[j + 1] = math.floor((minute - (arrivals[j] - now)) / tonumber(ARGV[a]))
  a = a + 2
end
return out
";

/// ARGV: budget count, token count, actual micro-dollars, actual tokens; then per budget
/// reserved, limit, ttl (ms), threshold count, thresholds…; then per token limit reserved,
/// interval (µs). KEYS: the budgets' hashes, then the token limits' arrival times. Returns,
/// per budget, its spend then each threshold newly reached.
const SETTLE: &str = r"
local nb = tonumber(ARGV[1])
local nt = tonumber(ARGV[2])
local actual = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local out = {}
local a = 5
for i = 1, nb do
  redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[a]))
  local spent = redis.call('HINCRBY', KEYS[i], 'spent', actual)
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 2])
  local limit = tonumber(ARGV[a + 1])
  local count = tonumber(ARGV[a + 3])
  local reached = {spent}
  for t = 1, count do
    local percent = tonumber(ARGV[a + 3 + t])
    if spent * 100 >= percent * limit and redis.call('HSETNX', KEYS[i], 't' .. percent, 1) == 1 then
      reached[#reached + 1] = percent
    end
  end
  out[i] = reached
  a = a + 4 + count
end
for j = 1, nt do
  local key = KEYS[nb + j]
  local tat = redis.call('GET', key)
  if tat then
    local moved = tonumber(tat) + (tokens - tonumber(ARGV[a])) * tonumber(ARGV[a + 1])
    redis.call('SET', key, string.format('%d', moved), 'KEEPTTL')
  end
  a = a + 2
end
return out
";

/// Counters in Redis.
pub(crate) struct Counters {
    pool: Pool,
    reserve: Script,
    settle: Script,
}

fn unavailable(error: impl std::fmt::Display) -> LimitsError {
    LimitsError::Unavailable(error.to_string())
}

impl Counters {
    pub(crate) fn connect(url: &str) -> Result<Self, LimitsError> {
        let mut config = Config::from_url(url);
        let mut pool = deadpool_redis::PoolConfig::default();
        pool.timeouts.wait = Some(TIMEOUT);
        pool.timeouts.create = Some(TIMEOUT);
        pool.timeouts.recycle = Some(TIMEOUT);
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|error| LimitsError::Settings(format!("redis_url: {error}")))?;
        Ok(Self {
            pool,
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
        })
    }

    async fn run<T: deadpool_redis::redis::FromRedisValue>(
        &self,
        invocation: deadpool_redis::redis::ScriptInvocation<'_>,
    ) -> Result<T, LimitsError> {
        let work = async {
            let mut connection = self.pool.get().await.map_err(unavailable)?;
            invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| unavailable("no answer in time"))?
    }

    pub(crate) async fn reserve(&self, plan: &Plan, now_ms: i64) -> Result<Verdict, LimitsError> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .arg(plan.budgets.len())
            .arg(plan.rates.len())
            .arg(now_ms.saturating_mul(1000))
            .arg(MINUTE_US);
        for (held, _, _) in &plan.budgets {
            invocation
                .key(&held.key)
                .arg(held.limit)
                .arg(held.reserved)
                .arg(held.ttl_ms);
        }
        for rate in &plan.rates {
            invocation
                .key(&rate.key)
                .arg(rate.interval_us)
                .arg(rate.cost);
        }
        let answer: Vec<i64> = self.run(invocation).await?;
        let index = |i: Option<&i64>| {
            i.and_then(|i| usize::try_from(*i).ok())
                .and_then(|i| i.checked_sub(1))
        };
        match answer.first() {
            Some(0) => Ok(Verdict::Granted(plan.grant(answer.iter().skip(1).copied()))),
            Some(1) => {
                let (held, _, end) = index(answer.get(1))
                    .and_then(|i| plan.budgets.get(i))
                    .ok_or_else(|| unavailable("an answer naming no budget"))?;
                Ok(Verdict::OverBudget {
                    name: held.name.clone(),
                    used_micros: answer.get(2).copied().unwrap_or(0),
                    limit_micros: held.limit,
                    resets_at: *end,
                })
            }
            Some(2) => {
                let rate = index(answer.get(1))
                    .and_then(|i| plan.rates.get(i))
                    .ok_or_else(|| unavailable("an answer naming no rate limit"))?;
                let wait_us = answer.get(2).copied().unwrap_or(0);
                Ok(Verdict::RateLimited {
                    name: rate.name.clone(),
                    kind: rate.kind,
                    retry_after_ms: u64::try_from(wait_us / 1000 + 1).unwrap_or(u64::MAX),
                })
            }
            _ => Err(unavailable("an answer the script never gives")),
        }
    }

    pub(crate) async fn settle(
        &self,
        grant: &Grant,
        actual_micros: i64,
        actual_tokens: u64,
    ) -> Result<Vec<Crossed>, LimitsError> {
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .arg(grant.budgets.len())
            .arg(grant.tokens.len())
            .arg(actual_micros.max(0))
            .arg(actual_tokens);
        for held in &grant.budgets {
            invocation
                .key(&held.key)
                .arg(held.reserved)
                .arg(held.limit)
                .arg(held.ttl_ms)
                .arg(held.thresholds.len());
            for percent in &held.thresholds {
                invocation.arg(*percent);
            }
        }
        for held in &grant.tokens {
            invocation
                .key(&held.key)
                .arg(held.reserved)
                .arg(held.interval_us);
        }
        let answer: Vec<Vec<i64>> = self.run(invocation).await?;
        Ok(grant
            .budgets
            .iter()
            .zip(answer)
            .flat_map(|(held, reached)| {
                let spent = reached.first().copied().unwrap_or(0);
                reached.into_iter().skip(1).filter_map(move |percent| {
                    Some(Crossed {
                        name: held.name.clone(),
                        percent: u8::try_from(percent).ok()?,
                        spent_micros: spent,
                    })
                })
            })
            .collect())
    }
}
