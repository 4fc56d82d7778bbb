//! Every admin route, declared once: its method, its path, what it asks of the policies and
//! its handler. The router and each route's authorization are built from this list, and a
//! test holds the OpenAPI document to it, so a route cannot exist without a permission or go
//! undocumented.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;

use super::access::Ask;
use super::{
    AppState, admin_keys_and_roles, audit, budgets, cors, credentials_and_models, data_planes,
    guardrails, keys, provisioning, sessions, sso, users_and_teams,
};

/// One authenticated route.
pub(super) struct Route {
    /// The HTTP method.
    pub(super) method: Method,
    /// The path as routed (`/models/{name}`).
    pub(super) path: &'static str,
    /// What the route asks of the policies before (or, per key, inside) its handler.
    pub(super) ask: Ask,
    /// The handler, for this method only.
    pub(super) handler: MethodRouter<AppState>,
}

/// A route of `method` (one of axum's method-router constructors).
fn route<H, T>(
    method: Method,
    path: &'static str,
    ask: Ask,
    handler: H,
    on: fn(H) -> MethodRouter<AppState>,
) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    Route {
        method,
        path,
        ask,
        handler: on(handler),
    }
}

fn get<H: Handler<T, AppState>, T: 'static>(path: &'static str, ask: Ask, handler: H) -> Route {
    route(Method::GET, path, ask, handler, axum::routing::get)
}

fn post<H: Handler<T, AppState>, T: 'static>(path: &'static str, ask: Ask, handler: H) -> Route {
    route(Method::POST, path, ask, handler, axum::routing::post)
}

fn put<H: Handler<T, AppState>, T: 'static>(path: &'static str, ask: Ask, handler: H) -> Route {
    route(Method::PUT, path, ask, handler, axum::routing::put)
}

fn delete<H: Handler<T, AppState>, T: 'static>(path: &'static str, ask: Ask, handler: H) -> Route {
    route(Method::DELETE, path, ask, handler, axum::routing::delete)
}

/// `(kind, action)` asked on the caller's tenant before the handler runs.
const fn tenant(kind: &'static str, action: &'static str) -> Ask {
    Ask::Tenant(kind, action)
}

/// Every authenticated admin route.
pub(super) fn routes() -> Vec<Route> {
    vec![
        post(
            "/credentials",
            tenant("credential", "create"),
            credentials_and_models::create_credential,
        ),
        get(
            "/credentials",
            tenant("credential", "list"),
            credentials_and_models::list_credentials,
        ),
        put(
            "/credentials/{name}",
            tenant("credential", "update"),
            credentials_and_models::update_credential,
        ),
        delete(
            "/credentials/{name}",
            tenant("credential", "delete"),
            credentials_and_models::delete_credential,
        ),
        post(
            "/models",
            tenant("model", "create"),
            credentials_and_models::create_model,
        ),
        get(
            "/models",
            tenant("model", "list"),
            credentials_and_models::list_models,
        ),
        put(
            "/models/{name}",
            tenant("model", "update"),
            credentials_and_models::update_model,
        ),
        delete(
            "/models/{name}",
            tenant("model", "delete"),
            credentials_and_models::delete_model,
        ),
        post("/key/generate", tenant("key", "create"), keys::generate),
        post("/key/delete", Ask::EachKey, keys::delete),
        delete("/key/delete", Ask::EachKey, keys::delete),
        get("/key/info", Ask::EachKey, keys::info),
        get("/key/list", Ask::EachKey, keys::list),
        post("/key/regenerate", Ask::EachKey, keys::regenerate),
        post("/key/update", Ask::EachKey, keys::update),
        post(
            "/teams",
            tenant("team", "create"),
            users_and_teams::create_team,
        ),
        get(
            "/teams",
            tenant("team", "list"),
            users_and_teams::list_teams,
        ),
        put(
            "/teams/{id}/budget",
            tenant("team", "update"),
            budgets::put_team,
        ),
        put(
            "/users/{id}/budget",
            tenant("user", "update"),
            budgets::put_user,
        ),
        put(
            "/tenant/budget",
            tenant("tenant", "update"),
            budgets::put_tenant,
        ),
        get(
            "/spend/report",
            tenant("spend_report", "read"),
            budgets::report,
        ),
        get("/budgets", tenant("spend_report", "read"), budgets::list),
        post(
            "/users",
            tenant("user", "create"),
            users_and_teams::create_user,
        ),
        get(
            "/users",
            tenant("user", "list"),
            users_and_teams::list_users,
        ),
        get("/data-planes", tenant("tenant", "read"), data_planes),
        get("/audit/events", tenant("audit_log", "read"), audit::events),
        post("/audit/verify", tenant("audit_log", "read"), audit::verify),
        get(
            "/audit/export",
            tenant("audit_log", "export"),
            audit::export,
        ),
        get(
            "/audit/retention",
            tenant("audit_log", "read"),
            audit::get_retention,
        ),
        put(
            "/audit/retention",
            tenant("audit_log", "configure"),
            audit::set_retention,
        ),
        post(
            "/admin-keys",
            tenant("admin_key", "create"),
            admin_keys_and_roles::create_admin_key,
        ),
        get(
            "/admin-keys",
            tenant("admin_key", "list"),
            admin_keys_and_roles::list_admin_keys,
        ),
        delete(
            "/admin-keys/{id}",
            tenant("admin_key", "revoke"),
            admin_keys_and_roles::revoke_admin_key,
        ),
        get("/cors", tenant("tenant", "read"), cors::get),
        put("/cors", tenant("tenant", "update"), cors::put),
        get("/guardrails", tenant("policy", "read"), guardrails::get),
        put("/guardrails", tenant("policy", "update"), guardrails::put),
        get(
            "/guardrails/findings",
            tenant("audit_log", "read"),
            guardrails::findings,
        ),
        get(
            "/roles",
            tenant("role", "list"),
            admin_keys_and_roles::list_roles,
        ),
        put(
            "/roles/{name}",
            tenant("role", "manage"),
            admin_keys_and_roles::put_role,
        ),
        delete(
            "/roles/{name}",
            tenant("role", "manage"),
            admin_keys_and_roles::delete_role,
        ),
        post(
            "/scim/tokens",
            tenant("scim_token", "create"),
            provisioning::create_token,
        ),
        get(
            "/scim/tokens",
            tenant("scim_token", "list"),
            provisioning::list_tokens,
        ),
        delete(
            "/scim/tokens/{id}",
            tenant("scim_token", "revoke"),
            provisioning::revoke_token,
        ),
        get("/me", Ask::OwnSelf, sessions::me),
        post("/logout", Ask::OwnSelf, sessions::logout),
        post("/sso/logout", Ask::OwnSelf, sessions::logout),
        put("/sso/oidc", tenant("sso_config", "update"), sso::put_oidc),
        get("/sso/oidc", tenant("sso_config", "read"), sso::get_oidc),
        delete(
            "/sso/oidc",
            tenant("sso_config", "update"),
            sso::delete_oidc,
        ),
        put("/sso/saml", tenant("sso_config", "update"), sso::put_saml),
        get("/sso/saml", tenant("sso_config", "read"), sso::get_saml),
        delete(
            "/sso/saml",
            tenant("sso_config", "update"),
            sso::delete_saml,
        ),
        get(
            "/sessions",
            tenant("admin_key", "list"),
            sessions::list_sessions,
        ),
        delete(
            "/sessions/{id}",
            tenant("admin_key", "revoke"),
            sessions::revoke_session,
        ),
        post(
            "/local-admins",
            tenant("admin_key", "create"),
            sessions::create_local_admin,
        ),
        get(
            "/local-admins",
            tenant("admin_key", "list"),
            sessions::list_local_admins,
        ),
        delete(
            "/local-admins/{id}",
            tenant("admin_key", "revoke"),
            sessions::delete_local_admin,
        ),
        get(
            "/role-mappings",
            tenant("role", "list"),
            provisioning::get_role_mapping,
        ),
        put(
            "/role-mappings",
            tenant("role", "manage"),
            provisioning::put_role_mapping,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Routes served without an admin key.
    const PUBLIC: &[(&str, &str)] = &[
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("POST", "/login/local"),
        ("GET", "/sso/oidc/login"),
        ("GET", "/sso/oidc/callback"),
        ("GET", "/sso/saml/metadata"),
        ("GET", "/sso/saml/login"),
        ("POST", "/sso/saml/acs"),
    ];

    #[test]
    fn the_openapi_document_names_every_route_and_no_other() {
        let document: serde_json::Value =
            serde_json::from_str(super::super::OPENAPI).expect("the document is JSON");
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("a path item")
                    .keys()
                    .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                    .map(|m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .chain(
                PUBLIC
                    .iter()
                    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned())),
            )
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routed but not documented: {undocumented:?}; documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn each_route_is_declared_once() {
        let mut seen = BTreeSet::new();
        for route in routes() {
            assert!(
                seen.insert((route.method.to_string(), route.path)),
                "{} {} declared twice",
                route.method,
                route.path
            );
        }
    }
}
