//! Dashboard login: the admin token is exchanged once for a session cookie (HttpOnly,
//! SameSite=Strict). Every form that changes something carries a CSRF token derived from
//! the session, and a cross-site `Origin` is refused outright. Sessions are stored under a
//! hash keyed by the admin token, so changing the token ends every session; each client
//! address gets a bounded number of login attempts per minute.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::PageError;
use super::html::{self, Frame, Nav};
use crate::config::ReadAccess;
use crate::store::{self, sessions};
use crate::web::AppState;
use crate::web::auth::constant_time_eq;
use crate::web::error::ApiError;

pub const SESSION_COOKIE: &str = "runner_session";

/// Who is looking at a page: a logged-in admin, or anyone.
pub struct Viewer {
    session: Option<String>,
}

impl Viewer {
    pub fn logged_in(&self) -> bool {
        self.session.is_some()
    }

    /// The token every form of this session must send back.
    pub fn csrf(&self) -> Option<String> {
        self.session.as_deref().map(csrf_for)
    }

    pub fn frame<'a>(&self, title: &'a str, csrf: Option<&'a str>, nav: Nav) -> Frame<'a> {
        Frame {
            title,
            logged_in: self.logged_in(),
            csrf,
            nav,
        }
    }

    /// Read pages need a login when the runner is configured so.
    pub fn may_read(&self, state: &AppState, here: &str) -> Result<(), PageError> {
        if state.config.dashboard.read_access == ReadAccess::Login && !self.logged_in() {
            return Err(PageError::LoginFirst(here.to_owned()));
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = session_cookie(&parts.headers) else {
            return Ok(Self { session: None });
        };
        let valid = sessions::is_valid(&state.pool, &token_hash(state, &token), state.clock.now_ms())
            .await
            .map_err(|e| PageError::Api(e.into()))?;
        Ok(Self {
            session: valid.then_some(token),
        })
    }
}

/// A form post by a logged-in admin: the request comes with a valid session, names no other
/// site as its `Origin`, and its form carries the session's CSRF token. The token is in the
/// body, so this is a handler's last argument; the body is read only once the session and
/// the origin have passed.
pub struct Session {
    token: String,
}

impl FromRequest<AppState> for Session {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let Some(token) = Viewer::from_request_parts(&mut parts, state).await?.session else {
            return Err(PageError::Unauthorized(
                "Log in with the admin token to do this.".into(),
            ));
        };
        if !same_origin(&parts.headers) {
            return Err(PageError::Forbidden("This request came from another site.".into()));
        }
        let axum::Form(form) = axum::Form::<CsrfForm>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(PageError::Form)?;
        let expected = csrf_for(&token);
        match form.csrf {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(Self { token }),
            _ => Err(PageError::Forbidden(
                "The form was stale or forged (CSRF token mismatch). Reload the page and try again.".into(),
            )),
        }
    }
}

/// What every form of a session sends back.
#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

/// Whether the request comes with a valid dashboard session (the API's reads accept one).
pub async fn has_session(state: &AppState, headers: &HeaderMap) -> Result<bool, store::StoreError> {
    match session_cookie(headers) {
        Some(token) => sessions::is_valid(&state.pool, &token_hash(state, &token), state.clock.now_ms()).await,
        None => Ok(false),
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What a session is stored under: bound to the admin token of the day, so a session
/// made under another token (the token was changed) is valid no more.
fn token_hash(state: &AppState, token: &str) -> String {
    let admin = state
        .config
        .admin_token
        .as_ref()
        .map(|t| hex::encode(Sha256::digest(t.expose_secret().as_bytes())))
        .unwrap_or_default();
    hex::encode(Sha256::digest(format!("session:{admin}:{token}")))
}

fn csrf_for(token: &str) -> String {
    hex::encode(&Sha256::digest(format!("csrf:{token}"))[..20])
}

/// Browsers send `Origin` on form posts; when present it must name this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this site: one `/` followed by neither `/` nor `\`, and no control
/// character anywhere (browsers drop tabs and newlines, so `/\t/evil.example` would
/// become `//evil.example`). Anything else goes home.
fn safe_next(next: Option<&str>) -> &str {
    let local = |path: &str| {
        let mut chars = path.chars();
        chars.next() == Some('/')
            && chars.next().is_none_or(|second| second != '/' && second != '\\')
            && !path.contains('\\')
            && !path.chars().any(char::is_control)
    };
    match next {
        Some(path) if local(path) => path,
        _ => "/",
    }
}

/// Login attempts per client address in the last minute.
#[derive(Default)]
pub struct LoginLimiter {
    attempts:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::collections::VecDeque<tokio::time::Instant>>>,
}

impl LoginLimiter {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    /// Counts an attempt from `client`; `Err(seconds)` when it must wait that long first.
    pub fn attempt(&self, client: std::net::IpAddr, per_minute: u32) -> Result<(), u64> {
        self.with_recent(client, per_minute, true)
    }

    /// `Err(seconds)` when `client` has used up its attempts, without counting one.
    pub fn check(&self, client: std::net::IpAddr, per_minute: u32) -> Result<(), u64> {
        self.with_recent(client, per_minute, false)
    }

    /// Counts an attempt that failed, even over the limit (it was already refused).
    pub fn failed(&self, client: std::net::IpAddr) {
        let mut attempts = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        attempts
            .entry(client)
            .or_default()
            .push_back(tokio::time::Instant::now());
    }

    fn with_recent(&self, client: std::net::IpAddr, per_minute: u32, count: bool) -> Result<(), u64> {
        let now = tokio::time::Instant::now();
        let mut attempts = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if attempts.len() > 10_000 {
            attempts.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < Self::WINDOW));
        }
        let times = attempts.entry(client).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= Self::WINDOW) {
            times.pop_front();
        }
        let per_minute = usize::try_from(per_minute).unwrap_or(usize::MAX);
        if times.len() >= per_minute {
            // The attempts that put it over the limit must age out first.
            let oldest = times.get(times.len() - per_minute).copied().unwrap_or(now);
            let wait = Self::WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        if count {
            times.push_back(now);
        }
        Ok(())
    }
}

/// The API's `Authorization: Bearer` guesses share the login's budget per client address:
/// a request with a bearer token from an address that used it up is refused (429, with
/// `Retry-After`) before its token is compared, whether the token is right or not; each
/// one the API refuses (401) counts against it. Without this the admin token could be
/// guessed at the speed of the network.
pub async fn limit_bearer_guesses(
    State(state): State<AppState>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if !bearer {
        return next.run(request).await;
    }
    let client = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
    let per_minute = state.config.dashboard.login_attempts_per_minute;
    if let Err(wait) = state.login_limiter.check(client, per_minute) {
        tracing::warn!(%client, "too many failed admin token attempts");
        return ApiError::TooManyRequests(wait).into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        state.login_limiter.failed(client);
    }
    response
}

pub async fn login_page(viewer: Viewer, axum::extract::Query(query): axum::extract::Query<LoginQuery>) -> Response {
    login_form(&viewer, safe_next(query.next.as_deref()), None, StatusCode::OK)
}

fn login_form(viewer: &Viewer, next: &str, problem: Option<&str>, status: StatusCode) -> Response {
    let content = super::pages::login::render(viewer.logged_in(), next, problem);
    html::respond(status, html::page(&viewer.frame("Log in", None, Nav::None), &content))
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let client = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
    if let Err(wait) = state
        .login_limiter
        .attempt(client, state.config.dashboard.login_attempts_per_minute)
    {
        tracing::warn!(%client, "too many login attempts");
        return Err(PageError::Api(ApiError::TooManyRequests(wait)));
    }
    let axum::Form(form) = form.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            PageError::Api(ApiError::PayloadTooLarge(crate::web::SMALL_BODY_LIMIT))
        } else {
            PageError::BadRequest(rejection.body_text())
        }
    })?;
    let next = safe_next(form.next.as_deref()).to_owned();
    if !same_origin(&headers) {
        return Err(PageError::Forbidden("This request came from another site.".into()));
    }
    let Some(expected) = &state.config.admin_token else {
        return Ok(login_form(
            &viewer,
            &next,
            Some("Logins are disabled: this runner has no RUNNER_ADMIN_TOKEN."),
            StatusCode::UNAUTHORIZED,
        ));
    };
    if !constant_time_eq(form.token.trim().as_bytes(), expected.expose_secret().as_bytes()) {
        tracing::warn!("dashboard login with a wrong token");
        return Ok(login_form(
            &viewer,
            &next,
            Some("That is not the admin token."),
            StatusCode::UNAUTHORIZED,
        ));
    }
    let mut raw = [0_u8; 32];
    getrandom::fill(&mut raw).map_err(|e| PageError::Api(ApiError::Internal(anyhow::anyhow!("no randomness: {e}"))))?;
    let token = hex::encode(raw);
    let lifetime = state.config.dashboard.session_lifetime;
    let now = state.clock.now_ms();
    sessions::create(
        &state.pool,
        &token_hash(&state, &token),
        now,
        now + store::duration_ms(lifetime),
    )
    .await
    .map_err(|e| PageError::Api(e.into()))?;
    tracing::info!("dashboard login");
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        lifetime.as_secs(),
        if state.config.dashboard.secure_cookies() {
            "; Secure"
        } else {
            ""
        }
    );
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| PageError::Api(ApiError::Internal(e.into())))?,
    );
    Ok(response)
}

pub async fn logout(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    sessions::delete(&state.pool, &token_hash(&state, &session.token))
        .await
        .map_err(|e| PageError::Api(e.into()))?;
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("runner_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/jobs/3")), "/jobs/3");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(Some("/jobs/3\r\nSet-Cookie: x=y")), "/");
        assert_eq!(safe_next(Some("evil.example")), "/");
        assert_eq!(safe_next(Some("/")), "/");
        assert_eq!(safe_next(Some("/?project=a%2Fb")), "/?project=a%2Fb");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_login_limiter_counts_per_address_and_says_how_long_to_wait() {
        let limiter = LoginLimiter::default();
        let (a, b) = (
            std::net::IpAddr::from([10, 0, 0, 1]),
            std::net::IpAddr::from([10, 0, 0, 2]),
        );
        for _ in 0..3 {
            assert!(limiter.attempt(a, 3).is_ok());
        }
        let wait = limiter.attempt(a, 3).expect_err("fourth attempt");
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(limiter.attempt(b, 3).is_ok(), "another address has its own count");
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_address_may_try_again_once_its_attempts_are_a_minute_old() {
        let limiter = LoginLimiter::default();
        let client = std::net::IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            assert!(limiter.attempt(client, 3).is_ok());
        }
        tokio::time::advance(std::time::Duration::from_secs(40)).await;
        assert_eq!(
            limiter.attempt(client, 3),
            Err(20),
            "20 s until the first attempt is a minute old"
        );
        tokio::time::advance(std::time::Duration::from_secs(20)).await;
        assert!(limiter.attempt(client, 3).is_ok(), "the minute has passed");
        assert_eq!(limiter.attempt(client, 3), Ok(()));
        assert_eq!(limiter.attempt(client, 3), Ok(()));
        assert_eq!(limiter.attempt(client, 3), Err(60), "three new attempts in this minute");
    }

    #[test]
    fn a_foreign_origin_is_not_the_same_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
    }
}
