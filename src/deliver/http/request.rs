//! One changed row as an HTTP request: its values as JSON, the destination's templates
//! rendered over them, and the request sent with retries.
//!
//! Templates are minijinja (Jinja) over `row` (the row's values), `key`, `previous_key` (a
//! RENAMED row's old key), `change` (`new`, `changed`, `deleted`, `renamed`), `reason`,
//! `table`, `version` and `remote` (what `remember:` kept from earlier responses for the
//! key, a null until then). A `${VAR}` in a template is read from the environment, but only in
//! the template's own text: it becomes a template variable, so a value in the data that looks
//! like `${HOME}` stays text and is never expanded.

use minijinja::{Environment, UndefinedBehavior, Value};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::spec::secrets::{self, Secret};
use crate::spec::{ChangeKind, HttpPlan};

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
    // A null renders as nothing (`/items/{{ remote.id }}` before the id is known), not as
    // `none`; `| tojson` writes a JSON null.
    env.set_formatter(|out, state, value| match value.is_none() {
        true => Ok(()),
        false => minijinja::escape_formatter(out, state, value),
    });
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
        remote: &Map<String, Json>,
    ) -> Option<std::result::Result<Request, String>> {
        let method = plan.method.of(row.kind)?;
        let kind = row.kind_name();
        if let Some(why) = unknown_remote(plan, row, remote) {
            return Some(Err(why));
        }
        let made = || {
            let context = Value::from_serialize(serde_json::json!({
                "row": row.values,
                "key": row.key,
                "previous_key": row.previous_key,
                "change": kind,
                "reason": row.reason,
                "table": row.table,
                "version": row.version,
                "remote": remote,
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
            if let Some(body) = &body
                && headers
                    .get(CONTENT_TYPE)
                    .is_some_and(|t| t == "application/json")
            {
                not_json(body, body_kind(plan, row.kind))?;
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

/// Why a body sent as JSON is not JSON, if it is not: most often a value written as
/// `{{ row.x }}`, which renders a null as nothing and a text without quotes.
fn not_json(body: &str, template: Option<&str>) -> std::result::Result<(), String> {
    let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(body) else {
        return Ok(());
    };
    // The body itself is not shown: a `${VAR}` may have put a secret in it.
    Err(format!(
        "body {}: it is sent as JSON but is not JSON (line {}, column {}); write each value as `{{{{ row.x | tojson }}}}`, which quotes a text and writes a null, or give a Content-Type header of another kind",
        template.unwrap_or("(the row's values)"),
        e.line(),
        e.column()
    ))
}

/// Why `row` cannot be addressed yet: its URL reads a `remote` field no answer has given for
/// its key (rendered empty, a DELETE to `/items/` would pass for done).
fn unknown_remote(plan: &HttpPlan, row: &Row, remote: &Map<String, Json>) -> Option<String> {
    let url = plan.url.of(row.kind)?;
    let (name, pointer) = plan.remember.iter().find(|(name, _)| {
        remote.get(name.as_str()).is_none_or(Json::is_null)
            && (url.contains(&format!("remote.{name}")) || url.contains("remote["))
    })?;
    Some(format!(
        "its URL needs remote.{name}, which no answer of the server has given for this key yet (remember: {name}: {pointer}); was the row created by an earlier delivery?"
    ))
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    #[serde(rename = "change", with = "change_name")]
    pub kind: ChangeKind,
    #[serde(rename = "row")]
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

    /// The key as text (see [`Row::key_text`]) it had before: a RENAMED row's previous key.
    pub fn previous_key_text(&self) -> Option<String> {
        self.previous_key.as_ref().map(key_text)
    }

    /// The key as text for an `Idempotency-Key`: each value (a text as it is, another as
    /// JSON) percent-encoded, joined by `,`.
    pub fn key_text(&self) -> String {
        key_text(&self.key)
    }

    /// The key for messages: `sku=AB 1`, or `store=3, sku=AB 1` (a text as it is, another
    /// value as JSON).
    pub fn key_shown(&self) -> String {
        (self.key.iter())
            .map(|(column, value)| match value {
                Json::String(text) => format!("{column}={text}"),
                other => format!("{column}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn key_text(key: &Map<String, Json>) -> String {
    (key.values())
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

/// A change type as its canonical label (`NEW`, `CHANGED`, …) in a dead letter.
mod change_name {
    use crate::spec::ChangeKind;

    pub fn serialize<S: serde::Serializer>(kind: &ChangeKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.canonical())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ChangeKind, D::Error> {
        let name: String = serde::Deserialize::deserialize(d)?;
        match name.as_str() {
            "NEW" => Ok(ChangeKind::New),
            "CHANGED" => Ok(ChangeKind::Changed),
            "DELETED" => Ok(ChangeKind::Deleted),
            "RENAMED" => Ok(ChangeKind::Renamed),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a change type (NEW, CHANGED, DELETED, RENAMED)"
            ))),
        }
    }
}
