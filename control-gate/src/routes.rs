//! The API's endpoints as one table: method, path pattern, what the caller
//! needs. The router, the authorization check and the OpenAPI test all read
//! it, so an endpoint cannot exist without its access rule. The dashboard's
//! page and files are in the table too (public, and not part of the API).

use isms_ipc::resadmin::{Need, Role};

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (login, health, metrics, the API description).
    Public,
    /// A caller whose token holds this (for `Need::Project`, in the path's
    /// `{project}`).
    Needs(Need),
    /// Decided by the handler once it knows the project (an invocation by id).
    ByRecord,
}

/// Every endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Endpoint {
    Dashboard,
    DashboardFile,
    Healthz,
    Metrics,
    OpenApi,
    Login,
    Logout,
    ListUsers,
    CreateUser,
    DeleteUser,
    ListTokens,
    CreateToken,
    RevokeToken,
    ListProjects,
    CreateProject,
    GetProject,
    DeleteProject,
    ListMembers,
    AddMember,
    RemoveMember,
    SetQuotas,
    SetTopics,
    ListDoees,
    Deploy,
    GetDoee,
    DeleteDoee,
    Rollback,
    Invoke,
    ListInvocations,
    GetInvocation,
    Logs,
    Sql,
    ListCollections,
    GetCollection,
    DeadLetters,
    RetryDeadLetters,
    PurgeDeadLetters,
    ListDevices,
    CreateDevice,
    DeleteDevice,
    ListSecrets,
    SetSecret,
    DeleteSecret,
    Services,
}

impl Endpoint {
    /// Whether this is part of the REST API (described in openapi.json),
    /// rather than the dashboard's page and files.
    pub fn is_api(self) -> bool {
        !matches!(self, Endpoint::Dashboard | Endpoint::DashboardFile)
    }
}

const VIEWER: Access = Access::Needs(Need::Project(Role::Viewer));
const DEVELOPER: Access = Access::Needs(Need::Project(Role::Developer));
const PROJECT_ADMIN: Access = Access::Needs(Need::Project(Role::Admin));
const USER: Access = Access::Needs(Need::User);
const ADMIN: Access = Access::Needs(Need::Admin);

/// The table: method, path (`{name}` matches one segment), endpoint, access.
pub const ROUTES: &[(&str, &str, Endpoint, Access)] = &[
    ("GET", "/", Endpoint::Dashboard, Access::Public),
    ("GET", "/ui/{file}", Endpoint::DashboardFile, Access::Public),
    ("GET", "/healthz", Endpoint::Healthz, Access::Public),
    ("GET", "/metrics", Endpoint::Metrics, Access::Public),
    (
        "GET",
        "/api/v1/openapi.json",
        Endpoint::OpenApi,
        Access::Public,
    ),
    (
        "POST",
        "/api/v1/auth/login",
        Endpoint::Login,
        Access::Public,
    ),
    ("POST", "/api/v1/auth/logout", Endpoint::Logout, USER),
    ("GET", "/api/v1/users", Endpoint::ListUsers, ADMIN),
    ("POST", "/api/v1/users", Endpoint::CreateUser, ADMIN),
    (
        "DELETE",
        "/api/v1/users/{username}",
        Endpoint::DeleteUser,
        ADMIN,
    ),
    ("GET", "/api/v1/tokens", Endpoint::ListTokens, USER),
    ("POST", "/api/v1/tokens", Endpoint::CreateToken, USER),
    ("DELETE", "/api/v1/tokens/{id}", Endpoint::RevokeToken, USER),
    ("GET", "/api/v1/projects", Endpoint::ListProjects, USER),
    (
        "POST",
        "/api/v1/projects",
        Endpoint::CreateProject,
        Access::Needs(Need::Creator),
    ),
    (
        "GET",
        "/api/v1/projects/{project}",
        Endpoint::GetProject,
        VIEWER,
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}",
        Endpoint::DeleteProject,
        PROJECT_ADMIN,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/members",
        Endpoint::ListMembers,
        VIEWER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/members",
        Endpoint::AddMember,
        PROJECT_ADMIN,
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/members/{username}",
        Endpoint::RemoveMember,
        PROJECT_ADMIN,
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/quotas",
        Endpoint::SetQuotas,
        ADMIN,
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/topics",
        Endpoint::SetTopics,
        ADMIN,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/doees",
        Endpoint::ListDoees,
        VIEWER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/doees",
        Endpoint::Deploy,
        DEVELOPER,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/doees/{doee}",
        Endpoint::GetDoee,
        VIEWER,
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/doees/{doee}",
        Endpoint::DeleteDoee,
        DEVELOPER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/doees/{doee}/rollback",
        Endpoint::Rollback,
        DEVELOPER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/doees/{doee}/invoke",
        Endpoint::Invoke,
        DEVELOPER,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/invocations",
        Endpoint::ListInvocations,
        VIEWER,
    ),
    (
        "GET",
        "/api/v1/invocations/{id}",
        Endpoint::GetInvocation,
        Access::ByRecord,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/logs",
        Endpoint::Logs,
        VIEWER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/sql",
        Endpoint::Sql,
        DEVELOPER,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/collections",
        Endpoint::ListCollections,
        VIEWER,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/collections/{collection}",
        Endpoint::GetCollection,
        VIEWER,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/mqtt/dead-letters",
        Endpoint::DeadLetters,
        VIEWER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/mqtt/dead-letters/retry",
        Endpoint::RetryDeadLetters,
        DEVELOPER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/mqtt/dead-letters/purge",
        Endpoint::PurgeDeadLetters,
        DEVELOPER,
    ),
    (
        "GET",
        "/api/v1/projects/{project}/devices",
        Endpoint::ListDevices,
        VIEWER,
    ),
    (
        "POST",
        "/api/v1/projects/{project}/devices",
        Endpoint::CreateDevice,
        DEVELOPER,
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/devices/{device}",
        Endpoint::DeleteDevice,
        DEVELOPER,
    ),
    // Names only, and developers only: a viewer learns nothing of them.
    (
        "GET",
        "/api/v1/projects/{project}/secrets",
        Endpoint::ListSecrets,
        DEVELOPER,
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/secrets/{secret}",
        Endpoint::SetSecret,
        DEVELOPER,
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/secrets/{secret}",
        Endpoint::DeleteSecret,
        DEVELOPER,
    ),
    ("GET", "/api/v1/system/services", Endpoint::Services, USER),
];

/// A matched route: its endpoint, access and the path's `{name}` values.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Who may call it.
    pub access: Access,
    /// `(name, value)` for each `{name}` of the pattern.
    pub params: Vec<(&'static str, &'a str)>,
}

impl Matched<'_> {
    /// The value of `{name}`.
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    }
}

/// What the table says of a request.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// An endpoint.
    Found(Matched<'a>),
    /// The path exists with other methods.
    WrongMethod(Vec<&'static str>),
    /// No such path.
    Missing,
}

fn matches<'a>(pattern: &'static str, path: &'a str) -> Option<Vec<(&'static str, &'a str)>> {
    let mut params = Vec::new();
    let mut pattern_segments = pattern.trim_matches('/').split('/');
    let mut path_segments = path
        .trim_end_matches('/')
        .trim_start_matches('/')
        .split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with('{') && !s.is_empty() => {
                params.push((p.trim_matches(|c| c == '{' || c == '}'), s));
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

/// Finds the endpoint of a method and path.
pub fn lookup<'a>(method: &str, path: &'a str) -> Lookup<'a> {
    let mut allowed = Vec::new();
    for &(m, pattern, endpoint, access) in ROUTES {
        let Some(params) = matches(pattern, path) else {
            continue;
        };
        if m == method {
            return Lookup::Found(Matched {
                endpoint,
                access,
                params,
            });
        }
        allowed.push(m);
    }
    if allowed.is_empty() {
        Lookup::Missing
    } else {
        Lookup::WrongMethod(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_patterns_and_methods() {
        let Lookup::Found(m) = lookup("GET", "/api/v1/projects/demo/doees/hello") else {
            panic!("not found");
        };
        assert_eq!(m.endpoint, Endpoint::GetDoee);
        assert_eq!(m.param("project"), "demo");
        assert_eq!(m.param("doee"), "hello");
        assert!(matches!(
            lookup("PATCH", "/api/v1/projects/demo"),
            Lookup::WrongMethod(methods) if methods == ["GET", "DELETE"]
        ));
        assert!(matches!(
            lookup("GET", "/api/v1/projects//doees"),
            Lookup::Missing
        ));
        assert!(matches!(lookup("GET", "/api/v1/nothing"), Lookup::Missing));
        assert!(matches!(
            lookup("GET", "/api/v1/projects/"),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn the_dashboard_is_at_the_root_and_public() {
        let Lookup::Found(m) = lookup("GET", "/") else {
            panic!("/ not found");
        };
        assert_eq!(m.endpoint, Endpoint::Dashboard);
        let Lookup::Found(m) = lookup("GET", "/ui/app.js") else {
            panic!("/ui/app.js not found");
        };
        assert_eq!(m.endpoint, Endpoint::DashboardFile);
        assert_eq!(m.param("file"), "app.js");
        for (_, _, endpoint, access) in ROUTES {
            if !endpoint.is_api() {
                assert_eq!(*access, Access::Public, "{endpoint:?}");
            }
        }
        assert!(matches!(lookup("GET", "/ui/a/b.js"), Lookup::Missing));
    }

    /// Every endpoint of the API is described in openapi.json, with its
    /// method; the dashboard's page and files are not API.
    #[test]
    fn the_openapi_description_covers_every_endpoint() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let api: Vec<_> = ROUTES.iter().filter(|r| r.2.is_api()).collect();
        for (method, pattern, endpoint, _) in &api {
            let path = &paths
                .get(*pattern)
                .unwrap_or_else(|| panic!("{pattern} is missing from openapi.json"));
            assert!(
                path.get(method.to_lowercase()).is_some(),
                "{method} {pattern} ({endpoint:?}) is missing from openapi.json"
            );
        }
        let described: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            described,
            api.len(),
            "openapi.json describes endpoints that do not exist"
        );
    }
}
