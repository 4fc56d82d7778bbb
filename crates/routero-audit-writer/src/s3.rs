//! The S3 sink: every interval (hourly by default), each tenant's new chained records as
//! gzipped NDJSON objects (the export's record lines), one per hour of event time, under
//! `<prefix><tenant>/<YYYY>/<MM>/<DD>/<HH>/<first seq>-<last seq>.ndjson.gz`, and each signed
//! checkpoint under `<prefix>checkpoints/<tenant>/<seq>.ndjson.gz`, where
//! [`read_witness_objects`] finds them again for `routero audit verify --witness`. Names carry
//! sequence numbers, so a re-sent batch overwrites its own objects. Requests are signed with
//! AWS Signature Version 4 (path-style URLs), which S3 and S3-compatible stores accept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use routero_audit::{AuditError, AuditStore, ExportLine};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

use crate::sink::{Batch, Sink, SinkConfig, run_sink};

/// Where checkpoints go under the prefix.
const CHECKPOINTS: &str = "checkpoints/";
/// SHA-256 of an empty payload.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
    /// Query parameters, sorted by name, encoded.
    canonical_query: &'a str,
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
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        request.method, request.canonical_uri, request.canonical_query
    );
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

/// Gzipped NDJSON of export lines.
fn gzip_lines<'a>(lines: impl IntoIterator<Item = &'a ExportLine>) -> Result<Vec<u8>, String> {
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for line in lines {
        serde_json::to_writer(&mut gzip, line).map_err(|e| e.to_string())?;
        gzip.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    gzip.finish().map_err(|e| e.to_string())
}

/// The text of every `<tag>…</tag>` in an S3 XML answer, entities decoded.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once(close.as_str()).map(|(value, _)| value))
        .map(|value| {
            value
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        })
        .collect()
}

impl S3 {
    /// Sends a signed request for `key` (empty: the bucket) with `query` (name-sorted pairs).
    async fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<reqwest::Response, String> {
        let uri = if key.is_empty() {
            format!("/{}", uri_encode(&self.config.bucket, false))
        } else {
            format!(
                "/{}/{}",
                uri_encode(&self.config.bucket, false),
                uri_encode(key, true)
            )
        };
        let query: Vec<String> = query
            .iter()
            .map(|(name, value)| {
                format!("{}={}", uri_encode(name, false), uri_encode(value, false))
            })
            .collect();
        let query = query.join("&");
        let payload_sha256 = if body.is_empty() {
            EMPTY_SHA256.to_owned()
        } else {
            hex::encode(Sha256::digest(&body))
        };
        let date = amz_date();
        let headers = [
            ("host", self.host.as_str()),
            ("x-amz-content-sha256", payload_sha256.as_str()),
            ("x-amz-date", date.as_str()),
        ];
        let authorization = authorization(&Signing {
            method: method.as_str(),
            canonical_uri: &uri,
            canonical_query: &query,
            headers: &headers,
            payload_sha256: &payload_sha256,
            amz_date: &date,
            region: &self.config.region,
            access_key_id: &self.config.access_key_id,
            secret: self.config.secret_access_key.expose_secret(),
        })?;
        let separator = if query.is_empty() { "" } else { "?" };
        let url = format!(
            "{}{uri}{separator}{query}",
            self.config.endpoint.trim_end_matches('/')
        );
        let response = self
            .client
            .request(method, url)
            .header("x-amz-content-sha256", &payload_sha256)
            .header("x-amz-date", &date)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(format!("status {}", response.status()))
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), String> {
        self.request(reqwest::Method::PUT, key, &[], body)
            .await
            .map(drop)
    }

    /// The names of every object under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(token) = &token {
                query.insert(0, ("continuation-token", token.as_str()));
            }
            let answer = self
                .request(reqwest::Method::GET, "", &query, Vec::new())
                .await?
                .text()
                .await
                .map_err(|e| format!("list: {e}"))?;
            keys.extend(xml_values(&answer, "Key"));
            token = xml_values(&answer, "NextContinuationToken").pop();
            if token.is_none() || !answer.contains("<IsTruncated>true</IsTruncated>") {
                return Ok(keys);
            }
        }
    }

    /// An object's bytes, gunzipped.
    async fn get_gunzipped(&self, key: &str) -> Result<Vec<u8>, String> {
        let bytes = self
            .request(reqwest::Method::GET, key, &[], Vec::new())
            .await?
            .bytes()
            .await
            .map_err(|e| format!("get {key}: {e}"))?;
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_ref())
            .read_to_end(&mut text)
            .map_err(|e| format!("{key}: not gzip: {e}"))?;
        Ok(text)
    }
}

impl Sink for S3 {
    async fn deliver(&self, batch: Batch<'_>) -> Result<(), String> {
        let tenant_id = batch.tenant_id;
        let mut hours: BTreeMap<String, Vec<ExportLine>> = BTreeMap::new();
        for record in batch.records {
            hours
                .entry(hour_of(&record.event.time))
                .or_default()
                .push(ExportLine::Record(Box::new(record.clone())));
        }
        for (hour, lines) in hours {
            let seq = |line: Option<&ExportLine>| match line {
                Some(ExportLine::Record(record)) => record.seq,
                _ => 0,
            };
            let key = format!(
                "{}{tenant_id}/{hour}/{:020}-{:020}.ndjson.gz",
                self.config.prefix,
                seq(lines.first()),
                seq(lines.last())
            );
            self.put(&key, gzip_lines(&lines)?).await?;
        }
        for checkpoint in batch.checkpoints {
            let key = format!(
                "{}{CHECKPOINTS}{tenant_id}/{:020}.ndjson.gz",
                self.config.prefix, checkpoint.seq
            );
            let line = ExportLine::Checkpoint(checkpoint.clone());
            self.put(&key, gzip_lines([&line])?).await?;
        }
        Ok(())
    }
}

fn s3(config: S3Config) -> Result<S3, AuditError> {
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
    Ok(S3 {
        config,
        client,
        host,
    })
}

/// The checkpoint lines the S3 export holds under `config.prefix` (NDJSON), for
/// `routero audit verify --witness`.
pub async fn read_witness_objects(config: S3Config) -> Result<Vec<u8>, String> {
    let store = s3(config).map_err(|e| e.to_string())?;
    let prefix = format!("{}{CHECKPOINTS}", store.config.prefix);
    let mut lines = Vec::new();
    for key in store.list(&prefix).await? {
        lines.extend(store.get_gunzipped(&key).await?);
    }
    Ok(lines)
}

/// Runs the S3 sink until `shutdown` completes.
pub async fn run_s3(
    store: AuditStore,
    config: S3Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AuditError> {
    let delivery = config.delivery.clone();
    run_sink(store, s3(config)?, delivery, shutdown).await
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
            canonical_query: "",
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
    fn list_answers_are_read_with_their_entities() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a/b&amp;c</Key></Contents>\
                   <Contents><Key>d</Key></Contents><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        assert_eq!(xml_values(xml, "Key"), ["a/b&c", "d"]);
        assert_eq!(xml_values(xml, "NextContinuationToken"), ["t1"]);
        assert!(xml_values("<Key>unclosed", "Key").is_empty());
    }

    #[test]
    fn object_names_are_encoded_and_hours_come_from_event_time() {
        assert_eq!(uri_encode("a b/c+d", true), "a%20b/c%2Bd");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(hour_of("2026-11-22T13:04:05.123Z"), "2026/11/22/13");
        assert_eq!(hour_of("garbage"), "unknown-hour");
    }
}
