//! The SCIM filter language (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2), parsed by a parser
//! of our own with hard limits: a filter longer than [`MAX_FILTER_BYTES`] or nested deeper than
//! [`MAX_DEPTH`] is refused, and so is anything the grammar does not have. Nothing is skipped:
//! a clause that is not understood refuses the whole filter.
//!
//! Attribute names are kept as written; [`crate::schema`] resolves them case-insensitively.

use serde_json::Value;

use crate::{ScimError, ScimType};

/// The longest filter accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 2048;
/// The deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_DEPTH: usize = 32;

/// An attribute as a filter or path names it: `[urn:]name[.sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN it was qualified with, if any.
    pub urn: Option<String>,
    /// The attribute.
    pub name: String,
    /// The sub-attribute, if any.
    pub sub: Option<String>,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains.
    Co,
    /// Starts with.
    Sw,
    /// Ends with.
    Ew,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "co" => Self::Co,
            "sw" => Self::Sw,
            "ew" => Self::Ew,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }

    /// Whether the operator orders values (`gt`, `ge`, `lt`, `le`).
    pub fn orders(self) -> bool {
        matches!(self, Self::Gt | Self::Ge | Self::Lt | Self::Le)
    }

    /// Whether the operator matches parts of strings (`co`, `sw`, `ew`).
    pub fn is_substring(self) -> bool {
        matches!(self, Self::Co | Self::Sw | Self::Ew)
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value`.
    Compare(AttrPath, Op, Value),
    /// `attr pr`.
    Present(AttrPath),
    /// `a and b`.
    And(Box<Filter>, Box<Filter>),
    /// `a or b`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`.
    Not(Box<Filter>),
    /// `attr[filter]`: an element of the multi-valued `attr` matches `filter`, whose attribute
    /// names are sub-attributes of `attr`.
    ValuePath(AttrPath, Box<Filter>),
}

/// A PATCH operation's `path`: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (with its sub-attribute when no filter is given).
    pub attr: AttrPath,
    /// The value filter selecting elements of a multi-valued attribute.
    pub filter: Option<Filter>,
    /// The sub-attribute of the selected elements.
    pub sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// A name, keyword, operator, number or literal (`true`, `false`, `null`).
    Word(String),
    /// A quoted string, unescaped.
    Text(String),
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad(ScimType::InvalidFilter, detail)
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '$' | '+')
}

fn lex(text: &str) -> Result<Vec<Token>, ScimError> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(invalid(format!(
            "the filter is longer than {MAX_FILTER_BYTES} bytes"
        )));
    }
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '[' => Token::OpenBracket,
                    _ => Token::CloseBracket,
                });
            }
            '"' => {
                chars.next();
                tokens.push(Token::Text(quoted(&mut chars)?));
            }
            c if word_char(c) => {
                let mut word = String::new();
                while let Some(&c) = chars.peek().filter(|c| word_char(**c)) {
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(invalid(format!("unexpected character {other:?}"))),
        }
    }
    Ok(tokens)
}

/// The rest of a JSON string literal after its opening quote, unescaped.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, ScimError> {
    let mut literal = String::from("\"");
    let mut escaped = false;
    for c in chars.by_ref() {
        literal.push(c);
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            let text: String = serde_json::from_str(&literal)
                .map_err(|_| invalid("a string is not valid JSON"))?;
            if text.contains('\0') {
                return Err(invalid("a string holds a NUL character"));
            }
            return Ok(text);
        }
    }
    Err(invalid("a string is not closed"))
}

/// Parses `[urn:]name[.sub]`.
fn attr_path(word: &str) -> Result<AttrPath, ScimError> {
    let bad = || invalid(format!("{word:?} is not an attribute path"));
    let (urn, rest) = match word.rfind(':') {
        Some(at) => {
            let (urn, rest) = word.split_at(at);
            (Some(urn.to_owned()), rest.trim_start_matches(':'))
        }
        None => (None, word),
    };
    let mut parts = rest.split('.');
    let name = parts.next().filter(|n| valid_name(n)).ok_or_else(bad)?;
    let sub = match parts.next() {
        Some(sub) if valid_name(sub) => Some(sub.to_owned()),
        Some(_) => return Err(bad()),
        None => None,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(AttrPath {
        urn,
        name: name.to_owned(),
        sub,
    })
}

/// `ATTRNAME = ALPHA *(nameChar)`, with `$ref` allowed.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some('$') => name == "$ref",
        Some(c) if c.is_ascii_alphabetic() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
        _ => false,
    }
}

struct Parser {
    tokens: std::vec::IntoIter<Token>,
    peeked: Option<Token>,
    depth: usize,
}

impl Parser {
    fn new(tokens: Vec<Token>) -> Self {
        Self {
            tokens: tokens.into_iter(),
            peeked: None,
            depth: 0,
        }
    }

    fn peek(&mut self) -> Option<&Token> {
        if self.peeked.is_none() {
            self.peeked = self.tokens.next();
        }
        self.peeked.as_ref()
    }

    fn next(&mut self) -> Option<Token> {
        self.peeked.take().or_else(|| self.tokens.next())
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword));
        if found {
            self.next();
        }
        found
    }

    fn expect(&mut self, token: &Token, what: &str) -> Result<(), ScimError> {
        match self.next() {
            Some(t) if &t == token => Ok(()),
            _ => Err(invalid(format!("expected {what}"))),
        }
    }

    fn deeper(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(invalid(format!("the filter nests deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    /// `or` binds loosest; chains are folded iteratively, not recursively.
    fn or(&mut self, inside_value_path: bool) -> Result<Filter, ScimError> {
        let mut left = self.and(inside_value_path)?;
        while self.keyword("or") {
            let right = self.and(inside_value_path)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, inside_value_path: bool) -> Result<Filter, ScimError> {
        let mut left = self.unary(inside_value_path)?;
        while self.keyword("and") {
            let right = self.unary(inside_value_path)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, inside_value_path: bool) -> Result<Filter, ScimError> {
        if self.keyword("not") {
            self.deeper()?;
            self.expect(&Token::Open, "'(' after not")?;
            let inner = self.or(inside_value_path)?;
            self.expect(&Token::Close, "')'")?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Token::Open) {
            self.next();
            self.deeper()?;
            let inner = self.or(inside_value_path)?;
            self.expect(&Token::Close, "')'")?;
            self.depth -= 1;
            return Ok(inner);
        }
        let Some(Token::Word(word)) = self.next() else {
            return Err(invalid("expected an attribute"));
        };
        let path = attr_path(&word)?;
        if self.peek() == Some(&Token::OpenBracket) {
            if inside_value_path || path.sub.is_some() {
                return Err(invalid(
                    "a value path cannot be nested or name a sub-attribute",
                ));
            }
            self.next();
            self.deeper()?;
            let inner = self.or(true)?;
            self.expect(&Token::CloseBracket, "']'")?;
            self.depth -= 1;
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let Some(Token::Word(operator)) = self.next() else {
            return Err(invalid(format!("expected an operator after {word}")));
        };
        if operator.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = Op::parse(&operator)
            .ok_or_else(|| invalid(format!("{operator:?} is not an operator")))?;
        let value = match self.next() {
            Some(Token::Text(text)) => Value::String(text),
            Some(Token::Word(word)) => literal(&word)?,
            _ => return Err(invalid(format!("expected a value after {operator}"))),
        };
        Ok(Filter::Compare(path, op, value))
    }
}

/// `true`, `false`, `null` or a JSON number.
fn literal(word: &str) -> Result<Value, ScimError> {
    match word {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "null" => Ok(Value::Null),
        _ => serde_json::from_str::<serde_json::Number>(word)
            .map(Value::Number)
            .map_err(|_| invalid(format!("{word:?} is not a value"))),
    }
}

/// Parses a filter.
pub fn parse(text: &str) -> Result<Filter, ScimError> {
    let mut parser = Parser::new(lex(text)?);
    if parser.peek().is_none() {
        return Err(invalid("the filter is empty"));
    }
    let filter = parser.or(false)?;
    match parser.next() {
        None => Ok(filter),
        Some(_) => Err(invalid("the filter has text past its end")),
    }
}

/// Parses a PATCH path.
pub fn parse_path(text: &str) -> Result<PatchPath, ScimError> {
    let bad = |detail: String| ScimError::bad(ScimType::InvalidPath, detail);
    let mut parser = Parser::new(lex(text).map_err(|e| bad(e.detail))?);
    let Some(Token::Word(word)) = parser.next() else {
        return Err(bad(format!("{text:?} is not a path")));
    };
    let attr = attr_path(&word).map_err(|e| bad(e.detail))?;
    if parser.peek().is_none() {
        return Ok(PatchPath {
            attr,
            filter: None,
            sub: None,
        });
    }
    if attr.sub.is_some() || parser.next() != Some(Token::OpenBracket) {
        return Err(bad(format!("{text:?} is not a path")));
    }
    let filter = parser.or(true).map_err(|e| bad(e.detail))?;
    if parser.next() != Some(Token::CloseBracket) {
        return Err(bad(format!("{text:?}: expected ']'")));
    }
    let sub = match parser.next() {
        None => None,
        Some(Token::Word(rest)) => match rest.strip_prefix('.') {
            Some(sub) if valid_name(sub) => Some(sub.to_owned()),
            _ => return Err(bad(format!("{text:?} is not a path"))),
        },
        Some(_) => return Err(bad(format!("{text:?} is not a path"))),
    };
    if parser.next().is_some() {
        return Err(bad(format!("{text:?} has text past its end")));
    }
    Ok(PatchPath {
        attr,
        filter: Some(filter),
        sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            urn: None,
            name: name.into(),
            sub: sub.map(Into::into),
        }
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let f = parse(r#"a eq "1" or b eq "2" and not (c pr)"#).expect("parses");
        let Filter::Or(left, right) = f else {
            panic!("or at the top")
        };
        assert_eq!(*left, Filter::Compare(path("a", None), Op::Eq, "1".into()));
        assert!(matches!(*right, Filter::And(_, ref r) if matches!(**r, Filter::Not(_))));
    }

    #[test]
    fn urns_subattributes_and_value_paths() {
        let f = parse(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "x""#,
        )
        .expect("parses");
        let Filter::Compare(p, _, _) = f else {
            panic!("compare")
        };
        assert_eq!(
            p.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(p.name, "department");
        let f = parse(r#"emails[type eq "work" and primary eq true]"#).expect("parses");
        assert!(matches!(f, Filter::ValuePath(ref p, _) if p.name == "emails"));
        let f = parse(r#"name.familyName SW "O'Ma\"lley""#).expect("parses");
        assert_eq!(
            f,
            Filter::Compare(
                path("name", Some("familyName")),
                Op::Sw,
                "O'Ma\"lley".into()
            )
        );
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName xx "a""#,
            r#"userName eq "a" garbage"#,
            r#"userName eq "a" and"#,
            r#"(userName eq "a""#,
            r#"userName eq "a)"#,
            r#"emails[type eq "work"[value eq "x"]]"#,
            r#"a.b.c eq "x""#,
            "userName eq bare",
            r#"userName eq 'single'"#,
            r#"not userName eq "a""#,
            r#"userName eq "a\u0000b""#,
        ] {
            let error = parse(bad).expect_err(bad);
            assert_eq!(error.scim_type, Some(ScimType::InvalidFilter), "{bad}");
        }
    }

    #[test]
    fn limits_length_and_depth() {
        let long = format!(r#"userName eq "{}""#, "a".repeat(MAX_FILTER_BYTES));
        assert!(parse(&long).is_err());
        let deep = format!("{}userName pr{}", "(".repeat(1000), ")".repeat(1000));
        assert!(deep.len() < MAX_FILTER_BYTES);
        assert!(parse(&deep).is_err());
        let nots = format!("{}userName pr{}", "not (".repeat(300), ")".repeat(300));
        assert!(parse(&nots).is_err());
        let ok = format!(
            "{}userName pr{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn patch_paths() {
        let p = parse_path(r#"members[value eq "u1"]"#).expect("parses");
        assert_eq!(p.attr.name, "members");
        assert!(p.filter.is_some() && p.sub.is_none());
        let p = parse_path(r#"emails[type eq "work"].value"#).expect("parses");
        assert_eq!(p.sub.as_deref(), Some("value"));
        let p = parse_path("name.givenName").expect("parses");
        assert_eq!(p.attr.sub.as_deref(), Some("givenName"));
        for bad in [
            "",
            "a b",
            "members[value eq \"x\"",
            "members[value eq \"x\"].",
            "1abc",
        ] {
            assert_eq!(
                parse_path(bad).expect_err(bad).scim_type,
                Some(ScimType::InvalidPath)
            );
        }
    }

    proptest::proptest! {
        // The parser's fuzz run: bounded (about a second under `make test`), every case new.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// Any text, however hostile, parses or is refused: never a panic or a stack overflow.
        #[test]
        fn never_panics(text in "[ a-zA-Z0-9()\\[\\]\".:$_-]{0,300}") {
            let _ = parse(&text);
            let _ = parse_path(&text);
        }

        /// Filters built from the grammar parse, and deep ones are refused rather than recursed.
        #[test]
        fn grammar_shaped_text(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "(", ")", "not (", "and", "or", "userName", "emails", "[", "]", "eq",
                    "\"x\"", "pr", "true", "name.givenName", "gt", "1", "co",
                ]),
                0..200,
            )
        ) {
            let text = parts.join(" ");
            let _ = parse(&text);
            let _ = parse_path(&text);
        }
    }
}
