//! The schemas Routero serves (RFC 7643 §4 and §8.7): the core User with the enterprise
//! extension, and the core Group. Each attribute carries what the rest of the crate needs to
//! validate, compare (case rules), index and describe it.

use crate::filter::AttrPath;

/// The core User schema.
pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The enterprise User extension.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The core Group schema.
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// A SCIM data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A string.
    String,
    /// `true` or `false` (Entra's `"True"`/`"False"` strings are read as booleans).
    Boolean,
    /// An RFC 3339 instant.
    DateTime,
    /// A URI.
    Reference,
    /// Base64 bytes.
    Binary,
    /// Sub-attributes.
    Complex,
}

impl Type {
    /// The name schemas use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::DateTime => "dateTime",
            Self::Reference => "reference",
            Self::Binary => "binary",
            Self::Complex => "complex",
        }
    }
}

/// Whether and how a client may write an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the server only.
    ReadOnly,
    /// Read and written.
    ReadWrite,
    /// Written once, then read only.
    Immutable,
    /// Written, never returned.
    WriteOnly,
}

impl Mutability {
    /// The name schemas use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "readOnly",
            Self::ReadWrite => "readWrite",
            Self::Immutable => "immutable",
            Self::WriteOnly => "writeOnly",
        }
    }
}

/// One attribute of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Attribute {
    /// Its name, as the schema spells it.
    pub name: &'static str,
    /// Its type.
    pub ty: Type,
    /// Whether it holds a list.
    pub multi: bool,
    /// Whether string comparisons are case-sensitive.
    pub case_exact: bool,
    /// Whether a resource must have it.
    pub required: bool,
    /// Who may write it.
    pub mutability: Mutability,
    /// Whether its value is unique in the tenant.
    pub unique: bool,
    /// Its sub-attributes, for complex attributes.
    pub sub: &'static [Attribute],
    /// What it means.
    pub description: &'static str,
}

impl Attribute {
    const fn new(name: &'static str, ty: Type, description: &'static str) -> Self {
        Self {
            name,
            ty,
            multi: false,
            case_exact: false,
            required: false,
            mutability: Mutability::ReadWrite,
            unique: false,
            sub: &[],
            description,
        }
    }

    const fn multi(mut self) -> Self {
        self.multi = true;
        self
    }

    const fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }

    const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    const fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    const fn mutability(mut self, mutability: Mutability) -> Self {
        self.mutability = mutability;
        self
    }

    const fn with(mut self, sub: &'static [Attribute]) -> Self {
        self.ty = Type::Complex;
        self.sub = sub;
        self
    }

    /// The sub-attribute named `name`, case-insensitively.
    pub fn sub_attribute(&self, name: &str) -> Option<&'static Attribute> {
        self.sub.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Whether a client may write it.
    pub fn writable(&self) -> bool {
        self.mutability != Mutability::ReadOnly
    }

    /// Whether it is returned to clients.
    pub fn returned(&self) -> bool {
        self.mutability != Mutability::WriteOnly
    }
}

const fn string(name: &'static str, description: &'static str) -> Attribute {
    Attribute::new(name, Type::String, description)
}

const fn boolean(name: &'static str, description: &'static str) -> Attribute {
    Attribute::new(name, Type::Boolean, description)
}

const fn reference(name: &'static str, description: &'static str) -> Attribute {
    Attribute::new(name, Type::Reference, description)
}

const fn complex(name: &'static str, description: &'static str) -> Attribute {
    Attribute::new(name, Type::Complex, description)
}

/// `value`, `display`, `type`, `primary`: the sub-attributes of most multi-valued attributes.
const fn plural(value: Attribute) -> [Attribute; 4] {
    [
        value,
        string("display", "A human-readable name."),
        string("type", "A label of the value's function."),
        boolean("primary", "Whether this is the primary value."),
    ]
}

const EMAIL: [Attribute; 4] = plural(string("value", "The email address."));
const PHONE: [Attribute; 4] = plural(string("value", "The phone number."));
const IM: [Attribute; 4] = plural(string("value", "The instant messaging address."));
const PHOTO: [Attribute; 4] = plural(reference("value", "The URL of the photo."));
const ENTITLEMENT: [Attribute; 4] = plural(string("value", "The entitlement."));
const ROLE: [Attribute; 4] = plural(string("value", "The role."));
const CERTIFICATE: [Attribute; 4] = plural(Attribute::new(
    "value",
    Type::Binary,
    "The DER certificate, base64.",
));

const NAME: &[Attribute] = &[
    string("formatted", "The full name."),
    string("familyName", "The family name."),
    string("givenName", "The given name."),
    string("middleName", "The middle name."),
    string("honorificPrefix", "The honorific prefix."),
    string("honorificSuffix", "The honorific suffix."),
];

const ADDRESS: &[Attribute] = &[
    string("formatted", "The full mailing address."),
    string("streetAddress", "The street address."),
    string("locality", "The city or locality."),
    string("region", "The state or region."),
    string("postalCode", "The postal code."),
    string("country", "The country."),
    string("type", "A label of the address's function."),
    boolean("primary", "Whether this is the primary address."),
];

const USER_GROUP: &[Attribute] = &[
    string("value", "The group's id.").mutability(Mutability::ReadOnly),
    reference("$ref", "The group's URI.").mutability(Mutability::ReadOnly),
    string("display", "The group's name.").mutability(Mutability::ReadOnly),
    string("type", "direct").mutability(Mutability::ReadOnly),
];

/// The core User schema's attributes.
pub const USER_ATTRIBUTES: &[Attribute] = &[
    string("userName", "The unique name the user signs in with.")
        .required()
        .unique(),
    complex("name", "The user's name.").with(NAME),
    string("displayName", "The name shown to others."),
    string("nickName", "The casual name."),
    reference("profileUrl", "The URL of the user's profile."),
    string("title", "The user's title."),
    string("userType", "The user's relation to the organization."),
    string("preferredLanguage", "The preferred language."),
    string("locale", "The locale."),
    string("timezone", "The time zone."),
    boolean(
        "active",
        "Whether the user may act; false revokes the user's keys.",
    ),
    string(
        "password",
        "Accepted and discarded: Routero never keeps passwords.",
    )
    .mutability(Mutability::WriteOnly),
    complex("emails", "Email addresses.").with(&EMAIL).multi(),
    complex("phoneNumbers", "Phone numbers.")
        .with(&PHONE)
        .multi(),
    complex("ims", "Instant messaging addresses.")
        .with(&IM)
        .multi(),
    complex("photos", "Photos.").with(&PHOTO).multi(),
    complex("addresses", "Postal addresses.")
        .with(ADDRESS)
        .multi(),
    complex("groups", "The groups the user is a member of.")
        .with(USER_GROUP)
        .multi()
        .mutability(Mutability::ReadOnly),
    complex("entitlements", "Entitlements.")
        .with(&ENTITLEMENT)
        .multi(),
    complex("roles", "Roles as the identity provider names them.")
        .with(&ROLE)
        .multi(),
    complex("x509Certificates", "Certificates.")
        .with(&CERTIFICATE)
        .multi(),
];

const MANAGER: &[Attribute] = &[
    string("value", "The manager's id."),
    reference("$ref", "The manager's URI."),
    string("displayName", "The manager's name.").mutability(Mutability::ReadOnly),
];

/// The enterprise extension's attributes.
pub const ENTERPRISE_ATTRIBUTES: &[Attribute] = &[
    string("employeeNumber", "The employee number."),
    string("costCenter", "The cost center."),
    string("organization", "The organization."),
    string("division", "The division."),
    string("department", "The department."),
    complex("manager", "The user's manager.").with(MANAGER),
];

const MEMBER: &[Attribute] = &[
    string("value", "The member's id.")
        .exact()
        .mutability(Mutability::Immutable),
    reference("$ref", "The member's URI.").mutability(Mutability::Immutable),
    string("display", "The member's name.").mutability(Mutability::ReadOnly),
    string("type", "User").mutability(Mutability::ReadOnly),
];

/// The core Group schema's attributes.
pub const GROUP_ATTRIBUTES: &[Attribute] = &[
    string("displayName", "The group's name; a group is a team.")
        .required()
        .unique(),
    complex("members", "The group's members (users).")
        .with(MEMBER)
        .multi(),
];

const META: &[Attribute] = &[
    string("resourceType", "User or Group.")
        .exact()
        .mutability(Mutability::ReadOnly),
    Attribute::new("created", Type::DateTime, "When it was created.")
        .mutability(Mutability::ReadOnly),
    Attribute::new("lastModified", Type::DateTime, "When it last changed.")
        .mutability(Mutability::ReadOnly),
    reference("location", "Its URI.").mutability(Mutability::ReadOnly),
    string("version", "Its version, as its ETag.")
        .exact()
        .mutability(Mutability::ReadOnly),
];

/// Attributes every resource has.
pub const COMMON_ATTRIBUTES: &[Attribute] = &[
    string("id", "The identifier Routero gave it.")
        .exact()
        .mutability(Mutability::ReadOnly),
    string(
        "externalId",
        "The identifier the provisioning client gave it.",
    )
    .exact(),
    complex("meta", "Its metadata.")
        .with(META)
        .mutability(Mutability::ReadOnly),
];

/// The kind of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user.
    User,
    /// A group (a team).
    Group,
}

impl Kind {
    /// The resource type's name (`User`).
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }

    /// Its endpoint (`Users`).
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::User => "Users",
            Self::Group => "Groups",
        }
    }

    /// Its core schema.
    pub fn schema(self) -> &'static str {
        match self {
            Self::User => USER,
            Self::Group => GROUP,
        }
    }

    /// Its core attributes.
    pub fn attributes(self) -> &'static [Attribute] {
        match self {
            Self::User => USER_ATTRIBUTES,
            Self::Group => GROUP_ATTRIBUTES,
        }
    }

    /// Its schema extensions.
    pub fn extensions(self) -> &'static [(&'static str, &'static [Attribute])] {
        match self {
            Self::User => &[(ENTERPRISE, ENTERPRISE_ATTRIBUTES)],
            Self::Group => &[],
        }
    }

    /// The extension a URN names, case-insensitively, as `(urn, attributes)`.
    pub fn extension(self, urn: &str) -> Option<(&'static str, &'static [Attribute])> {
        self.extensions()
            .iter()
            .copied()
            .find(|(u, _)| u.eq_ignore_ascii_case(urn))
    }
}

/// Where an attribute lives: in the core schema (`None`) or an extension.
pub type Home = Option<&'static str>;

/// An attribute a path names, resolved against a kind's schemas.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// The extension the attribute belongs to, if not the core schema.
    pub extension: Home,
    /// The attribute.
    pub attribute: &'static Attribute,
    /// The sub-attribute, if the path names one.
    pub sub: Option<&'static Attribute>,
}

impl Resolved {
    /// The attribute the path ends at (the sub-attribute if there is one).
    pub fn leaf(&self) -> &'static Attribute {
        self.sub.unwrap_or(self.attribute)
    }

    /// The attribute's key in the search index: its lowercase name, prefixed by its
    /// extension's lowercase URN.
    pub fn index_key(&self) -> String {
        index_key(self.extension, self.attribute)
    }

    /// The sub-attribute's key in the search index (empty without one).
    pub fn sub_key(&self) -> String {
        self.sub
            .map(|s| s.name.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// An attribute's key in the search index.
pub fn index_key(extension: Home, attribute: &Attribute) -> String {
    match extension {
        Some(urn) => format!("{}:{}", urn, attribute.name).to_ascii_lowercase(),
        None => attribute.name.to_ascii_lowercase(),
    }
}

/// Resolves `path` against `kind`'s schemas, case-insensitively; `None` if it names nothing.
pub fn resolve(kind: Kind, path: &AttrPath) -> Option<Resolved> {
    let (extension, attributes) = match &path.urn {
        None => (None, kind.attributes()),
        Some(urn) if urn.eq_ignore_ascii_case(kind.schema()) => (None, kind.attributes()),
        Some(urn) => {
            let (urn, attributes) = kind.extension(urn)?;
            (Some(urn), attributes)
        }
    };
    let attribute = attributes
        .iter()
        .chain(if extension.is_none() {
            COMMON_ATTRIBUTES
        } else {
            &[]
        })
        .find(|a| a.name.eq_ignore_ascii_case(&path.name))?;
    let sub = match &path.sub {
        None => None,
        Some(sub) => Some(attribute.sub_attribute(sub)?),
    };
    Some(Resolved {
        extension,
        attribute,
        sub,
    })
}
