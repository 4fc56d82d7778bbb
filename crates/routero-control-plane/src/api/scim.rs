//! The SCIM 2.0 service at `/scim/v2`: a tenant's identity provider creates, changes and
//! removes its users and groups here. It authenticates with the tenant's SCIM tokens (and
//! nothing else: a SCIM token opens no other route, an admin key not this one); every
//! refusal is a SCIM error body, and is recorded.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use routero_core::ErrorCode;
use routero_core::audit::{ActorKind, EventType, Outcome};
use routero_scim::schema::Kind;
use routero_scim::{
    CONTENT_TYPE, MAX_PAGE, ScimError, ScimType, discovery, filter, patch, resource, sql,
};
use serde_json::{Map, Value};

use super::{AppState, ClientInfo};
use crate::ControlPlaneError;
use crate::store::{Changer, ScimRecord};

/// The SCIM client a request was authenticated as.
#[derive(Clone)]
struct ScimCaller {
    changer: Changer,
    /// The service's base URL as the client reached it.
    base: String,
}

/// A SCIM answer: a status, a body and headers, or a [`ScimError`].
type Answer = Result<Response, Refusal>;

/// A refusal on its way out: recorded, then answered as a SCIM error.
struct Refusal(ScimError);

impl From<ScimError> for Refusal {
    fn from(error: ScimError) -> Self {
        Self(error)
    }
}

impl From<ControlPlaneError> for Refusal {
    fn from(error: ControlPlaneError) -> Self {
        Self(match error {
            ControlPlaneError::NotFound(resource) => ScimError::not_found(resource.name()),
            ControlPlaneError::Conflict(resource) => ScimError::taken(match resource {
                routero_core::Resource::User => "userName",
                _ => "displayName",
            }),
            ControlPlaneError::Rejected {
                code: ErrorCode::VersionMismatch,
                message,
            } => ScimError::status(412, message),
            ControlPlaneError::Rejected {
                code: ErrorCode::InvalidField,
                message,
            } => ScimError::bad(ScimType::InvalidValue, message),
            ControlPlaneError::Rejected { code, message } => {
                ScimError::status(code.http_status(), message)
            }
            ControlPlaneError::Database(ref e) => {
                tracing::error!(error = %e, "database error");
                ScimError::status(503, "the store is unavailable; nothing was changed")
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ScimError::status(500, "the control plane failed; nothing was changed")
            }
        })
    }
}

fn scim_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn error_response(error: &ScimError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    scim_response(status, &error.body())
}

/// The SCIM router, mounted at `/scim/v2`.
pub(super) fn router(state: AppState) -> Router<AppState> {
    let resources = |kind: Kind| {
        Router::new()
            .route("/", get(list).post(create))
            .route("/.search", post(search))
            .route("/{id}", get(read).put(replace).patch(modify).delete(remove))
            .layer(Extension(kind))
    };
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .route("/.search", post(search_all))
        .nest("/Users", resources(Kind::User))
        .nest("/Groups", resources(Kind::Group))
        .fallback(|| async { error_response(&ScimError::not_found("endpoint")) })
        // Innermost first: the body is read (413 and 408 recorded as refusals too), refusals
        // recorded, the token authenticated.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::read_body,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), refusals))
        .layer(middleware::from_fn_with_state(state, authenticate))
}

/// Authenticates the SCIM token; failures are counted and throttled like admin-key failures
/// and recorded as `scim.auth_failed`.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    let token = match routero_http::bearer(request.headers()) {
        Some(presented) => {
            state
                .store
                .find_scim_token(&state.hasher.hash(presented).0)
                .await
        }
        None => Ok(None),
    };
    match token {
        Ok(Some((token_id, tenant_id))) => {
            let actor = client.actor(ActorKind::ScimToken, Some(token_id));
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
                })
                .unwrap_or("localhost");
            let caller = ScimCaller {
                changer: Changer {
                    tenant_id,
                    actor,
                    scim: true,
                },
                base: format!("http://{host}/scim/v2"),
            };
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(None) => {
            let path = request.uri().path().to_owned();
            let failure = super::failed_authentication(
                &state,
                &client,
                &path,
                (EventType::ScimAuthFailed, "invalid_scim_token"),
            )
            .await;
            match failure {
                Err(wait) => {
                    let mut response = error_response(&ScimError::status(
                        429,
                        "too many failed authentications from this address; retry later",
                    ));
                    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                    response
                }
                Ok(()) => {
                    let mut response =
                        error_response(&ScimError::status(401, "a valid SCIM token is required"));
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    response
                }
            }
        }
        Err(error) => error_response(&Refusal::from(error).0),
    }
}

/// Records every refusal of an authenticated SCIM request (`scim.request_refused`, with its
/// status and `scimType`; never the request's content).
async fn refusals(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let caller = request.extensions().get::<ScimCaller>().cloned();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if let (Some(caller), true) = (caller, status.is_client_error() || status.is_server_error()) {
        let mut event = routero_bus::event(
            &caller.changer.tenant_id,
            EventType::ScimRequestRefused,
            caller.changer.actor.clone(),
            routero_bus::resource("scim", Some(path)),
            if status.is_server_error() {
                Outcome::Failure
            } else {
                Outcome::Denied
            },
        );
        event.reason_code = Some(status.as_u16().to_string());
        event.details.insert("method".into(), method.into());
        state.publish(event).await;
    }
    response
}

fn answer(result: Answer) -> Response {
    match result {
        Ok(response) => response,
        Err(Refusal(error)) => error_response(&error),
    }
}

async fn service_provider_config(Extension(caller): Extension<ScimCaller>) -> Response {
    scim_response(
        StatusCode::OK,
        &discovery::service_provider_config(&caller.base),
    )
}

async fn resource_types(Extension(caller): Extension<ScimCaller>) -> Response {
    let types = [Kind::User, Kind::Group]
        .into_iter()
        .map(|k| discovery::resource_type(k, &caller.base))
        .collect();
    scim_response(StatusCode::OK, &discovery::list(types))
}

async fn resource_type(
    Extension(caller): Extension<ScimCaller>,
    Path(id): Path<String>,
) -> Response {
    match [Kind::User, Kind::Group]
        .into_iter()
        .find(|k| k.name() == id)
    {
        Some(kind) => scim_response(
            StatusCode::OK,
            &discovery::resource_type(kind, &caller.base),
        ),
        None => error_response(&ScimError::not_found("resource type")),
    }
}

async fn schemas(Extension(caller): Extension<ScimCaller>) -> Response {
    scim_response(
        StatusCode::OK,
        &discovery::list(discovery::schemas(&caller.base)),
    )
}

async fn schema(Extension(caller): Extension<ScimCaller>, Path(id): Path<String>) -> Response {
    match discovery::schemas(&caller.base)
        .into_iter()
        .find(|s| s["id"] == id.as_str())
    {
        Some(schema) => scim_response(StatusCode::OK, &schema),
        None => error_response(&ScimError::not_found("schema")),
    }
}

/// What a list or search asks for.
struct Search {
    filter: Option<filter::Filter>,
    start_index: i64,
    count: i64,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn names(text: Option<&str>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn integer(name: &str, value: Option<&Value>) -> Result<Option<i64>, ScimError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            ScimError::bad(ScimType::InvalidValue, format!("{name} must be an integer"))
        }),
        Some(Value::String(text)) => text.trim().parse().map(Some).map_err(|_| {
            ScimError::bad(ScimType::InvalidValue, format!("{name} must be an integer"))
        }),
        Some(_) => Err(ScimError::bad(
            ScimType::InvalidValue,
            format!("{name} must be an integer"),
        )),
    }
}

/// The most attribute names `attributes` or `excludedAttributes` may list.
const MAX_ATTRIBUTE_NAMES: usize = 64;

impl Search {
    /// From query parameters or a SearchRequest body (same names).
    fn from_fields(fields: &Map<String, Value>) -> Result<Self, ScimError> {
        let text = |name: &str| fields.get(name).and_then(Value::as_str);
        let list = |name: &str| match fields.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => names(text(name)),
        };
        let (attributes, excluded) = (list("attributes"), list("excludedAttributes"));
        if attributes.len().max(excluded.len()) > MAX_ATTRIBUTE_NAMES {
            return Err(ScimError::bad(
                ScimType::TooMany,
                format!("at most {MAX_ATTRIBUTE_NAMES} attribute names"),
            ));
        }
        Ok(Self {
            filter: text("filter").map(filter::parse).transpose()?,
            // startIndex below 1 is read as 1; count below 0 as 0, above the maximum as it.
            start_index: integer("startIndex", fields.get("startIndex"))?
                .unwrap_or(1)
                .max(1),
            count: integer("count", fields.get("count"))?
                .unwrap_or(i64::from(MAX_PAGE))
                .clamp(0, i64::from(MAX_PAGE)),
            attributes,
            excluded,
        })
    }

    fn from_query(query: &HashMap<String, String>) -> Result<Self, ScimError> {
        let fields = query
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Self::from_fields(&fields)
    }

    fn from_body(body: &Bytes) -> Result<Self, ScimError> {
        match parse_body(body)? {
            Value::Object(fields) => Self::from_fields(&fields),
            _ => Err(ScimError::bad(
                ScimType::InvalidSyntax,
                "a SearchRequest is a JSON object",
            )),
        }
    }

    /// The list response: `items`, of `total` matching, from this search's start.
    fn page(&self, total: i64, items: Vec<Value>) -> Response {
        let page = discovery::page(
            usize::try_from(total).unwrap_or(0),
            usize::try_from(self.start_index).unwrap_or(1),
            items,
        );
        scim_response(StatusCode::OK, &page)
    }

    fn condition(&self, kind: Kind) -> Result<Option<sql::Condition>, ScimError> {
        self.filter
            .as_ref()
            .map(|f| sql::compile(kind, f, 2))
            .transpose()
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body).map_err(|e| {
        ScimError::bad(
            ScimType::InvalidSyntax,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

async fn run_search(state: &AppState, caller: &ScimCaller, kind: Kind, search: &Search) -> Answer {
    let condition = search.condition(kind)?;
    let (total, records) = state
        .store
        .scim_search(
            &caller.changer.tenant_id,
            kind,
            condition.as_ref(),
            search.start_index - 1,
            search.count,
        )
        .await?;
    let items = records
        .iter()
        .map(|r| shown(kind, r, caller, search))
        .collect();
    Ok(search.page(total, items))
}

fn shown(kind: Kind, record: &ScimRecord, caller: &ScimCaller, search: &Search) -> Value {
    resource::project(
        kind,
        record.render(kind, &caller.base),
        &search.attributes,
        &search.excluded,
    )
}

/// What a `Users` or `Groups` handler works with: the store, the caller, the kind its route
/// serves, the query and the headers.
struct Scim {
    state: AppState,
    caller: ScimCaller,
    kind: Kind,
    query: HashMap<String, String>,
    headers: HeaderMap,
}

impl FromRequestParts<AppState> for Scim {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let (Some(caller), Some(kind)) = (
            parts.extensions.get::<ScimCaller>().cloned(),
            parts.extensions.get::<Kind>().copied(),
        ) else {
            return Err(error_response(&ScimError::status(
                401,
                "a valid SCIM token is required",
            )));
        };
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| error_response(&ScimError::bad(ScimType::InvalidSyntax, e.body_text())))?;
        Ok(Self {
            state: state.clone(),
            caller,
            kind,
            query,
            headers: parts.headers.clone(),
        })
    }
}

impl Scim {
    /// The resource `id` names, refused (412) if `If-Match` names another version.
    async fn current(&self, id: &str) -> Result<ScimRecord, Refusal> {
        let tenant = &self.caller.changer.tenant_id;
        let record = self.state.store.scim_get(tenant, self.kind, id).await?;
        if_match(&self.headers, &record)?;
        Ok(record)
    }

    /// Writes `doc` over `current` and answers with the result.
    async fn replace(&self, current: &ScimRecord, doc: Map<String, Value>) -> Answer {
        let store = &self.state.store;
        let record = store
            .scim_replace(&self.caller.changer, self.kind, current, doc)
            .await?;
        self.one(StatusCode::OK, &record)
    }

    /// The response carrying one resource, with its ETag (and its location, once created).
    fn one(&self, status: StatusCode, record: &ScimRecord) -> Answer {
        let search = Search::from_query(&self.query)?;
        let (kind, caller) = (self.kind, &self.caller);
        let mut response = scim_response(status, &shown(kind, record, caller, &search));
        let headers = response.headers_mut();
        if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", record.version)) {
            headers.insert(header::ETAG, etag);
        }
        let location = format!("{}/{}/{}", caller.base, kind.endpoint(), record.id);
        if status == StatusCode::CREATED
            && let Ok(location) = HeaderValue::from_str(&location)
        {
            headers.insert(header::LOCATION, location);
        }
        Ok(response)
    }
}

async fn list(scim: Scim) -> Response {
    let search = Search::from_query(&scim.query);
    answer(async { run_search(&scim.state, &scim.caller, scim.kind, &search?).await }.await)
}

async fn search(scim: Scim, body: Bytes) -> Response {
    let search = Search::from_body(&body);
    answer(async { run_search(&scim.state, &scim.caller, scim.kind, &search?).await }.await)
}

/// `POST /.search`: users, then groups, paged as one list; a filter that names what only one
/// kind has searches that kind.
async fn search_all(
    State(state): State<AppState>,
    Extension(caller): Extension<ScimCaller>,
    body: Bytes,
) -> Response {
    answer(
        async {
            let search = Search::from_body(&body)?;
            let user_filter = search.condition(Kind::User);
            let group_filter = search.condition(Kind::Group);
            if let (Err(error), Err(_)) = (&user_filter, &group_filter) {
                return Err(Refusal(error.clone()));
            }
            let mut items = Vec::new();
            let mut total = 0_i64;
            let mut offset = search.start_index - 1;
            let mut wanted = search.count;
            for (kind, condition) in [(Kind::User, user_filter), (Kind::Group, group_filter)] {
                let Ok(condition) = condition else { continue };
                let tenant = &caller.changer.tenant_id;
                let (found, records) = state
                    .store
                    .scim_search(tenant, kind, condition.as_ref(), offset, wanted)
                    .await?;
                total += found;
                wanted -= i64::try_from(records.len()).unwrap_or(0);
                offset = (offset - found).max(0);
                items.extend(records.iter().map(|r| shown(kind, r, &caller, &search)));
            }
            Ok(search.page(total, items))
        }
        .await,
    )
}

/// The version `If-Match` names: `None` without one or with `*`; refused when it names one
/// that is not current.
fn if_match(headers: &HeaderMap, current: &ScimRecord) -> Result<(), ScimError> {
    let Some(value) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let wanted = value.split(',').map(str::trim);
    let current_tag = format!("\"{}\"", current.version);
    if wanted
        .clone()
        .any(|t| t == "*" || t.trim_start_matches("W/") == current_tag)
    {
        Ok(())
    } else {
        Err(ScimError::status(
            412,
            "the resource changed since that version; read it again",
        ))
    }
}

async fn read(scim: Scim, Path(id): Path<String>) -> Response {
    answer(async { scim.one(StatusCode::OK, &scim.current(&id).await?) }.await)
}

async fn create(scim: Scim, body: Bytes) -> Response {
    answer(
        async {
            let doc = resource::canonical(scim.kind, &parse_body(&body)?)?;
            let store = &scim.state.store;
            let record = store
                .scim_create(&scim.caller.changer, scim.kind, doc)
                .await?;
            scim.one(StatusCode::CREATED, &record)
        }
        .await,
    )
}

async fn replace(scim: Scim, Path(id): Path<String>, body: Bytes) -> Response {
    answer(
        async {
            let doc = resource::canonical(scim.kind, &parse_body(&body)?)?;
            scim.replace(&scim.current(&id).await?, doc).await
        }
        .await,
    )
}

async fn modify(scim: Scim, Path(id): Path<String>, body: Bytes) -> Response {
    answer(
        async {
            let message = parse_body(&body)?;
            let current = scim.current(&id).await?;
            let mut doc = current.doc.clone();
            doc.insert("id".into(), current.id.clone().into());
            if scim.kind == Kind::Group && !current.links.is_empty() {
                let members = current
                    .links
                    .iter()
                    .map(|(id, _)| serde_json::json!({ "value": id }))
                    .collect();
                doc.insert("members".into(), Value::Array(members));
            }
            patch::apply(scim.kind, &mut doc, &message)?;
            let doc = resource::canonical(scim.kind, &Value::Object(doc))?;
            scim.replace(&current, doc).await
        }
        .await,
    )
}

async fn remove(scim: Scim, Path(id): Path<String>) -> Response {
    answer(
        async {
            // Without If-Match any version is deleted; with one, only the version it names.
            let version = if scim.headers.contains_key(header::IF_MATCH) {
                Some(scim.current(&id).await?.version)
            } else {
                None
            };
            let store = &scim.state.store;
            store
                .scim_delete(&scim.caller.changer, scim.kind, &id, version)
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}
