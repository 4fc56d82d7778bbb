//! A SAML 2.0 service provider for the control plane's sign-in: the SP's metadata, an
//! AuthnRequest for the HTTP-Redirect binding, and a response from the HTTP-POST binding
//! checked in full. Only a signed Response or Assertion is read (the signature verified with
//! the identity provider's certificate, RSA-SHA256 or stronger, and only the signed content
//! kept), and a response is refused unless it holds exactly one assertion, whose `Audience`,
//! `Recipient`, `Destination`, `InResponseTo` and validity window are this login's. Nothing here
//! stores anything: the caller keeps the request id, binds it to the browser, and remembers
//! assertion ids against replays.

mod shape;

use std::str::FromStr;

use samael::crypto::AllowedSignatureAlgorithm;
use samael::metadata::EntityDescriptor;
use samael::schema::Assertion;
use samael::service_provider::{Error as SpError, ServiceProvider};
use samael::traits::ToXml;
use x509_cert::der::Decode;

/// How far the identity provider's clock may be from ours.
const SKEW_SECONDS: i64 = 60;
/// How old a response may be when it arrives.
const MAX_ISSUE_DELAY_SECONDS: i64 = 300;
/// The largest response read (base64 as posted).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// The most groups read from an assertion, and the longest group name.
const MAX_GROUPS: usize = 1000;
const MAX_GROUP_CHARS: usize = 256;
const HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const TRANSIENT_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// Why a SAML sign-in did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    /// The response is refused; `reason` is stable (`bad_signature`, `wrong_audience`,
    /// `wrong_recipient`, `expired`, `unsolicited_response`, `wrapped_assertion`, …).
    #[error("{reason}: {detail}")]
    Refused {
        /// A stable code for the refusal.
        reason: &'static str,
        /// What was wrong, for logs and the audit record.
        detail: String,
    },
    /// The identity provider settings cannot work.
    #[error("{0}")]
    Settings(String),
}

pub(crate) fn refused(reason: &'static str, detail: impl Into<String>) -> SamlError {
    SamlError::Refused {
        reason,
        detail: detail.into(),
    }
}

/// This service provider, as one tenant's identity provider knows it.
#[derive(Debug, Clone)]
pub struct Sp {
    /// The SP's entity id (its metadata URL), the `Audience` assertions must name.
    pub entity_id: String,
    /// The assertion consumer service URL, the `Recipient` and `Destination` they must name.
    pub acs_url: String,
}

/// A tenant's identity provider: its metadata (with at least one signing certificate).
#[derive(Debug, Clone)]
pub struct Idp {
    metadata: EntityDescriptor,
    sso_url: String,
}

/// The person an identity provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity provider's entity id.
    pub issuer: String,
    /// The assertion's NameID.
    pub name_id: String,
    /// The assertion's id (for the replay cache).
    pub assertion_id: String,
    /// Until when the assertion could be presented (Unix seconds), for the replay cache.
    pub valid_until: i64,
    /// The request it answers, if any (none: IdP-initiated).
    pub in_response_to: Option<String>,
    /// An email attribute, or the NameID when its format is `emailAddress`.
    pub email: Option<String>,
    /// A display name attribute.
    pub name: Option<String>,
    /// Values of the groups attribute.
    pub groups: Vec<String>,
}

/// Escapes text for an XML attribute or element.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

impl Idp {
    /// Reads an identity provider from its metadata XML. Refused without an entity id, an
    /// HTTP-Redirect single sign-on service, or a signing certificate that parses: a provider
    /// whose responses could not be verified is never configured.
    pub fn from_metadata(xml: &str) -> Result<Self, SamlError> {
        let metadata = EntityDescriptor::from_str(xml)
            .map_err(|error| SamlError::Settings(format!("metadata: {error}")))?;
        if metadata.entity_id.as_deref().is_none_or(str::is_empty) {
            return Err(SamlError::Settings("metadata: no entityID".into()));
        }
        let provider = ServiceProvider {
            idp_metadata: metadata.clone(),
            ..ServiceProvider::default()
        };
        let sso_url = provider
            .sso_binding_location(HTTP_REDIRECT)
            .ok_or_else(|| {
                SamlError::Settings(
                    "metadata: no SingleSignOnService with the HTTP-Redirect binding".into(),
                )
            })?;
        match provider.idp_signing_certs() {
            Ok(Some(certs)) if !certs.is_empty() => {
                for cert in &certs {
                    x509_cert::Certificate::from_der(cert.der_data()).map_err(|error| {
                        SamlError::Settings(format!(
                            "metadata: a signing certificate is not X.509: {error}"
                        ))
                    })?;
                }
            }
            Ok(_) => {
                return Err(SamlError::Settings(
                    "metadata: no signing certificate; responses could not be verified".into(),
                ));
            }
            Err(error) => return Err(SamlError::Settings(format!("metadata: {error}"))),
        }
        Ok(Self { metadata, sso_url })
    }

    /// An identity provider from its entity id, SSO URL and signing certificate (PEM or
    /// base64 DER), as metadata.
    pub fn from_parts(
        entity_id: &str,
        sso_url: &str,
        certificate: &str,
    ) -> Result<Self, SamlError> {
        let der: String = certificate
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .flat_map(|line| line.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let xml = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{der}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="{HTTP_REDIRECT}" Location="{sso}"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
            entity = escape(entity_id),
            der = escape(&der),
            sso = escape(sso_url),
        );
        Self::from_metadata(&xml)
    }

    /// The metadata as XML, to store.
    pub fn to_xml(&self) -> Result<String, SamlError> {
        self.metadata
            .to_string()
            .map_err(|error| SamlError::Settings(format!("metadata: {error}")))
    }

    /// The identity provider's entity id.
    pub fn entity_id(&self) -> &str {
        self.metadata.entity_id.as_deref().unwrap_or_default()
    }

    /// Where AuthnRequests go (HTTP-Redirect).
    pub fn sso_url(&self) -> &str {
        &self.sso_url
    }
}

impl Sp {
    fn provider(&self, idp: &Idp, allow_idp_initiated: bool) -> ServiceProvider {
        ServiceProvider {
            entity_id: Some(self.entity_id.clone()),
            metadata_url: Some(self.entity_id.clone()),
            acs_url: Some(self.acs_url.clone()),
            slo_url: None,
            idp_metadata: idp.metadata.clone(),
            allow_idp_initiated,
            max_issue_delay: chrono::Duration::seconds(MAX_ISSUE_DELAY_SECONDS),
            max_clock_skew: chrono::Duration::seconds(SKEW_SECONDS),
            allowed_signature_algorithms: Some(vec![
                AllowedSignatureAlgorithm::RsaSha256,
                AllowedSignatureAlgorithm::RsaSha384,
                AllowedSignatureAlgorithm::RsaSha512,
                AllowedSignatureAlgorithm::EcdsaSha256,
                AllowedSignatureAlgorithm::EcdsaSha384,
                AllowedSignatureAlgorithm::EcdsaSha512,
            ]),
            ..ServiceProvider::default()
        }
    }

    /// This SP's metadata, for the identity provider's administrator: its entity id, that it
    /// wants assertions signed, and its assertion consumer service (HTTP-POST).
    pub fn metadata(&self) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}"><md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0" isDefault="true"/></md:SPSSODescriptor></md:EntityDescriptor>"#,
            entity = escape(&self.entity_id),
            acs = escape(&self.acs_url),
        )
    }

    /// An AuthnRequest for the HTTP-Redirect binding: the URL to send the browser to (with
    /// `relay_state`) and the request's id, which the response must answer.
    pub fn authn_request(
        &self,
        idp: &Idp,
        relay_state: &str,
    ) -> Result<(String, String), SamlError> {
        let request = self
            .provider(idp, false)
            .make_authentication_request(idp.sso_url())
            .map_err(|error| SamlError::Settings(format!("AuthnRequest: {error}")))?;
        let url = request
            .redirect(relay_state)
            .map_err(|error| SamlError::Settings(format!("AuthnRequest: {error}")))?
            .ok_or_else(|| SamlError::Settings("AuthnRequest: no destination".into()))?;
        Ok((url.into(), request.id))
    }

    /// Checks a posted `SAMLResponse` (base64) answering `request_id` (none: unsolicited,
    /// refused unless `allow_idp_initiated`), and reads who it vouches for, with groups from
    /// `groups_attribute`. Blocking: verifies XML signatures.
    pub fn verify(
        &self,
        idp: &Idp,
        response: &str,
        request_id: Option<&str>,
        (allow_idp_initiated, groups_attribute): (bool, Option<&str>),
    ) -> Result<Identity, SamlError> {
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(refused("malformed_response", "the response is too large"));
        }
        let compact: String = response.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64_decode(&compact)
            .ok_or_else(|| refused("malformed_response", "the response is not base64"))?;
        let xml = String::from_utf8(bytes)
            .map_err(|_| refused("malformed_response", "the response is not UTF-8"))?;
        if request_id.is_none() && !allow_idp_initiated {
            return Err(refused(
                "unsolicited_response",
                "IdP-initiated sign-in is off for this tenant",
            ));
        }
        shape::check(&xml, request_id.is_some())?;
        let ids: Vec<&str> = request_id.into_iter().collect();
        let assertion = self
            .provider(idp, allow_idp_initiated && request_id.is_none())
            .parse_xml_response(&xml, request_id.map(|_| ids.as_slice()))
            .map_err(explain)?;
        self.identity(idp, &assertion, groups_attribute)
    }

    fn identity(
        &self,
        idp: &Idp,
        assertion: &Assertion,
        groups_attribute: Option<&str>,
    ) -> Result<Identity, SamlError> {
        // samael checks the audience only when the assertion restricts it: require it.
        let audiences = assertion
            .conditions
            .as_ref()
            .and_then(|c| c.audience_restrictions.as_ref())
            .ok_or_else(|| refused("wrong_audience", "the assertion names no audience"))?;
        if !audiences
            .iter()
            .all(|restriction| restriction.audience.contains(&self.entity_id))
        {
            return Err(refused(
                "wrong_audience",
                "the assertion is for another service provider",
            ));
        }
        let subject = assertion.subject.as_ref();
        let name_id_element = subject.and_then(|s| s.name_id.as_ref());
        let name_id = name_id_element
            .map(|n| n.value.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| refused("invalid_assertion", "the assertion has no NameID"))?;
        let format = name_id_element.and_then(|n| n.format.as_deref());
        if format == Some(TRANSIENT_FORMAT) {
            return Err(refused(
                "transient_name_id",
                "a transient NameID names nobody twice; configure a persistent or email NameID",
            ));
        }
        let name_id_is_email = format == Some(EMAIL_FORMAT);
        let confirmation = subject
            .and_then(|s| s.subject_confirmations.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.subject_confirmation_data.as_ref());
        let valid_until = confirmation
            .clone()
            .filter_map(|data| data.not_on_or_after)
            .chain(
                assertion
                    .conditions
                    .as_ref()
                    .and_then(|c| c.not_on_or_after),
            )
            .map(|t| t.timestamp())
            .max()
            .unwrap_or_else(|| assertion.issue_instant.timestamp() + MAX_ISSUE_DELAY_SECONDS)
            + SKEW_SECONDS;
        let in_response_to = confirmation
            .filter_map(|data| data.in_response_to.clone())
            .next();
        let attribute = |names: &[&str]| -> Vec<String> {
            assertion
                .attribute_statements
                .iter()
                .flatten()
                .flat_map(|statement| statement.attributes.iter())
                .filter(|a| {
                    names.iter().any(|n| {
                        a.name.as_deref() == Some(*n) || a.friendly_name.as_deref() == Some(*n)
                    })
                })
                .flat_map(|a| a.values.iter().filter_map(|v| v.value.clone()))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let groups = match groups_attribute {
            Some(name) => attribute(&[name]),
            None => Vec::new(),
        };
        if groups.len() > MAX_GROUPS || groups.iter().any(|g| g.chars().count() > MAX_GROUP_CHARS) {
            return Err(refused(
                "invalid_groups",
                format!("at most {MAX_GROUPS} groups of at most {MAX_GROUP_CHARS} characters"),
            ));
        }
        let email = attribute(&[
            "email",
            "mail",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            "urn:oid:0.9.2342.19200300.100.1.3",
        ])
        .into_iter()
        .next()
        .or_else(|| name_id_is_email.then(|| name_id.clone()));
        let name = attribute(&[
            "displayName",
            "name",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "urn:oid:2.16.840.1.113730.3.1.241",
        ])
        .into_iter()
        .next();
        Ok(Identity {
            issuer: idp.entity_id().to_owned(),
            name_id,
            assertion_id: assertion.id.clone(),
            valid_until,
            in_response_to,
            email,
            name,
            groups,
        })
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// The stable reason for samael's refusal.
fn explain(error: SpError) -> SamlError {
    let reason = match &error {
        SpError::FailedToValidateSignature => "bad_signature",
        SpError::DestinationValidationError { .. } => "wrong_destination",
        SpError::AssertionRecipientMismatch { .. } => "wrong_recipient",
        SpError::AssertionConditionAudienceRestrictionFailed { .. } => "wrong_audience",
        SpError::AssertionInResponseToInvalid { .. }
        | SpError::ResponseInResponseToInvalid { .. } => "wrong_in_response_to",
        SpError::AssertionExpired { .. }
        | SpError::ResponseExpired { .. }
        | SpError::AssertionConditionExpired { .. }
        | SpError::AssertionSubjectConfirmationExpired { .. } => "expired",
        SpError::AssertionConditionExpiredBefore { .. }
        | SpError::AssertionSubjectConfirmationExpiredBefore { .. } => "not_yet_valid",
        SpError::AssertionIssuerMismatch { .. } | SpError::ResponseIssuerMismatch { .. } => {
            "wrong_issuer"
        }
        SpError::ResponseBadStatusCode { .. } => "idp_error",
        SpError::AssertionBearerSubjectConfirmationMissing
        | SpError::AssertionSubjectConfirmationMissing => "invalid_assertion",
        SpError::EncryptedAssertionsNotYetSupported => "wrapped_assertion",
        _ => "malformed_response",
    };
    refused(reason, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (its key was thrown away).
    const CERTIFICATE: &str = include_str!("test_certificate.pem");

    #[test]
    fn settings_round_trip_and_make_sp_metadata_and_requests() {
        let idp = Idp::from_parts(
            "https://idp.example.com/m",
            "https://idp.example.com/sso",
            CERTIFICATE,
        )
        .unwrap();
        let again = Idp::from_metadata(&idp.to_xml().unwrap()).unwrap();
        assert_eq!(again.entity_id(), "https://idp.example.com/m");
        assert_eq!(again.sso_url(), "https://idp.example.com/sso");
        let sp = Sp {
            entity_id: "https://gw.example.com/sso/saml/metadata?tenant=t1".into(),
            acs_url: "https://gw.example.com/sso/saml/acs?tenant=t1".into(),
        };
        let metadata = sp.metadata();
        assert!(
            metadata.contains(r#"Location="https://gw.example.com/sso/saml/acs?tenant=t1""#),
            "{metadata}"
        );
        let (url, id) = sp.authn_request(&again, "relay").unwrap();
        assert!(
            url.starts_with("https://idp.example.com/sso?SAMLRequest="),
            "{url}"
        );
        assert!(url.contains("RelayState=relay") && !id.is_empty());
    }

    #[test]
    fn metadata_without_a_signing_certificate_is_refused() {
        let unsigned = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example.com"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#;
        assert!(matches!(
            Idp::from_metadata(unsigned),
            Err(SamlError::Settings(_))
        ));
        assert!(
            Idp::from_parts(
                "https://idp.example.com",
                "https://idp.example.com/sso",
                "not a cert"
            )
            .is_err()
        );
        assert!(Idp::from_metadata("<not-metadata/>").is_err());
    }
}
