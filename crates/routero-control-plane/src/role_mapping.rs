//! A tenant's rules from identity-provider groups to Routero roles: the one place that
//! decides what roles a person holds, for SCIM groups today and SSO group claims later.
//!
//! A rule names a group by display name (case-insensitively) or id. A person holds the roles
//! of every rule one of their groups matches (so the most privileged match is never lost to
//! a lesser one), or the default roles when no rule matches. A person who ends with no roles
//! has no access: their keys are revoked.

use serde::{Deserialize, Serialize};

/// One rule: members of `group` hold `roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A group's display name (matched case-insensitively) or id.
    pub group: String,
    /// The roles its members hold.
    pub roles: Vec<String>,
}

/// A tenant's role mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// The rules, in no particular order.
    pub rules: Vec<Rule>,
    /// The roles of a person no rule matches.
    #[serde(default)]
    pub default_roles: Vec<String>,
}

/// A group as the mapping sees it.
#[derive(Debug, Clone, Copy)]
pub struct GroupRef<'a> {
    /// The group's id.
    pub id: &'a str,
    /// The group's display name.
    pub name: &'a str,
}

impl RoleMapping {
    /// The roles of a member of `groups`, sorted and without repeats; empty means no access.
    pub fn roles_for<'a>(
        &self,
        groups: impl IntoIterator<Item = GroupRef<'a>> + Clone,
    ) -> Vec<String> {
        let mut roles: Vec<String> = self
            .rules
            .iter()
            .filter(|rule| {
                groups
                    .clone()
                    .into_iter()
                    .any(|g| g.id == rule.group || g.name.eq_ignore_ascii_case(&rule.group))
            })
            .flat_map(|rule| rule.roles.iter().cloned())
            .collect();
        if roles.is_empty() {
            roles.clone_from(&self.default_roles);
        }
        roles.sort();
        roles.dedup();
        roles
    }

    /// [`RoleMapping::roles_for`] groups as the store reads them: `(id, name)`.
    pub fn roles_of(&self, groups: &[(String, String)]) -> Vec<String> {
        self.roles_for(groups.iter().map(|(id, name)| GroupRef { id, name }))
    }

    /// What a virtual key owned by a person holding `user_roles` acts with: the person's roles,
    /// narrowed to the key's own when it has some.
    pub fn key_roles(user_roles: &[String], key_roles: &[String]) -> Vec<String> {
        if key_roles.is_empty() {
            return user_roles.to_vec();
        }
        key_roles
            .iter()
            .filter(|r| user_roles.contains(r))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> RoleMapping {
        RoleMapping {
            rules: vec![
                Rule {
                    group: "Engineering".into(),
                    roles: vec!["developer".into()],
                },
                Rule {
                    group: "grp_ml".into(),
                    roles: vec!["manager".into(), "developer".into()],
                },
            ],
            default_roles: vec![],
        }
    }

    #[test]
    fn every_matching_rule_counts() {
        let groups = [
            GroupRef {
                id: "grp_eng",
                name: "engineering",
            },
            GroupRef {
                id: "grp_ml",
                name: "ML",
            },
        ];
        assert_eq!(mapping().roles_for(groups), vec!["developer", "manager"]);
        assert_eq!(
            mapping().roles_for(groups.iter().copied().take(1)),
            vec!["developer"]
        );
        assert!(mapping().roles_for([]).is_empty());
        let with_default = RoleMapping {
            default_roles: vec!["member".into()],
            ..mapping()
        };
        assert_eq!(with_default.roles_for([]), vec!["member"]);
    }

    #[test]
    fn keys_are_narrowed_never_widened() {
        let user = vec!["developer".to_owned()];
        assert_eq!(RoleMapping::key_roles(&user, &[]), user);
        assert!(RoleMapping::key_roles(&user, &["admin".into()]).is_empty());
    }
}
