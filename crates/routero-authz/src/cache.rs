//! The decision cache: (principal, target, action) → allow, for one policy version at a time.
//!
//! A PDP reloads its policies a moment after they change on disk, so for `settle` after a
//! version is first seen its decisions are answered but not kept: what the PDP said before
//! it reloaded is never cached under the new version.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::{Principal, Target};

struct Entries {
    version: String,
    seen: Instant,
    decisions: HashMap<String, bool>,
}

/// Decisions of the current policy version; a different version starts it over.
pub(crate) struct DecisionCache {
    capacity: usize,
    settle: Duration,
    entries: RwLock<Entries>,
}

/// Appends a count and its separator: a count is never read together with the digits of
/// the length that follows it.
fn count(key: &mut String, n: usize) {
    key.push_str(&n.to_string());
    key.push('#');
}

/// Appends a field, length-prefixed so that no two different inputs give the same key.
fn field(key: &mut String, value: &str) {
    key.push_str(&value.len().to_string());
    key.push(':');
    key.push_str(value);
}

/// A set of names, order-free (sorted first, which rarely needs a copy).
fn list(key: &mut String, values: &[String]) {
    count(key, values.len());
    if values.is_sorted() {
        values.iter().for_each(|value| field(key, value));
    } else {
        let mut sorted: Vec<&String> = values.iter().collect();
        sorted.sort();
        sorted.into_iter().for_each(|value| field(key, value));
    }
}

/// Everything a decision depends on, unambiguously encoded.
pub(crate) fn key(principal: &Principal<'_>, target: &Target<'_>, action: &str) -> String {
    let mut key = String::with_capacity(128);
    field(&mut key, principal.id);
    field(&mut key, principal.tenant);
    list(&mut key, principal.roles);
    list(&mut key, principal.teams);
    list(&mut key, principal.permissions);
    field(&mut key, target.kind);
    field(&mut key, target.id);
    field(&mut key, target.tenant);
    count(&mut key, target.attributes.len());
    for (name, value) in target.attributes {
        field(&mut key, name);
        field(&mut key, value);
    }
    field(&mut key, action);
    key
}

impl DecisionCache {
    pub(crate) fn new(capacity: usize, settle: Duration) -> Self {
        Self {
            capacity,
            settle,
            entries: RwLock::new(Entries {
                version: String::new(),
                seen: Instant::now(),
                decisions: HashMap::new(),
            }),
        }
    }

    pub(crate) fn get(&self, version: &str, key: &str) -> Option<bool> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        (entries.version == version)
            .then(|| entries.decisions.get(key).copied())
            .flatten()
    }

    pub(crate) fn put(&self, version: &str, key: String, allowed: bool) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.version != version {
            entries.decisions.clear();
            version.clone_into(&mut entries.version);
            entries.seen = Instant::now();
        }
        if entries.seen.elapsed() < self.settle {
            return;
        }
        if entries.decisions.len() >= self.capacity {
            entries.decisions.clear();
        }
        entries.decisions.insert(key, allowed);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .decisions
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    /// The cache key of `id` in `tenant` with `roles` doing `action` on a model of `tier`.
    fn key_of(id: &str, tenant: &str, roles: &[&str], tier: &str, action: &str) -> String {
        let attributes = BTreeMap::from([("tier".to_owned(), tier.to_owned())]);
        key_with(id, tenant, roles, &attributes, action)
    }

    /// The cache key of `id` in `tenant` with `roles` doing `action` on a model with
    /// `attributes`.
    fn key_with(
        id: &str,
        tenant: &str,
        roles: &[&str],
        attributes: &BTreeMap<String, String>,
        action: &str,
    ) -> String {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let principal = Principal {
            id,
            roles: &roles,
            tenant,
            teams: &[],
            permissions: &[],
        };
        let target = Target {
            kind: "model",
            id: "m",
            tenant: "t",
            attributes,
        };
        key(&principal, &target, action)
    }

    #[test]
    fn a_new_policy_version_forgets_every_decision() {
        let cache = DecisionCache::new(10, Duration::ZERO);
        let key = key_of("p", "t", &["developer"], "premium", "invoke");
        cache.put("v1", key.clone(), true);
        assert_eq!(cache.get("v1", &key), Some(true));
        assert_eq!(
            cache.get("v2", &key),
            None,
            "never served under another version"
        );
        cache.put("v2", key.clone(), false);
        assert_eq!(cache.get("v2", &key), Some(false));
        assert_eq!(cache.get("v1", &key), None, "the old version is gone");
    }

    #[test]
    fn keys_tell_apart_what_decisions_depend_on() {
        let base = key_of("p", "t", &["developer"], "premium", "invoke");
        assert_ne!(base, key_of("p", "t", &["manager"], "premium", "invoke"));
        assert_ne!(base, key_of("p", "t", &["developer"], "premium", "read"));
        assert_ne!(base, key_of("p", "t", &["developer"], "standard", "invoke"));
        // Length prefixes: moving a character between fields changes the key.
        assert_ne!(base, key_of("pt", "", &["developer"], "premium", "invoke"));
        // Role order does not matter.
        assert_eq!(
            key_of("p", "t", &["a", "b"], "premium", "x"),
            key_of("p", "t", &["b", "a"], "premium", "x")
        );
    }

    #[test]
    fn an_attribute_count_is_not_read_with_the_length_after_it() {
        // Twelve attributes whose first name is 3 characters long, against one attribute
        // whose 23-character name and 88-character value hold the other eleven: without a
        // separator after the count, both began "123:" and encoded the same.
        let mut twelve = BTreeMap::from([("aaa".to_owned(), format!("{}88:", "x".repeat(17)))]);
        twelve.extend((0..11).map(|i| (format!("b{i:02}"), "v".to_owned())));
        let hidden: String = (0..11).map(|i| format!("3:b{i:02}1:v")).collect();
        let one = BTreeMap::from([(format!("aaa20:{}", "x".repeat(17)), hidden)]);
        assert_ne!(
            key_with("p", "t", &[], &twelve, "invoke"),
            key_with("p", "t", &[], &one, "invoke")
        );
    }

    #[test]
    fn decisions_are_not_kept_while_a_new_version_settles() {
        let cache = DecisionCache::new(10, Duration::from_secs(60));
        let key = key_of("p", "t", &[], "premium", "invoke");
        cache.put("v1", key.clone(), true);
        assert_eq!(cache.get("v1", &key), None);
    }

    #[test]
    fn the_cache_starts_over_at_capacity() {
        let cache = DecisionCache::new(2, Duration::ZERO);
        for action in ["a", "b", "c"] {
            cache.put("v", key_of("p", "t", &[], "premium", action), true);
        }
        assert_eq!(cache.len(), 1);
    }
}
