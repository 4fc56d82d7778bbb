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

/// Appends a field, length-prefixed so that no two different inputs give the same key.
fn field(key: &mut String, value: &str) {
    key.push_str(&value.len().to_string());
    key.push(':');
    key.push_str(value);
}

fn list(key: &mut String, values: &[String]) {
    let mut sorted: Vec<&String> = values.iter().collect();
    sorted.sort();
    key.push_str(&sorted.len().to_string());
    key.push('[');
    for value in sorted {
        field(key, value);
    }
}

/// Everything a decision depends on, unambiguously encoded.
pub(crate) fn key(principal: &Principal, target: &Target, action: &str) -> String {
    let mut key = String::with_capacity(128);
    field(&mut key, &principal.id);
    field(&mut key, &principal.tenant);
    list(&mut key, &principal.roles);
    list(&mut key, &principal.teams);
    list(&mut key, &principal.permissions);
    field(&mut key, &target.kind);
    field(&mut key, &target.id);
    field(&mut key, &target.tenant);
    key.push_str(&target.attributes.len().to_string());
    for (name, value) in &target.attributes {
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

    fn principal(roles: &[&str]) -> Principal {
        Principal {
            id: "p".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            tenant: "t".into(),
            teams: Vec::new(),
            permissions: Vec::new(),
        }
    }

    fn target() -> Target {
        Target {
            kind: "model".into(),
            id: "m".into(),
            tenant: "t".into(),
            attributes: vec![("tier".into(), "premium".into())],
        }
    }

    #[test]
    fn a_new_policy_version_forgets_every_decision() {
        let cache = DecisionCache::new(10, Duration::ZERO);
        let key = key(&principal(&["developer"]), &target(), "invoke");
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
        let base = key(&principal(&["developer"]), &target(), "invoke");
        assert_ne!(base, key(&principal(&["manager"]), &target(), "invoke"));
        assert_ne!(base, key(&principal(&["developer"]), &target(), "read"));
        let mut other = target();
        other.attributes[0].1 = "standard".into();
        assert_ne!(base, key(&principal(&["developer"]), &other, "invoke"));
        // Length prefixes: moving a character between fields changes the key.
        let mut shifted = principal(&["developer"]);
        shifted.id = "pt".into();
        shifted.tenant = String::new();
        assert_ne!(base, key(&shifted, &target(), "invoke"));
        // Role order does not matter.
        assert_eq!(
            key(&principal(&["a", "b"]), &target(), "x"),
            key(&principal(&["b", "a"]), &target(), "x")
        );
    }

    #[test]
    fn decisions_are_not_kept_while_a_new_version_settles() {
        let cache = DecisionCache::new(10, Duration::from_secs(60));
        let key = key(&principal(&[]), &target(), "invoke");
        cache.put("v1", key.clone(), true);
        assert_eq!(cache.get("v1", &key), None);
    }

    #[test]
    fn the_cache_starts_over_at_capacity() {
        let cache = DecisionCache::new(2, Duration::ZERO);
        for action in ["a", "b", "c"] {
            cache.put("v", key(&principal(&[]), &target(), action), true);
        }
        assert_eq!(cache.len(), 1);
    }
}
