//! One changed row as an HTTP request: its values as JSON, the destination's templates
//! rendered over them, and the request sent with retries.
//!
//! Templates are minijinja (Jinja) over `row` (the row's values), `key`, `previous_key` (a
//! RENAMED row's old key), `change` (`new`, `changed`, `deleted`, `renamed`), `reason`,
//! `table` and `version`. A `${VAR}` in a template is read from the environment, but only in
//! the template's own text: it becomes a template variable, so a value in the data that looks
//! like `${HOME}` stays text and is never expanded.

use std::time::{Duration, Instant};

use minijinja::{Environment, UndefinedBehavior, Value};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::spec::secrets::{self, Secret};
use crate::spec::{ChangeKind, HttpPlan};

/// The longest wait a `Retry-After` is honoured with; a longer one counts as this.
const LONGEST_WAIT: Duration = Duration::from_secs(300);

/// `text` as minijinja source: each `${VAR}` a lookup of the secret, not text to expand.
fn source(text: &str) -> String {
    let mut out = text.to_string();
    for name in secrets::variables(text) {
        out = out.replace(
            &format!("${{{name}}}"),
            &format!("{{{{ secrets[{}] }}}}", Json::String(name.clone())),
        );
    }
    out
}

fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Whether `text` is a template that can be rendered: its problem, in words, if not.
pub fn check_template(text: &str) -> std::result::Result<(), String> {
    let env = environment();
    env.template_from_str(&source(text))
        .map(|_| ())
        .map_err(|e| format!("the template does not read: {}", e.detail().unwrap_or("")))
}

/// What one row becomes: the request's parts.
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Option<String>,
    pub idempotency_key: String,
}

/// A destination's templates, compiled once, and the secrets they read.
pub struct Templates<'s> {
    env: Environment<'s>,
    headers: Vec<(HeaderName, String)>,
    secrets: Map<String, Json>,
    hidden: Vec<Secret>,
}

/// The sources of a destination's templates, kept while its [`Templates`] use them.
pub struct Sources {
    named: Vec<(String, String)>,
}

impl Sources {
    pub fn of(plan: &HttpPlan) -> Sources {
        let mut named = Vec::new();
        for (kind, text) in plan.url.given() {
            named.push((format!("url {kind}"), source(text)));
        }
        for (kind, text) in plan.body.given() {
            named.push((format!("body {kind}"), source(text)));
        }
        for (header, text) in &plan.headers {
            named.push((format!("header {header}"), source(text)));
        }
        Sources { named }
    }
}

impl<'s> Templates<'s> {
    /// Compile `sources`; read the secrets `plan` names (an unset one is an error naming it).
    pub fn new(plan: &HttpPlan, sources: &'s Sources, destination: &str) -> Result<Templates<'s>> {
        let mut env = environment();
        for (name, text) in &sources.named {
            env.add_template(name, text)
                .map_err(|e| Error::Destination {
                    message: format!("{name}: the template does not read: {e}"),
                })?;
        }
        let mut secrets = Map::new();
        let mut hidden = Vec::new();
        let texts = (plan.url.given().map(|(_, t)| t))
            .chain(plan.body.given().map(|(_, t)| t))
            .chain(plan.headers.iter().map(|(_, t)| t.as_str()));
        for text in texts {
            for name in secrets::variables(text) {
                let what = format!("destination {destination}");
                let secret = secrets::expand(&format!("${{{name}}}"), &what)?;
                secrets.insert(name, Json::String(secret.expose().to_string()));
                hidden.push(secret);
            }
        }
        let headers = (plan.headers.iter())
            .filter_map(|(h, _)| Some((HeaderName::from_bytes(h.as_bytes()).ok()?, h.clone())))
            .collect();
        Ok(Templates {
            env,
            headers,
            secrets,
            hidden,
        })
    }

    /// `message` without a secret's value.
    pub fn redact(&self, message: &str) -> String {
        (self.hidden.iter()).fold(message.to_string(), |m, s| s.redact(&m))
    }

    fn render(&self, name: &str, context: &Value) -> std::result::Result<String, String> {
        let template = self.env.get_template(name).map_err(|e| e.to_string())?;
        template.render(context).map_err(|e| {
            let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
            self.redact(&format!("{name}: {}{detail}", e.kind()))
        })
    }

    /// The request for `row` (`None`: its change type is not sent), or why it cannot be made.
    pub fn request(
        &self,
        plan: &HttpPlan,
        row: &Row,
        idempotency_key: String,
    ) -> Option<std::result::Result<Request, String>> {
        let method = plan.method.of(row.kind)?;
        let kind = row.kind_name();
        let made = || {
            let context = Value::from_serialize(serde_json::json!({
                "row": row.values,
                "key": row.key,
                "previous_key": row.previous_key,
                "change": kind,
                "reason": row.reason,
                "table": row.table,
                "version": row.version,
                "secrets": self.secrets,
            }));
            let method =
                reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
            let url_kind = url_kind(plan, row.kind);
            let url = self.render(&format!("url {url_kind}"), &context)?;
            let body = match body_kind(plan, row.kind) {
                Some(k) => Some(self.render(&format!("body {k}"), &context)?),
                None if method == reqwest::Method::DELETE => None,
                None => Some(Json::Object(row.values.clone()).to_string()),
            };
            let mut headers = HeaderMap::new();
            if body.is_some() {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            for (header, name) in &self.headers {
                let value = self.render(&format!("header {name}"), &context)?;
                let value = HeaderValue::from_str(&value)
                    .map_err(|_| format!("header {name}: its value is not a header's text"))?;
                headers.insert(header.clone(), value);
            }
            Ok(Request {
                method,
                url,
                headers,
                body,
                idempotency_key,
            })
        };
        Some(made())
    }
}

fn url_kind(plan: &HttpPlan, kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Renamed if plan.url.renamed.is_none() => "changed",
        other => kind_name(other),
    }
}

fn body_kind(plan: &HttpPlan, kind: ChangeKind) -> Option<&'static str> {
    let name = match kind {
        ChangeKind::Renamed if plan.body.renamed.is_none() => "changed",
        other => kind_name(other),
    };
    plan.body.given().any(|(k, _)| k == name).then_some(name)
}

fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::New => "new",
        ChangeKind::Changed => "changed",
        ChangeKind::Deleted => "deleted",
        ChangeKind::Renamed => "renamed",
        ChangeKind::Unchanged => "unchanged",
    }
}

/// One changed row, its values as JSON.
pub struct Row {
    pub kind: ChangeKind,
    pub values: Map<String, Json>,
    pub key: Map<String, Json>,
    pub previous_key: Option<Map<String, Json>>,
    pub reason: Json,
    pub table: String,
    pub version: u64,
}

impl Row {
    fn kind_name(&self) -> &'static str {
        kind_name(self.kind)
    }

    /// The key as text for an `Idempotency-Key`: each value (a text as it is, another as
    /// JSON) percent-encoded, joined by `,`.
    pub fn key_text(&self) -> String {
        (self.key.values())
            .map(|v| {
                let text = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How a request ended for good.
pub enum Sent {
    /// The server took it (2xx; for DELETE also 404 and 410: the item is gone).
    Accepted,
    /// It was refused, or still failed after the retries: why, in words.
    Failed(String),
}

/// A request's pace: at most `rate` starts per second, across every request of a delivery.
pub struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    pub fn new(rate: Option<f64>) -> Pace {
        Pace {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep(self.next - now).await;
        }
        self.next = self.next.max(now) + interval;
    }
}

/// Send `request`, trying again on 429, 5xx, a timeout or a lost connection, up to
/// `plan.retries` times, waiting as `Retry-After` says or else doubling `plan.backoff`.
pub async fn send(
    client: &reqwest::Client,
    plan: &HttpPlan,
    pace: &mut Pace,
    request: &Request,
    templates: &Templates<'_>,
) -> Sent {
    let mut wait = plan.backoff;
    let mut attempt = 0;
    loop {
        pace.wait().await;
        let mut builder = client
            .request(request.method.clone(), &request.url)
            .headers(request.headers.clone())
            .header("Idempotency-Key", &request.idempotency_key);
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let (again, why, retry_after) = match builder.send().await {
            Ok(response) => {
                let status = response.status();
                let gone = request.method == reqwest::Method::DELETE
                    && matches!(status.as_u16(), 404 | 410);
                if status.is_success() || gone {
                    return Sent::Accepted;
                }
                let retry_after = (response.headers().get(RETRY_AFTER))
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(LONGEST_WAIT));
                let again = status.as_u16() == 429 || status.is_server_error();
                let body = response.text().await.unwrap_or_default();
                let excerpt: String = body.chars().take(300).collect();
                (
                    again,
                    format!("the server answered {status}: {excerpt}"),
                    retry_after,
                )
            }
            Err(e) if e.is_timeout() => (
                true,
                format!("no answer within {} ms", plan.timeout.as_millis()),
                None,
            ),
            Err(e) => (true, format!("the request failed: {}", cause(&e)), None),
        };
        if !again || attempt >= plan.retries {
            let tries = match attempt {
                0 => String::new(),
                n => format!(" (after {n} retries)"),
            };
            let url = templates.redact(&request.url);
            return Sent::Failed(
                templates.redact(&format!("{} {url}: {why}{tries}", request.method)),
            );
        }
        attempt += 1;
        let pause = retry_after.unwrap_or(wait);
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// The innermost cause of a request's failure, in its own words.
fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}
