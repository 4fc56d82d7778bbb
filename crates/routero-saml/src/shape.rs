//! What a SAML response must look like before any signature is checked.
//!
//! xmlsec computes every `Reference`'s digest, running its transforms and dereferencing its URI,
//! before it checks the `SignatureValue`: an unsigned response naming `http://…` or
//! `file:///dev/zero` would make the gateway fetch a URL or spin. And signature wrapping hides a
//! second assertion beside the signed one. So a response is read (with a parser that refuses
//! DTDs) and refused unless it is a `Response` holding exactly one `Assertion`, each signature a
//! child of one of the two, with one same-document reference to its parent, canonicalisation
//! and enveloped-signature transforms only, and nothing that points elsewhere.

use roxmltree::{Document, Node};

use crate::{SamlError, refused};

const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Canonicalisation and transform algorithms a signature may use.
const TRANSFORMS: [&str; 5] = [
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
];
/// Elements of XML-DSig that point outside the signed element or carry arbitrary content.
const FORBIDDEN_DSIG: [&str; 4] = ["Object", "Manifest", "RetrievalMethod", "XPath"];

fn local<'a>(node: Node<'a, '_>) -> &'a str {
    node.tag_name().name()
}

fn is(node: Node<'_, '_>, namespace: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(namespace) && local(node) == name
}

fn wrapped(detail: &str) -> SamlError {
    refused("wrapped_assertion", detail)
}

/// Checks the response's shape; `solicited` says whether it answers a request of ours (an
/// unsolicited one may not claim to answer anything).
pub(crate) fn check(xml: &str, solicited: bool) -> Result<(), SamlError> {
    // libxml honours a declared encoding (UTF-7 hides markup from any text check): UTF-8 only.
    if let Some((declaration, _)) = xml
        .trim_start()
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>"))
    {
        let declared = declaration.to_ascii_lowercase();
        if declared.contains("encoding")
            && !(declared.contains("\"utf-8\"") || declared.contains("'utf-8'"))
        {
            return Err(refused("malformed_response", "a response is UTF-8"));
        }
    }
    if xml.contains('\u{0}') || xml.starts_with('\u{feff}') {
        return Err(refused(
            "malformed_response",
            "a response is plain UTF-8 text",
        ));
    }
    // roxmltree refuses DTDs (and so entity declarations) by default.
    let document = Document::parse(xml).map_err(|error| {
        refused(
            "malformed_response",
            format!("the response is not XML: {error}"),
        )
    })?;
    let response = document.root_element();
    if !is(response, PROTOCOL_NS, "Response") {
        return Err(refused(
            "malformed_response",
            "the document is not a SAML Response",
        ));
    }
    let elements: Vec<Node<'_, '_>> = document.descendants().filter(Node::is_element).collect();
    let assertions: Vec<Node<'_, '_>> = elements
        .iter()
        .copied()
        .filter(|n| matches!(local(*n), "Assertion" | "EncryptedAssertion"))
        .collect();
    let assertion = match assertions.as_slice() {
        [] => {
            return Err(refused(
                "malformed_response",
                "the response holds no assertion",
            ));
        }
        [one] if is(*one, ASSERTION_NS, "Assertion") && one.parent() == Some(response) => *one,
        _ => {
            return Err(wrapped(
                "the response must hold exactly one assertion, unencrypted, as its child",
            ));
        }
    };
    if !solicited {
        let answers = response.has_attribute("InResponseTo")
            || elements
                .iter()
                .any(|n| local(*n) == "SubjectConfirmationData" && n.has_attribute("InResponseTo"));
        if answers {
            return Err(refused(
                "wrong_in_response_to",
                "an unsolicited response answers a request this browser did not make",
            ));
        }
    }
    if elements
        .iter()
        .any(|n| n.tag_name().namespace() == Some(DSIG_NS) && FORBIDDEN_DSIG.contains(&local(*n)))
    {
        return Err(wrapped(
            "a signature may not carry objects, manifests or retrievals",
        ));
    }
    let signatures: Vec<Node<'_, '_>> = elements
        .iter()
        .copied()
        .filter(|n| local(*n) == "Signature")
        .collect();
    if signatures.len() > 2 {
        return Err(wrapped(
            "at most two signatures: the response's and the assertion's",
        ));
    }
    for signature in signatures {
        signature_shape(signature, response, assertion)?;
    }
    Ok(())
}

/// One signature: a child of the response or the assertion, one reference to that parent.
fn signature_shape(
    signature: Node<'_, '_>,
    response: Node<'_, '_>,
    assertion: Node<'_, '_>,
) -> Result<(), SamlError> {
    let parent = signature
        .parent()
        .filter(|p| *p == response || *p == assertion)
        .filter(|_| is(signature, DSIG_NS, "Signature"))
        .ok_or_else(|| wrapped("a signature belongs to the response or the assertion"))?;
    let id = parent
        .attribute("ID")
        .ok_or_else(|| wrapped("a signed element has an ID"))?;
    let signed_info = signature
        .children()
        .find(|n| is(*n, DSIG_NS, "SignedInfo"))
        .ok_or_else(|| wrapped("a signature has SignedInfo"))?;
    let references: Vec<Node<'_, '_>> = signed_info
        .children()
        .filter(|n| n.is_element() && local(*n) == "Reference")
        .collect();
    let [reference] = references.as_slice() else {
        return Err(wrapped("a signature has one reference"));
    };
    // SAML core 5.4.2: one same-document reference to the signed element's ID.
    if reference.attribute("URI") != Some(format!("#{id}").as_str()) {
        return Err(wrapped("a signature refers to the element it is in"));
    }
    let algorithms = signed_info
        .descendants()
        .filter(|n| n.is_element() && matches!(local(*n), "Transform" | "CanonicalizationMethod"))
        .map(|n| n.attribute("Algorithm").unwrap_or_default());
    for algorithm in algorithms {
        if !TRANSFORMS.contains(&algorithm) {
            return Err(wrapped(
                "a signature uses canonicalisation and enveloped-signature only",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNATURE: &str = r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="REF"><ds:Transforms><ds:Transform Algorithm="TRANSFORM"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>x</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>x</ds:SignatureValue></ds:Signature>"##;

    fn response(reference: &str, transform: &str, extra: &str) -> String {
        let signature = SIGNATURE
            .replace("REF", reference)
            .replace("TRANSFORM", transform);
        format!(
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="r1"><saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="a1">{signature}<saml:Subject/></saml:Assertion>{extra}</samlp:Response>"#
        )
    }

    const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

    fn reason(result: Result<(), SamlError>) -> &'static str {
        match result {
            Err(SamlError::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_signed_response_passes() {
        assert!(check(&response("#a1", ENVELOPED, ""), true).is_ok());
    }

    #[test]
    fn references_outside_the_signed_element_are_refused() {
        for uri in [
            "http://127.0.0.1:8765/ssrf",
            "file:///dev/zero",
            "#r1",
            "#other",
            "",
        ] {
            assert_eq!(
                reason(check(&response(uri, ENVELOPED, ""), true)),
                "wrapped_assertion",
                "{uri}"
            );
        }
        let xslt = "http://www.w3.org/TR/1999/REC-xslt-19991116";
        assert_eq!(
            reason(check(&response("#a1", xslt, ""), true)),
            "wrapped_assertion"
        );
    }

    #[test]
    fn second_assertions_dtds_and_other_encodings_are_refused() {
        let second =
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="evil"/>"#;
        assert_eq!(
            reason(check(&response("#a1", ENVELOPED, second), true)),
            "wrapped_assertion"
        );
        let dtd = format!(
            "<!DOCTYPE r [<!ENTITY x \"y\">]>{}",
            response("#a1", ENVELOPED, "")
        );
        assert_eq!(reason(check(&dtd, true)), "malformed_response");
        let utf7 = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-7\"?>{}",
            response("#a1", ENVELOPED, "")
        );
        assert_eq!(reason(check(&utf7, true)), "malformed_response");
        let object = r#"<ds:Object xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>"#;
        assert_eq!(
            reason(check(&response("#a1", ENVELOPED, object), true)),
            "wrapped_assertion"
        );
    }

    #[test]
    fn unsolicited_responses_may_not_answer_a_request() {
        let answering =
            response("#a1", ENVELOPED, "").replace(r#"ID="r1""#, r#"ID="r1" InResponseTo="req""#);
        assert!(check(&answering, true).is_ok());
        assert_eq!(reason(check(&answering, false)), "wrong_in_response_to");
    }
}
