//! Secrets kept out of logs and Debug output.

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// `url` with its password (`user:password@`) and the value of every query parameter whose
/// name suggests a secret (`password`, `sslpassword`, `token`, `secret`, `key`, `sig`,
/// `auth`, `credential`) replaced, for logs and Debug output; anything else is kept, so the
/// URL still says where it points.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = tail
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{scheme}://{authority}{tail}")
}

/// Whether a query parameter's name suggests its value is a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name
        .rsplit(['?', '#'])
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    [
        "pass",
        "token",
        "secret",
        "key",
        "sig",
        "auth",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_and_the_rest_stays() {
        assert_eq!(
            redact_url("postgres://app:s3cr%3At@db.internal:5432/routero?sslmode=require"),
            "postgres://app:[REDACTED]@db.internal:5432/routero?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/routero?user=app&password=s3cret&sslmode=require"),
            "postgres://db/routero?user=app&password=[REDACTED]&sslmode=require"
        );
        assert_eq!(
            redact_url(
                "https://siem.example/hook?tenant=a&token=abc&X-Amz-Signature=f00&sslpassword=p"
            ),
            "https://siem.example/hook?tenant=a&token=[REDACTED]&X-Amz-Signature=[REDACTED]&sslpassword=[REDACTED]"
        );
        assert_eq!(
            redact_url("sqlite://./data/routero.db"),
            "sqlite://./data/routero.db"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("postgres://é:ü@h/ä"),
            "postgres://é:[REDACTED]@h/ä"
        );
    }
}
