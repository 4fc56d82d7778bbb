//! The S3 sink: every interval (hourly by default), each tenant's new chained records as
//! gzipped NDJSON objects (the export's record lines), one per hour of event time, under
//! `<prefix><tenant>/<YYYY>/<MM>/<DD>/<HH>/<first seq>-<last seq>.ndjson.gz`. Names carry the
//! sequence range, so a re-sent batch overwrites its own object. Requests are signed with AWS
//! Signature Version 4 (path-style URLs), which S3 and S3-compatible stores accept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use routero_audit::{AuditError, AuditStore, ChainedRecord, ExportLine};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

use crate::sink::{Sink, SinkConfig, run_sink, send};

/// Where the objects go.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `https://s3.<region>.amazonaws.com` or an S3-compatible endpoint.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Signing region.
    pub region: String,
    /// Prepended to every object name.
    pub prefix: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Scans (by default hourly, 50,000 records an object at most), retries, cursor name `s3`.
    pub delivery: SinkConfig,
}

impl S3Config {
    /// A sink with prefix `routero-audit/`, delivering hourly.
    pub fn new(
        endpoint: String,
        bucket: String,
        region: String,
        access_key_id: String,
        secret_access_key: SecretString,
    ) -> Self {
        let mut delivery = SinkConfig::new("s3");
        delivery.batch = 50_000;
        delivery.poll_interval = Duration::from_secs(3600);
        Self {
            endpoint,
            bucket,
            region,
            prefix: "routero-audit/".into(),
            access_key_id,
            secret_access_key,
            delivery,
        }
    }
}

struct S3 {
    config: S3Config,
    client: reqwest::Client,
    host: String,
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when `path`).
fn uri_encode(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) || (path && byte == b'/') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn hmac(key: &[u8], data: &str) -> Result<Vec<u8>, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(data.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

/// A request to sign: lowercase header names in sorted order, including `host`,
/// `x-amz-content-sha256` and `x-amz-date`.
struct Signing<'a> {
    method: &'a str,
    canonical_uri: &'a str,
    headers: &'a [(&'a str, &'a str)],
    payload_sha256: &'a str,
    amz_date: &'a str,
    region: &'a str,
    access_key_id: &'a str,
    secret: &'a str,
}

/// The SigV4 `Authorization` header value.
fn authorization(request: &Signing<'_>) -> Result<String, String> {
    let day = request.amz_date.get(..8).ok_or("x-amz-date too short")?;
    let mut canonical = format!("{}\n{}\n\n", request.method, request.canonical_uri);
    for (name, value) in request.headers {
        let _ = writeln!(canonical, "{name}:{}", value.trim());
    }
    let signed: Vec<&str> = request.headers.iter().map(|(name, _)| *name).collect();
    let signed = signed.join(";");
    let _ = write!(canonical, "\n{signed}\n{}", request.payload_sha256);
    let scope = format!("{day}/{}/s3/aws4_request", request.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        request.amz_date,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", request.secret).as_bytes(), day)?;
    for part in [request.region, "s3", "aws4_request"] {
        key = hmac(&key, part)?;
    }
    let signature = hex::encode(hmac(&key, &to_sign)?);
    Ok(format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        request.access_key_id
    ))
}

/// `20261122T120000Z` for now.
fn amz_date() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

/// `YYYY/MM/DD/HH` of an RFC 3339 event time.
fn hour_of(time: &str) -> String {
    match (
        time.get(..4),
        time.get(5..7),
        time.get(8..10),
        time.get(11..13),
    ) {
        (Some(y), Some(m), Some(d), Some(h)) => format!("{y}/{m}/{d}/{h}"),
        _ => "unknown-hour".into(),
    }
}

impl S3 {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), String> {
        let uri = format!(
            "/{}/{}",
            uri_encode(&self.config.bucket, false),
            uri_encode(key, true)
        );
        let payload_sha256 = hex::encode(Sha256::digest(&body));
        let date = amz_date();
        let headers = [
            ("host", self.host.as_str()),
            ("x-amz-content-sha256", payload_sha256.as_str()),
            ("x-amz-date", date.as_str()),
        ];
        let authorization = authorization(&Signing {
            method: "PUT",
            canonical_uri: &uri,
            headers: &headers,
            payload_sha256: &payload_sha256,
            amz_date: &date,
            region: &self.config.region,
            access_key_id: &self.config.access_key_id,
            secret: self.config.secret_access_key.expose_secret(),
        })?;
        let request = self
            .client
            .put(format!(
                "{}{uri}",
                self.config.endpoint.trim_end_matches('/')
            ))
            .header("x-amz-content-sha256", &payload_sha256)
            .header("x-amz-date", &date)
            .header("authorization", authorization)
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", "gzip")
            .body(body);
        send(request).await
    }
}

impl Sink for S3 {
    async fn deliver(&self, tenant_id: &str, records: &[ChainedRecord]) -> Result<(), String> {
        let mut hours: BTreeMap<String, Vec<&ChainedRecord>> = BTreeMap::new();
        for record in records {
            hours
                .entry(hour_of(&record.event.time))
                .or_default()
                .push(record);
        }
        for (hour, records) in hours {
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                continue;
            };
            let key = format!(
                "{}{tenant_id}/{hour}/{:020}-{:020}.ndjson.gz",
                self.config.prefix, first.seq, last.seq
            );
            let mut gzip =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            for record in &records {
                serde_json::to_writer(&mut gzip, &ExportLine::Record(Box::new((*record).clone())))
                    .map_err(|e| e.to_string())?;
                gzip.write_all(b"\n").map_err(|e| e.to_string())?;
            }
            self.put(&key, gzip.finish().map_err(|e| e.to_string())?)
                .await?;
        }
        Ok(())
    }
}

/// Runs the S3 sink until `shutdown` completes.
pub async fn run_s3(
    store: AuditStore,
    config: S3Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AuditError> {
    let url =
        reqwest::Url::parse(&config.endpoint).map_err(|_| AuditError::Malformed("s3 endpoint"))?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(AuditError::Malformed("s3 endpoint host")),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| AuditError::Malformed("s3 client"))?;
    let delivery = config.delivery.clone();
    let sink = S3 {
        config,
        client,
        host,
    };
    run_sink(store, sink, delivery, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GET Object example of AWS's Signature Version 4 documentation for S3.
    #[test]
    fn signs_like_the_aws_documentation_example() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", empty),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let header = authorization(&Signing {
            method: "GET",
            canonical_uri: "/test.txt",
            headers: &headers,
            payload_sha256: empty,
            amz_date: "20130524T000000Z",
            region: "us-east-1",
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        });
        assert_eq!(
            header.as_deref(),
            Ok(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            )
        );
    }

    #[test]
    fn object_names_are_encoded_and_hours_come_from_event_time() {
        assert_eq!(uri_encode("a b/c+d", true), "a%20b/c%2Bd");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(hour_of("2026-11-22T13:04:05.123Z"), "2026/11/22/13");
        assert_eq!(hour_of("garbage"), "unknown-hour");
    }
}
