//! Sending one request: paced across every request of a delivery, tried again on 429, 5xx, a
//! timeout or a lost connection, waiting as `Retry-After` says or else with a doubling backoff.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;

use super::request::{Request, Templates};
use crate::spec::HttpPlan;

/// The longest wait a `Retry-After` is honoured with; a longer one counts as this.
const LONGEST_WAIT: Duration = Duration::from_secs(300);

/// The longest wait the doubling backoff grows to.
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);

/// How much of a refusing response's body a message and a dead letter keep.
const RESPONSE_EXCERPT: usize = 2000;

/// How a request ended.
pub enum Sent {
    /// The server took it (2xx; for DELETE also 404 and 410: the item is gone); its body.
    Accepted(String),
    /// The server refused it for good (a 4xx other than 408, 409 and 429), or still answered 5xx
    /// after the retries: the row's own failure.
    Refused {
        status: u16,
        response: String,
        why: String,
    },
    /// No answer (timeouts, lost connections) or still 429 after the retries: the server, not
    /// the row, is the trouble, so delivery stops and sends the row again later.
    Unreachable(String),
}

/// The pace of a delivery's requests: at most `rate` starts per second, however many are in
/// flight.
pub struct Pace {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pace {
    pub fn new(rate: Option<f64>) -> Pace {
        Pace {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Wait for this request's turn: each takes the next free start time.
    async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + interval;
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// What one try came to.
enum Try {
    Done(Sent),
    Again {
        why: String,
        retry_after: Option<Duration>,
        refused: Option<(u16, String)>,
    },
}

/// Send `request`, up to `plan.retries` times again while the server answers 429 or 5xx, does
/// not answer in time or drops the connection.
pub async fn send(
    client: &reqwest::Client,
    plan: &HttpPlan,
    pace: &Pace,
    request: &Request,
    templates: &Templates<'_>,
) -> Sent {
    let mut wait = plan.backoff;
    let mut attempt = 0;
    loop {
        pace.wait().await;
        let (why, retry_after, refused) = match try_once(client, plan, request).await {
            Try::Done(sent) => return redacted(sent, templates),
            Try::Again {
                why,
                retry_after,
                refused,
            } => (why, retry_after, refused),
        };
        if attempt >= plan.retries {
            let tries = match attempt {
                0 => String::new(),
                n => format!(" (after {n} retries)"),
            };
            let url = templates.redact(&request.url);
            let why = format!("{} {url}: {why}{tries}", request.method);
            let sent = match refused {
                Some((status, response)) if status >= 500 => Sent::Refused {
                    status,
                    response,
                    why,
                },
                _ => Sent::Unreachable(why),
            };
            return redacted(sent, templates);
        }
        attempt += 1;
        tokio::time::sleep(retry_after.unwrap_or(wait)).await;
        wait = (wait * 2).min(LONGEST_BACKOFF);
    }
}

async fn try_once(client: &reqwest::Client, plan: &HttpPlan, request: &Request) -> Try {
    let mut builder = client
        .request(request.method.clone(), &request.url)
        .headers(request.headers.clone())
        .header("Idempotency-Key", &request.idempotency_key);
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(e) => {
            let why = match e.is_timeout() {
                true => format!("no answer within {} ms", plan.timeout.as_millis()),
                false => format!("the request failed: {}", cause(&e)),
            };
            let (retry_after, refused) = (None, None);
            return Try::Again {
                why,
                retry_after,
                refused,
            };
        }
    };
    let status = response.status();
    let gone = request.method == reqwest::Method::DELETE && matches!(status.as_u16(), 404 | 410);
    let retry_after = (response.headers().get(RETRY_AFTER))
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(LONGEST_WAIT));
    let body = match response.text().await {
        Ok(body) => body,
        Err(e) if status.is_success() || gone => {
            return Try::Again {
                why: format!("the answer was cut off: {}", cause(&e)),
                retry_after: None,
                refused: None,
            };
        }
        Err(_) => String::new(),
    };
    if status.is_success() || gone {
        return Try::Done(Sent::Accepted(body));
    }
    let response: String = body.chars().take(RESPONSE_EXCERPT).collect();
    let why = format!("the server answered {status}: {response}");
    let code = status.as_u16();
    // 409: the server is still busy with an earlier try of the same Idempotency-Key.
    match code == 429 || code == 408 || code == 409 || status.is_server_error() {
        true => Try::Again {
            why,
            retry_after,
            refused: Some((code, response)),
        },
        false => Try::Done(Sent::Refused {
            status: code,
            response,
            why: format!("{} {}: {why}", request.method, request.url),
        }),
    }
}

/// `sent` with no secret's value in its words.
fn redacted(sent: Sent, templates: &Templates<'_>) -> Sent {
    match sent {
        Sent::Accepted(body) => Sent::Accepted(body),
        Sent::Refused {
            status,
            response,
            why,
        } => Sent::Refused {
            status,
            response: templates.redact(&response),
            why: templates.redact(&why),
        },
        Sent::Unreachable(why) => Sent::Unreachable(templates.redact(&why)),
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
