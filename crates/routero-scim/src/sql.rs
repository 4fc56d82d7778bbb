//! Filters compiled to SQL, so they run in the store rather than over a tenant loaded into
//! memory. Every filterable value of a resource is a row of the search index
//! (`scim_values`: `resource_id`, `attr`, `idx`, `sub`, `value`, see
//! [`crate::resource::index_rows`]); an attribute expression becomes `r.id IN` the resources
//! whose rows pass it, a value path the same over one element's rows (an `EXISTS` per
//! sub-attribute, correlated on the element). Names and values are all bound as
//! parameters; the SQL text is built from fixed fragments only. The SQL is the same on
//! PostgreSQL and SQLite.

use crate::filter::{AttrPath, Filter, Op};
use crate::resource::operand;
use crate::schema::{self, Attribute, Kind, Type};
use crate::{ScimError, ScimType};

/// A filter as an SQL condition on the resource row aliased `r` (its `id` column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The condition, with `$n` parameters.
    pub sql: String,
    /// The values of the parameters, in order.
    pub params: Vec<String>,
}

/// Compiles `filter` for resources of `kind`; its parameters are numbered from `first`, and
/// `$1` must be bound to the tenant (the index rows read are the tenant's own).
pub fn compile(kind: Kind, filter: &Filter, first: usize) -> Result<Condition, ScimError> {
    let mut compiler = Compiler {
        kind,
        first,
        params: Vec::new(),
        aliases: 0,
    };
    let sql = compiler.node(filter, None)?;
    Ok(Condition {
        sql,
        params: compiler.params,
    })
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad(ScimType::InvalidFilter, detail)
}

/// The element a value path's inner filter is about: its alias and attribute.
#[derive(Clone, Copy)]
struct Element<'a> {
    alias: &'a str,
    attribute: &'static Attribute,
}

struct Compiler {
    kind: Kind,
    first: usize,
    params: Vec<String>,
    aliases: usize,
}

impl Compiler {
    fn param(&mut self, value: String) -> String {
        self.params.push(value);
        format!("${}", self.first + self.params.len() - 1)
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn node(&mut self, filter: &Filter, element: Option<Element<'_>>) -> Result<String, ScimError> {
        Ok(match filter {
            Filter::And(a, b) => format!(
                "({} AND {})",
                self.node(a, element)?,
                self.node(b, element)?
            ),
            Filter::Or(a, b) => {
                format!("({} OR {})", self.node(a, element)?, self.node(b, element)?)
            }
            Filter::Not(inner) => format!("NOT ({})", self.node(inner, element)?),
            Filter::ValuePath(path, inner) => {
                if element.is_some() {
                    return Err(invalid("a value path cannot be nested"));
                }
                let resolved = schema::resolve(self.kind, path)
                    .ok_or_else(|| invalid(format!("{} is not an attribute", path.name)))?;
                let attribute = resolved.attribute;
                if !attribute.multi || attribute.ty != Type::Complex {
                    return Err(invalid(format!(
                        "{} is not a list of objects",
                        attribute.name
                    )));
                }
                let alias = self.alias("e");
                let attr = self.param(resolved.index_key());
                let inner = self.node(
                    inner,
                    Some(Element {
                        alias: &alias,
                        attribute,
                    }),
                )?;
                format!(
                    "r.id IN (SELECT {alias}.resource_id FROM scim_values {alias} \
                     WHERE {alias}.tenant_id = $1 AND {alias}.attr = {attr} AND {inner})"
                )
            }
            Filter::Present(path) => {
                let (attr, sub, _) = self.target(path, element, true)?;
                self.exists(element, &attr, sub.as_deref(), None)
            }
            Filter::Compare(path, op, value) => {
                let (attr, sub, leaf) = self.target(path, element, false)?;
                let leaf =
                    leaf.ok_or_else(|| invalid(format!("{} cannot be compared", path.name)))?;
                let value = operand(leaf, *op, value)?;
                // Substring tests are written with REPLACE and substr, which compare exactly on
                // both databases (SQLite's LIKE ignores ASCII case, PostgreSQL's does not); values
                // of case-insensitive attributes are lowercased on both sides already.
                let p = self.param(value);
                let test = match op {
                    Op::Eq | Op::Ne => format!("{{v}}.value = {p}"),
                    Op::Co => format!("({p} = '' OR REPLACE({{v}}.value, {p}, '') <> {{v}}.value)"),
                    Op::Sw => format!("substr({{v}}.value, 1, length({p})) = {p}"),
                    Op::Ew => {
                        format!("substr({{v}}.value, length({{v}}.value) - length({p}) + 1) = {p}")
                    }
                    Op::Gt => format!("{{v}}.value > {p}"),
                    Op::Ge => format!("{{v}}.value >= {p}"),
                    Op::Lt => format!("{{v}}.value < {p}"),
                    Op::Le => format!("{{v}}.value <= {p}"),
                };
                let exists = self.exists(element, &attr, sub.as_deref(), Some(&test));
                if *op == Op::Ne {
                    format!("NOT {exists}")
                } else {
                    exists
                }
            }
        })
    }

    /// The index key, sub-attribute key and compared attribute `path` names, in the resource
    /// or in a value path's element. `present` allows a complex attribute without a
    /// sub-attribute.
    fn target(
        &self,
        path: &AttrPath,
        element: Option<Element<'_>>,
        present: bool,
    ) -> Result<(String, Option<String>, Option<&'static Attribute>), ScimError> {
        if let Some(element) = element {
            let sub = (path.urn.is_none() && path.sub.is_none())
                .then(|| element.attribute.sub_attribute(&path.name))
                .flatten()
                .ok_or_else(|| {
                    invalid(format!(
                        "{} has no sub-attribute {}",
                        element.attribute.name, path.name
                    ))
                })?;
            return Ok((
                String::new(),
                Some(sub.name.to_ascii_lowercase()),
                Some(sub),
            ));
        }
        let resolved = schema::resolve(self.kind, path)
            .ok_or_else(|| invalid(format!("{} is not an attribute", path.name)))?;
        if path.sub.is_some() && resolved.sub.is_none() {
            return Err(invalid(format!("{} has no such sub-attribute", path.name)));
        }
        if self.kind == Kind::User
            && resolved.extension.is_none()
            && resolved.attribute.name == "groups"
        {
            // Derived from group membership and not indexed; filter the Groups' members instead.
            return Err(invalid(
                "filter Groups by members.value instead of Users by groups",
            ));
        }
        if !resolved.leaf().returned() {
            return Err(invalid(format!(
                "{} cannot be filtered",
                resolved.leaf().name
            )));
        }
        let key = resolved.index_key();
        match (resolved.sub, resolved.attribute.ty) {
            (Some(sub), _) => Ok((key, Some(resolved.sub_key()), Some(sub))),
            (None, Type::Complex) if present => Ok((key, None, None)),
            (None, Type::Complex) => match resolved.attribute.sub_attribute("value") {
                Some(value) if resolved.attribute.multi => {
                    Ok((key, Some("value".into()), Some(value)))
                }
                _ => Err(invalid(format!(
                    "name a sub-attribute of {}",
                    resolved.attribute.name
                ))),
            },
            (None, _) => Ok((key, Some(String::new()), Some(resolved.attribute))),
        }
    }

    /// The index rows of `attr` (and `sub`) passing `test` on their value: `r.id IN (…)` for a
    /// resource, `EXISTS (…)` for a value path's element.
    fn exists(
        &mut self,
        element: Option<Element<'_>>,
        attr: &str,
        sub: Option<&str>,
        test: Option<&str>,
    ) -> String {
        let v = self.alias("v");
        let mut sql = match element {
            // Uncorrelated, so the (attr, sub, value) index finds the resources.
            None => {
                let attr = self.param(attr.to_owned());
                format!(
                    "r.id IN (SELECT {v}.resource_id FROM scim_values {v} \
                     WHERE {v}.tenant_id = $1 AND {v}.attr = {attr}"
                )
            }
            Some(element) => {
                let e = element.alias;
                format!(
                    "EXISTS (SELECT 1 FROM scim_values {v} WHERE {v}.resource_id = {e}.resource_id \
                     AND {v}.attr = {e}.attr AND {v}.idx = {e}.idx"
                )
            }
        };
        if let Some(sub) = sub {
            let sub = self.param(sub.to_owned());
            sql.push_str(&format!(" AND {v}.sub = {sub}"));
        }
        if let Some(test) = test {
            sql.push_str(" AND ");
            sql.push_str(&test.replace("{v}", &v));
        }
        sql.push(')');
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse;

    fn sql(filter: &str) -> Result<Condition, ScimError> {
        compile(Kind::User, &parse(filter)?, 2)
    }

    #[test]
    fn values_are_parameters_never_text() {
        let c = sql(r#"userName eq "X' OR 1=1 --""#).expect("compiles");
        assert!(
            !c.sql.to_lowercase().contains("1=1") && !c.sql.contains('\''),
            "{}",
            c.sql
        );
        assert_eq!(c.params, vec!["x' or 1=1 --", "username", ""]);
        assert!(c.sql.contains("$2") && c.sql.contains("$4") && !c.sql.contains("$5"));
    }

    #[test]
    fn case_rules_and_wildcards() {
        let c = sql(r#"externalId sw "A_b%""#).expect("compiles");
        assert_eq!(c.params.first().map(String::as_str), Some("A_b%"));
        assert!(
            c.sql.contains("substr(v1.value, 1, length($2)) = $2"),
            "{}",
            c.sql
        );
        let c = sql(r#"emails co "ADA""#).expect("compiles");
        assert_eq!(c.params, vec!["ada", "emails", "value"]);
    }

    #[test]
    fn value_paths_correlate_one_element() {
        let c = sql(r#"emails[type eq "work" and primary eq true]"#).expect("compiles");
        assert!(c.sql.contains(".idx = e1.idx"));
        assert_eq!(c.params, vec!["emails", "work", "type", "true", "primary"]);
    }

    #[test]
    fn refusals() {
        for filter in [
            r#"shoeSize eq "1""#,
            r#"name eq "x""#,
            "active gt true",
            r#"active co "t""#,
            r#"userName eq 5"#,
            r#"userName eq null"#,
            r#"emails[colour eq "red"]"#,
            r#"userName[value eq "x"]"#,
            r#"password eq "x""#,
            r#"meta.lastModified co "2026""#,
            r#"name.nope eq "x""#,
            r#"groups.value eq "g1""#,
        ] {
            assert_eq!(
                sql(filter).expect_err(filter).scim_type,
                Some(ScimType::InvalidFilter),
                "{filter}"
            );
        }
    }
}
