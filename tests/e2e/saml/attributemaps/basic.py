# Attribute names as Okta sends them: plain Names, NameFormat basic.
MAP = {
    "identifier": "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
    "fro": {"email": "email", "displayName": "displayName", "groups": "groups"},
    "to": {"email": "email", "displayName": "displayName", "groups": "groups"},
}
