//! [`Proxy`] on Caddy's admin API (JSON config). The runner writes only under the ids
//! and servers it names `runner-…`; whatever else Caddy serves stays as it is.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Applied, Listen, PROBE_HEADER, Proxy, ProxyError, Route, SERVED_BY_HEADER};

/// The server that holds hostname routes served over plain HTTP.
const HTTP_SERVER: &str = "runner-http";
/// The server that holds hostname routes with certificates.
const HTTPS_SERVER: &str = "runner-https";

pub struct Caddy {
    admin_url: String,
    http_listen: String,
    https_listen: String,
    client: reqwest::Client,
    /// One change at a time: hostname routes share a server.
    writing: tokio::sync::Mutex<()>,
}

impl Caddy {
    pub fn new(config: &crate::config::ProxyConfig) -> Self {
        Self {
            admin_url: config.admin_url.clone(),
            http_listen: config.http_listen.clone(),
            https_listen: config.https_listen.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    fn unreachable(&self, error: reqwest::Error) -> ProxyError {
        ProxyError::Unreachable {
            url: self.admin_url.clone(),
            cause: error.without_url().to_string(),
        }
    }

    /// The value at `path` (`config/…` or `id/…`); `None` when there is none.
    async fn get(&self, path: &str) -> Result<Option<Value>, ProxyError> {
        let response = self
            .client
            .get(format!("{}/{path}", self.admin_url))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            // An unknown id is a 404 (or a 500 on older versions): nothing is there.
            return Ok(None);
        }
        Ok(serde_json::from_str::<Value>(&body).ok().filter(|v| !v.is_null()))
    }

    async fn send(&self, method: reqwest::Method, path: &str, value: &Value) -> Result<(), ProxyError> {
        let response = self
            .client
            .request(method.clone(), format!("{}/{path}", self.admin_url))
            .json(value)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(());
        }
        let message = response.text().await.unwrap_or_default();
        Err(ProxyError::Refused {
            what: format!("{method} /{path}"),
            message: message.trim().chars().take(500).collect(),
        })
    }

    /// Creates `apps.http.servers` where it is missing, without touching what exists.
    async fn ensure_servers_object(&self) -> Result<(), ProxyError> {
        let levels = [
            ("config/apps", json!({ "http": { "servers": {} } })),
            ("config/apps/http", json!({ "servers": {} })),
            ("config/apps/http/servers", json!({})),
        ];
        for (path, empty) in levels {
            if self.get(path).await?.is_none() {
                return self.send(reqwest::Method::POST, path, &empty).await;
            }
        }
        Ok(())
    }

    async fn ensure_port_route(&self, route: &Route, address: SocketAddr) -> Result<Applied, ProxyError> {
        let path = format!("config/apps/http/servers/{}", route.id);
        let server = json!({
            "listen": [address.to_string()],
            "routes": [route_json(route)],
            "automatic_https": { "disable": true },
        });
        if self.get(&path).await?.as_ref() == Some(&server) {
            return Ok(Applied::Unchanged);
        }
        self.ensure_servers_object().await?;
        self.send(reqwest::Method::POST, &path, &server).await?;
        Ok(Applied::Written)
    }

    async fn ensure_host_route(&self, route: &Route, tls: bool) -> Result<Applied, ProxyError> {
        let desired = route_json(route);
        let id_path = format!("id/{}", route.id);
        let (server_name, listen) = if tls {
            (HTTPS_SERVER, &self.https_listen)
        } else {
            (HTTP_SERVER, &self.http_listen)
        };
        let current = self.get(&id_path).await?;
        if current.as_ref() == Some(&desired) {
            return Ok(Applied::Unchanged);
        }
        if current.is_some() {
            // It may sit in the other server (its TLS setting changed): it moves.
            self.send(reqwest::Method::DELETE, &id_path, &Value::Null).await?;
        }
        self.ensure_servers_object().await?;
        let server_path = format!("config/apps/http/servers/{server_name}");
        if self.get(&server_path).await?.is_none() {
            let mut server = json!({ "listen": [listen], "routes": [desired] });
            if !tls {
                server["automatic_https"] = json!({ "disable": true });
            }
            self.send(reqwest::Method::PUT, &server_path, &server).await?;
        } else {
            self.send(reqwest::Method::POST, &format!("{server_path}/routes"), &desired)
                .await?;
        }
        Ok(Applied::Written)
    }
}

/// The route as Caddy's JSON: both slots, the first preferred, each checked for health.
/// A request carrying the route's probe token is also told which slot answered it.
fn route_json(route: &Route) -> Value {
    let probed = json!({
        "match": [{ "header": { PROBE_HEADER: [route.probe_token] } }],
        "handle": [proxy_json(route, true)],
        "terminal": true,
    });
    let mut value = json!({
        "@id": route.id,
        "handle": [{
            "handler": "subroute",
            "routes": [probed, { "handle": [proxy_json(route, false)] }],
        }],
        "terminal": true,
    });
    if let Listen::Host { name, .. } = &route.listen {
        value["match"] = json!([{ "host": [name] }]);
    }
    value
}

/// The reverse proxy over the route's slots.
fn proxy_json(route: &Route, tell_slot: bool) -> Value {
    let health = &route.health;
    let mut active = json!({
        "uri": health.path,
        "interval": format!("{}ms", health.interval.as_millis()),
        "timeout": "2s",
        "expect_status": health.expect_status,
    });
    if let Some(body) = &health.expect_body {
        active["expect_body"] = json!(regex_literal(body));
    }
    let mut handler = json!({
            "handler": "reverse_proxy",
            "upstreams": route.slots.iter().map(|slot| json!({ "dial": slot.to_string() })).collect::<Vec<_>>(),
            "load_balancing": {
                "selection_policy": { "policy": "first" },
                // While a slot is being left, a request that could not reach it is
                // sent to the other (GET and any request that was never sent).
                "try_duration": "10s",
                "try_interval": "20ms",
            },
            "health_checks": {
                "active": active,
                "passive": { "fail_duration": "2s", "max_fails": 1 },
            },
    });
    if tell_slot {
        handler["headers"] = json!({
            "response": { "set": { SERVED_BY_HEADER: ["{http.reverse_proxy.upstream.hostport}"] } }
        });
    }
    handler
}

/// A Caddy listen address (`:80`, `127.0.0.1:8080`, `[::1]:443`) as an address to connect
/// to on this machine.
fn local_address(listen: &str, default_port: u16) -> SocketAddr {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, ""));
    let port = port.parse().unwrap_or(default_port);
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, port)
}

/// `text` as a regular expression that matches exactly it.
fn regex_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[async_trait::async_trait]
impl Proxy for Caddy {
    async fn ensure(&self, route: &Route) -> Result<Applied, ProxyError> {
        let _one_writer = self.writing.lock().await;
        match &route.listen {
            Listen::Port(address) => self.ensure_port_route(route, *address).await,
            Listen::Host { tls, .. } => self.ensure_host_route(route, *tls).await,
        }
    }

    async fn remove(&self, route: &Route) -> Result<(), ProxyError> {
        let path = match route.listen {
            Listen::Port(_) => format!("config/apps/http/servers/{}", route.id),
            Listen::Host { .. } => format!("id/{}", route.id),
        };
        if self.get(&path).await?.is_some() {
            self.send(reqwest::Method::DELETE, &path, &Value::Null).await?;
        }
        Ok(())
    }

    async fn in_flight(&self, upstream: SocketAddr) -> Result<u64, ProxyError> {
        let listed = self.get("reverse_proxy/upstreams").await?.unwrap_or(Value::Null);
        let address = upstream.to_string();
        Ok(listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|u| u["address"].as_str() == Some(address.as_str()))
            .filter_map(|u| u["num_requests"].as_u64())
            .sum())
    }

    async fn serving(&self, route: &Route) -> Result<Option<SocketAddr>, ProxyError> {
        let (client, url) = match &route.listen {
            Listen::Port(address) => {
                // The route listens on every address when bound to 0.0.0.0: ask on loopback.
                let ip = if address.ip().is_unspecified() {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                } else {
                    address.ip()
                };
                let at = SocketAddr::new(ip, address.port());
                (self.client.clone(), format!("http://{at}{}", route.health.path))
            }
            Listen::Host { tls: true, .. } => return Err(ProxyError::CannotAsk),
            Listen::Host { name, tls: false } => {
                // The route is asked for its host name on this machine's listener.
                let at = local_address(&self.http_listen, 80);
                let client = reqwest::Client::builder()
                    .resolve(name, at)
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| self.unreachable(e))?;
                (client, format!("http://{name}:{}{}", at.port(), route.health.path))
            }
        };
        let Ok(response) = client
            .get(&url)
            .header(PROBE_HEADER, &route.probe_token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        else {
            return Ok(None);
        };
        Ok(response
            .headers()
            .get(SERVED_BY_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    async fn check(&self) -> Result<(), ProxyError> {
        self.client
            .get(format!("{}/config/", self.admin_url))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_reached_on_this_machine() {
        assert_eq!(local_address(":80", 80), "127.0.0.1:80".parse().expect("address"));
        assert_eq!(
            local_address("127.0.0.2:8443", 443),
            "127.0.0.2:8443".parse().expect("address")
        );
        assert_eq!(
            local_address("0.0.0.0:8080", 80),
            "127.0.0.1:8080".parse().expect("address")
        );
        assert_eq!(local_address("[::1]:8080", 80), "[::1]:8080".parse().expect("address"));
    }

    #[test]
    fn a_body_check_matches_the_text_literally() {
        assert_eq!(regex_literal("a.b (ok)"), r"a\.b \(ok\)");
    }
}
