//! A work-management board's API, in the test binary: items created by `POST /items` (answered
//! with `{"data": {"id": ...}}`), changed by `PATCH /items/{id}`, removed by `DELETE
//! /items/{id}`, behind a bearer token. It honours `Idempotency-Key` as a serious API does (a
//! key it has applied is answered again, not applied twice), records every request and every
//! application, refuses the SKUs it is told to (422), and fails on purpose at the request
//! numbers it is given: 429 with `Retry-After`, 500, an answer later than the client waits
//! (after applying), or a connection dropped after applying.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

/// A way a request fails on purpose.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// 429 Too Many Requests, `Retry-After: 1`, nothing applied.
    TooMany,
    /// 500, nothing applied.
    Failing,
    /// Applied, then answered after the client has given up waiting.
    LateAnswer,
    /// Applied, then the connection is dropped before the answer's body.
    Dropped,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub idempotency_key: String,
    pub authorization: String,
    pub body: String,
}

/// One change the server applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Applied {
    pub method: String,
    pub idempotency_key: String,
    /// The item's body after the change (`null` for a delete).
    pub body: String,
}

#[derive(Default)]
pub struct Board {
    /// The items, by the id the server gave them.
    pub items: BTreeMap<String, Json>,
    pub received: Vec<Received>,
    pub applied: Vec<Applied>,
    /// SKUs whose creation or change is refused with 422.
    pub refused_skus: HashSet<String>,
    /// Faults by request number (from 0), each used once.
    pub faults: HashMap<usize, Fault>,
    /// How long each request takes before it is handled.
    pub delay: Duration,
    answers: HashMap<String, (u16, String)>,
    next_id: u64,
    token: String,
}

/// The server, running on a loopback port of its own until the test ends.
pub struct BoardServer {
    pub address: SocketAddr,
    board: Arc<Mutex<Board>>,
}

impl BoardServer {
    /// Start a board that takes requests with `Authorization: Bearer <token>`.
    pub fn start(token: &str) -> BoardServer {
        let board = Arc::new(Mutex::new(Board {
            token: format!("Bearer {token}"),
            ..Board::default()
        }));
        let shared = board.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the test server");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let address = rx.recv().expect("the test server's address");
        BoardServer { address, board }
    }

    pub fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The items by SKU, each as its JSON body.
    pub fn items_by_sku(&self) -> BTreeMap<String, Json> {
        (self.board().items.values())
            .map(|item| (item["sku"].as_str().unwrap_or("").to_string(), item.clone()))
            .collect()
    }
}

type Shared = Arc<Mutex<Board>>;

async fn handle(
    State(board): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| {
        (headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let delay = board.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (fault, (status, answer)) = {
        let mut board = board.lock().unwrap();
        let number = board.received.len();
        let received = Received {
            method: method.to_string(),
            path: uri.path().to_string(),
            idempotency_key: header("idempotency-key"),
            authorization: header("authorization"),
            body: body.clone(),
        };
        board.received.push(received.clone());
        if received.authorization != board.token {
            return (StatusCode::UNAUTHORIZED, "a bearer token is needed").into_response();
        }
        match board.faults.remove(&number) {
            Some(Fault::TooMany) => {
                let headers = [("Retry-After", "1")];
                return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down").into_response();
            }
            Some(Fault::Failing) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
            }
            fault => (fault, board.answer(&received)),
        }
    };
    let status = StatusCode::from_u16(status).unwrap();
    match fault {
        Some(Fault::LateAnswer) => tokio::time::sleep(Duration::from_secs(3)).await,
        Some(Fault::Dropped) => {
            let cut = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
            });
            return (status, Body::from_stream(cut)).into_response();
        }
        _ => {}
    }
    (status, answer).into_response()
}

impl Board {
    /// The answer to `request`: the stored one for an applied `Idempotency-Key`, else the
    /// change applied (stored when it succeeded).
    fn answer(&mut self, request: &Received) -> (u16, String) {
        let key = &request.idempotency_key;
        if key.is_empty() {
            return (400, "an Idempotency-Key header is needed".into());
        }
        if let Some(answer) = self.answers.get(key) {
            return answer.clone();
        }
        let answer = self.apply(request);
        if answer.0 < 300 {
            self.answers.insert(key.clone(), answer.clone());
        }
        answer
    }

    fn apply(&mut self, request: &Received) -> (u16, String) {
        let id = request.path.strip_prefix("/items/").map(str::to_string);
        let item: Option<Json> = serde_json::from_str(&request.body).ok();
        let sku = (item.as_ref())
            .and_then(|i| i["sku"].as_str())
            .map(str::to_string);
        if sku.as_ref().is_some_and(|s| self.refused_skus.contains(s)) {
            return (
                422,
                json!({"error": "this item is not accepted"}).to_string(),
            );
        }
        let (status, id, after) = match (request.method.as_str(), request.path.as_str(), id) {
            ("POST", "/items", _) => {
                let Some(item) = item.filter(|_| sku.is_some()) else {
                    return (400, "the body is not an item with a sku".into());
                };
                self.next_id += 1;
                let id = format!("it{}", self.next_id);
                self.items.insert(id.clone(), item.clone());
                (201, id, item)
            }
            ("PATCH", _, Some(id)) if self.items.contains_key(&id) => {
                let Some(item) = item.filter(|_| sku.is_some()) else {
                    return (400, "the body is not an item with a sku".into());
                };
                self.items.insert(id.clone(), item.clone());
                (200, id, item)
            }
            ("DELETE", _, Some(id)) if self.items.contains_key(&id) => {
                self.items.remove(&id);
                (204, id, Json::Null)
            }
            _ => return (404, "no such item".into()),
        };
        self.applied.push(Applied {
            method: request.method.clone(),
            idempotency_key: request.idempotency_key.clone(),
            body: after.to_string(),
        });
        (status, json!({"data": {"id": id}}).to_string())
    }
}
