//! A stand-in for kube-apiserver, which cannot be installed here: an HTTP/1.1 server on
//! 127.0.0.1 that speaks the real Kubernetes REST and watch wire format for the objects a
//! node agent touches — nodes (and `nodes/<n>/status`), leases, pods (cluster-wide list and
//! watch with `fieldSelector`, `pods/<p>/status`, delete with DeleteOptions), configmaps,
//! secrets, persistentvolumeclaims (namespaced) and persistentvolumes (cluster-scoped; a
//! test changes one with [`ApiServer::update`], as the PV controller or an admin would), and
//! events posted about pods. Objects are stored as the JSON they were sent as and given uid,
//! resourceVersion and creationTimestamp as the API server does; errors are `Status`
//! objects; watch responses are chunked lines of `{"type": ..., "object": ...}`. Every
//! request is recorded (method, path, query, content type, body) for the test to assert on.
//!
//! Patches are applied as JSON merge patches (RFC 7386) whatever their content type: the
//! strategic merge of the real server differs only for lists with merge keys, and the
//! agent sends those lists whole. A pod status patch with `metadata.uid` is refused with
//! 409 on a uid mismatch, as the real server's precondition does; so is a lease update with
//! a stale resourceVersion and a pod delete whose uid precondition fails.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    /// The JSON body (Null when there was none).
    pub body: Value,
    /// The status code answered.
    pub status: u16,
    pub at: Instant,
}

impl Recorded {
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

struct Watcher {
    node: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    version: u64,
    next_uid: u64,
    /// Objects by collection path, then name.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// Pod events with the version they made, for watches that start in the past.
    pod_events: Vec<(u64, &'static str, Value)>,
    /// Versions up to this one are compacted away: a watch from them gets 410 Gone.
    compacted: u64,
    watchers: Vec<Watcher>,
    requests: Vec<Recorded>,
    connections: Vec<tokio::task::AbortHandle>,
}

/// The running server; dropping it closes every connection.
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.accept.abort();
        let mut state = self.state.lock().unwrap();
        state.watchers.clear();
        for c in state.connections.drain(..) {
            c.abort();
        }
    }
}

const PODS: &str = "/api/v1/pods";

impl ApiServer {
    pub async fn start() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { version: 100, ..Default::default() }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                });
                let conn = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
                let mut s = shared.lock().unwrap();
                s.connections.retain(|c| !c.is_finished());
                s.connections.push(conn.abort_handle());
            }
        });
        ApiServer { addr, state, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig naming this server (plain HTTP, a bearer token it ignores).
    pub fn kubeconfig(&self, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: {user}\n  user:\n    token: test-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: {user}\ncurrent-context: fake\n",
            self.url()
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// A stored object, by its path (`/api/v1/nodes/n`).
    pub fn get(&self, path: &str) -> Option<Value> {
        let (collection, name) = path.rsplit_once('/')?;
        self.state.lock().unwrap().objects.get(collection)?.get(name).cloned()
    }

    /// Stores an object as if created through the API (uid, resourceVersion assigned);
    /// pods also go out to watches as ADDED. Returns the stored object.
    pub fn create(&self, collection: &str, object: Value) -> Value {
        let mut s = self.state.lock().unwrap();
        let (_, stored) = s.create(collection, object).expect("create");
        stored
    }

    /// Replaces an object's field in place (a change made by someone else), e.g. a Node's
    /// labels; pods go out to watches as MODIFIED.
    pub fn update(&self, path: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut s = self.state.lock().unwrap();
        let (collection, name) = path.rsplit_once('/').unwrap();
        let mut object = s.objects.get(collection).and_then(|c| c.get(name)).cloned().unwrap_or_else(|| panic!("no {path}"));
        change(&mut object);
        s.store(collection, name, object, "MODIFIED")
    }

    /// Marks a pod for deletion as `kubectl delete` does: deletionTimestamp and a grace
    /// period, a MODIFIED event; the node agent finishes the deletion.
    pub fn mark_deleting(&self, namespace: &str, name: &str) -> Value {
        self.update(&format!("/api/v1/namespaces/{namespace}/pods/{name}"), |pod| {
            // The API server's default for a graceful delete: the pod's own grace period.
            let grace = pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
            pod["metadata"]["deletionTimestamp"] = json!(now());
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        })
    }

    /// Removes a pod at once (a forced delete): a DELETED event.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.remove(&format!("/api/v1/namespaces/{namespace}/pods"), name);
    }

    /// Compacts history and ends every watch with a 410 Gone ERROR event, as the API server
    /// does when a watcher falls behind; watches must list again.
    pub fn expire_watches(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.version;
        let gone = json!({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")});
        let n = s.watchers.len();
        for w in s.watchers.drain(..) {
            let _ = w.tx.send(Bytes::from(format!("{gone}\n")));
        }
        n
    }

    /// Open pod watches.
    pub fn watchers(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.watchers.retain(|w| !w.tx.is_closed());
        s.watchers.len()
    }
}

/// RFC 3339 in UTC with whole seconds, as metav1.Time is written.
fn now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    k8s_openapi::jiff::Timestamp::from_second(secs as i64).unwrap().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// RFC 7386: objects merge key by key, null deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => {
            *target = match patch.as_object() {
                Some(_) => {
                    let mut fresh = json!({});
                    merge(&mut fresh, patch);
                    fresh
                }
                None => patch.clone(),
            }
        }
    }
}

type Answer = (StatusCode, Value);

fn error(code: u16, reason: &str, message: impl Into<String>) -> Answer {
    (StatusCode::from_u16(code).unwrap(), status_body(code, reason, &message.into()))
}

impl State {
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn create(&mut self, collection: &str, mut object: Value) -> Result<Answer, Answer> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(error(422, "Invalid", "metadata.name: Required value"));
        }
        if self.objects.get(collection).is_some_and(|c| c.contains_key(&name)) {
            return Err(error(409, "AlreadyExists", format!("{collection}/{name} already exists")));
        }
        self.next_uid += 1;
        object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.next_uid));
        object["metadata"]["creationTimestamp"] = json!(now());
        if let Some(ns) = collection.strip_prefix("/api/v1/namespaces/").and_then(|r| r.split('/').next()) {
            object["metadata"]["namespace"] = json!(ns);
        }
        if let Some(ns) = collection.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/").and_then(|r| r.split('/').next()) {
            object["metadata"]["namespace"] = json!(ns);
        }
        let stored = self.store(collection, &name, object, "ADDED");
        Ok((StatusCode::CREATED, stored))
    }

    /// Stores with a new resourceVersion; pods go out to watchers.
    fn store(&mut self, collection: &str, name: &str, mut object: Value, event: &'static str) -> Value {
        let version = self.bump();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        self.objects.entry(collection.to_string()).or_default().insert(name.to_string(), object.clone());
        if collection.ends_with("/pods") {
            self.pod_event(version, event, object.clone());
        }
        object
    }

    fn remove(&mut self, collection: &str, name: &str) -> Option<Value> {
        let mut object = self.objects.get_mut(collection)?.remove(name)?;
        let version = self.bump();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if collection.ends_with("/pods") {
            self.pod_event(version, "DELETED", object.clone());
        }
        Some(object)
    }

    fn pod_event(&mut self, version: u64, kind: &'static str, object: Value) {
        let node = object["spec"]["nodeName"].as_str().map(String::from);
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
        self.watchers.retain(|w| if w.node.is_none() || w.node == node { w.tx.send(line.clone()).is_ok() } else { !w.tx.is_closed() });
        self.pod_events.push((version, kind, object));
    }

    fn pods_on(&self, node: Option<&str>) -> Vec<Value> {
        let mut items = Vec::new();
        for (collection, objects) in &self.objects {
            if collection.ends_with("/pods") {
                items.extend(objects.values().filter(|p| node.is_none() || p["spec"]["nodeName"].as_str() == node).cloned());
            }
        }
        items
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn full(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

async fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let params = query(req.uri().query());
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    let mut s = state.lock().unwrap();
    let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let (code, response) = if method == Method::GET && path == PODS && watch {
        let (code, stream) = s.watch(&params);
        (code, stream)
    } else {
        let answer = route(&mut s, &method, &path, &params, &body).unwrap_or_else(|e| e);
        (answer.0, full(answer.0, &answer.1))
    };
    s.requests.push(Recorded {
        method: method.to_string(),
        path,
        query: params,
        content_type,
        body,
        status: code.as_u16(),
        at: Instant::now(),
    });
    response
}

impl State {
    /// A watch: past events after `resourceVersion`, then live ones, as chunked lines.
    fn watch(&mut self, params: &BTreeMap<String, String>) -> (StatusCode, Response<Body>) {
        let node = params.get("fieldSelector").and_then(|f| f.strip_prefix("spec.nodeName=")).map(String::from);
        let from: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        if from < self.compacted {
            let gone = json!({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")});
            let _ = tx.send(Bytes::from(format!("{gone}\n")));
        } else {
            for (version, kind, object) in &self.pod_events {
                if *version > from && (node.is_none() || object["spec"]["nodeName"].as_str() == node.as_deref()) {
                    let _ = tx.send(Bytes::from(format!("{}\n", json!({"type": kind, "object": object}))));
                }
            }
            self.watchers.push(Watcher { node, tx });
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx)) });
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap();
        (StatusCode::OK, response)
    }
}

/// Which collection and object a path names: `(collection, name, subresource)`.
fn split(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (base, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("/api/v1".to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("/apis/{group}/{version}"), rest),
        _ => return None,
    };
    let (prefix, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (format!("{base}/namespaces/{ns}"), rest),
        _ => (base, rest),
    };
    match rest {
        [resource] => Some((format!("{prefix}/{resource}"), None, None)),
        [resource, name] => Some((format!("{prefix}/{resource}"), Some(name.to_string()), None)),
        [resource, name, sub] => Some((format!("{prefix}/{resource}"), Some(name.to_string()), Some(sub.to_string()))),
        _ => None,
    }
}

fn route(s: &mut State, method: &Method, path: &str, params: &BTreeMap<String, String>, body: &Value) -> Result<Answer, Answer> {
    if *method == Method::GET && path == PODS {
        let node = params.get("fieldSelector").and_then(|f| f.strip_prefix("spec.nodeName="));
        let items = s.pods_on(node);
        let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": s.version.to_string()}, "items": items});
        return Ok((StatusCode::OK, list));
    }
    let (collection, name, sub) = split(path).ok_or_else(|| error(404, "NotFound", format!("no route {path}")))?;
    let stored = name.as_ref().and_then(|n| s.objects.get(&collection).and_then(|c| c.get(n)).cloned());
    let not_found = || error(404, "NotFound", format!("{collection}/{} not found", name.clone().unwrap_or_default()));
    match (method.clone(), name.clone(), sub.as_deref()) {
        (Method::GET, Some(_), None) => stored.map(|o| (StatusCode::OK, o)).ok_or_else(not_found),
        (Method::POST, None, None) => s.create(&collection, body.clone()),
        (Method::PUT, Some(name), None) => {
            let old = stored.ok_or_else(not_found)?;
            if body["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                return Err(error(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again"));
            }
            let mut object = body.clone();
            object["metadata"]["uid"] = old["metadata"]["uid"].clone();
            object["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            Ok((StatusCode::OK, s.store(&collection, &name, object, "MODIFIED")))
        }
        (Method::PATCH, Some(name), None | Some("status")) => {
            let mut object = stored.ok_or_else(not_found)?;
            if let Some(uid) = body["metadata"]["uid"].as_str()
                && object["metadata"]["uid"].as_str() != Some(uid)
            {
                return Err(error(409, "Conflict", format!("Precondition failed: UID in precondition: {uid}")));
            }
            let mut patch = body.clone();
            // The status subresource takes only status; the main resource keeps status.
            match sub {
                Some(_) => patch = json!({"status": body["status"].clone()}),
                None => {
                    if let Some(p) = patch.as_object_mut() {
                        p.remove("status");
                    }
                }
            }
            merge(&mut object, &patch);
            Ok((StatusCode::OK, s.store(&collection, &name, object, "MODIFIED")))
        }
        (Method::DELETE, Some(name), None) => {
            let old = stored.ok_or_else(not_found)?;
            if let Some(uid) = body["preconditions"]["uid"].as_str()
                && old["metadata"]["uid"].as_str() != Some(uid)
            {
                return Err(error(409, "Conflict", format!("Precondition failed: UID in precondition: {uid}")));
            }
            let removed = s.remove(&collection, &name).ok_or_else(not_found)?;
            Ok((StatusCode::OK, removed))
        }
        _ => Err(error(405, "MethodNotAllowed", format!("{method} {path}"))),
    }
}

/// Waits until `check` finds what it wants in the server's requests.
pub async fn wait_for<T>(server: &ApiServer, what: &str, timeout: Duration, check: impl Fn(&[Recorded]) -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check(&server.requests()) {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not seen in {timeout:?}; requests:\n{}", summary(&server.requests()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line per request, for failure messages.
pub fn summary(requests: &[Recorded]) -> String {
    requests.iter().map(|r| format!("{} {} {:?} -> {}", r.method, r.path, r.query, r.status)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_and_paths() {
        let mut v = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge(&mut v, &json!({"a": {"c": [3], "e": "x"}, "d": null}));
        assert_eq!(v, json!({"a": {"b": 1, "c": [3], "e": "x"}}));
        assert_eq!(split("/api/v1/nodes/n/status"), Some(("/api/v1/nodes".into(), Some("n".into()), Some("status".into()))));
        assert_eq!(split("/api/v1/namespaces/t/pods/p"), Some(("/api/v1/namespaces/t/pods".into(), Some("p".into()), None)));
        assert_eq!(
            split("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"),
            Some(("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases".into(), None, None))
        );
        assert_eq!(split("/api/v1/persistentvolumes/pv1"), Some(("/api/v1/persistentvolumes".into(), Some("pv1".into()), None)));
        assert_eq!(
            split("/api/v1/namespaces/t/persistentvolumeclaims/c"),
            Some(("/api/v1/namespaces/t/persistentvolumeclaims".into(), Some("c".into()), None))
        );
        assert_eq!(decode("spec.nodeName%3Dn1"), "spec.nodeName=n1");
        assert!(now().ends_with('Z') && now().len() == 20, "{}", now());
    }
}
