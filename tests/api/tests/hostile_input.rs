//! Hostile input against every endpoint of the OpenAPI document: malformed and mistyped bodies, missing
//! and unknown fields, oversized and deeply nested bodies, huge numbers, bad paging values, invalid
//! UTF-8, unicode edge cases, SQL-looking strings, ids of the wrong shape, wrong content types and
//! repeated query parameters.
//!
//! Every answer must be a 4xx with the contract's error body (never a 500, never the host's plain-text
//! 500 of a trapped instance), and nothing may be written: after the whole table the row counts are
//! those the valid setup left, and the service still answers normally.
//!
//! Requests go over a raw TCP connection, so the bytes on the wire are exactly the case's (no URL
//! normalisation, invalid UTF-8 where a client library would refuse it, a chunked body of unknown
//! length); the 10 MB body with a `Content-Length` also goes through reqwest, as a client sends it.

use api_tests::{TestApp, all_scopes, parts, spawn_app, token};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The workspace of the setup's objects and of the token the table uses.
const WORKSPACE: &str = "ws_hostile";
const WORKER: &str = "w_hostile";
/// 10 MB, far beyond the 64 KiB limit.
const HUGE_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Stands for a field's value in a body until the hostile bytes are spliced in.
const PLACEHOLDER: &str = "__HOSTILE__";
/// Requests of the table in flight at once.
const PARALLEL: usize = 16;

// ------------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ------------------------------------------------------------------------------------------------

/// How a request's body is framed on the wire. Bodies are shared: the table holds a 10 MB one per
/// endpoint and framing.
#[derive(Clone)]
enum Framing {
    /// With `Content-Length`.
    Sized(Arc<[u8]>),
    /// `Transfer-Encoding: chunked`, in 64 KiB chunks: the server cannot know the size up front.
    Chunked(Arc<[u8]>),
}

/// The one 10 MB body every oversized case sends.
fn huge_body() -> Arc<[u8]> {
    static HUGE: OnceLock<Arc<[u8]>> = OnceLock::new();
    Arc::clone(HUGE.get_or_init(|| bytes_of(HUGE_BODY_BYTES).into()))
}

/// One hostile request.
#[derive(Clone)]
struct Case {
    label: String,
    method: &'static str,
    /// The request target, byte for byte (may hold what a URL type would refuse).
    target: Vec<u8>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Option<Framing>,
    /// The status the contract gives this input.
    expected: u16,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Sends `case` on a fresh connection and reads the answer until the server closes. The body is
/// written while the answer is read: a server that refuses a body early must not block on it.
async fn send_raw(address: &str, bearer: &str, case: &Case) -> Answer {
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let mut head = Vec::new();
    head.extend_from_slice(case.method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(&case.target);
    head.extend_from_slice(b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    head.extend_from_slice(format!("authorization: Bearer {bearer}\r\n").as_bytes());
    if let Some(content_type) = case.content_type {
        head.extend_from_slice(format!("content-type: {content_type}\r\n").as_bytes());
    }
    for (name, value) in &case.headers {
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let body = case.body.clone();
    match &body {
        Some(Framing::Sized(bytes)) => {
            head.extend_from_slice(format!("content-length: {}\r\n", bytes.len()).as_bytes())
        }
        Some(Framing::Chunked(_)) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => head.extend_from_slice(b"content-length: 0\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    let writing = tokio::spawn(async move {
        writer.write_all(&head).await?;
        match body {
            Some(Framing::Sized(bytes)) => writer.write_all(&bytes).await?,
            Some(Framing::Chunked(bytes)) => {
                for chunk in bytes.chunks(64 * 1024) {
                    writer
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    writer.write_all(chunk).await?;
                    writer.write_all(b"\r\n").await?;
                }
                writer.write_all(b"0\r\n\r\n").await?;
            }
            None => {}
        }
        writer.flush().await?;
        // Keep the write half open until the server closes: dropping it would half-close the
        // connection under a server still answering.
        std::future::pending::<()>().await;
        std::io::Result::Ok(())
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut raw)).await;
    writing.abort();
    let label = &case.label;
    match read {
        Ok(Ok(_)) => {}
        // A reset after the answer arrived (the server closed with the rest of our body unread).
        Ok(Err(e)) if !raw.is_empty() => eprintln!("{label}: read ended with {e}"),
        Ok(Err(e)) => panic!("{label}: no answer: {e}"),
        Err(_) => panic!("{label}: no answer within 20 s"),
    }
    parse_answer(&raw).unwrap_or_else(|| {
        panic!(
            "{label}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// The contract's error code (§1) for each status the table expects.
fn code_of(status: u16) -> &'static str {
    match status {
        400 => "BAD_REQUEST",
        404 => "NOT_FOUND",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        422 => "VALIDATION_FAILED",
        _ => panic!("the table expects no {status}"),
    }
}

/// Whether a 422's details are `{"fields": [{"field", "message"}, …]}` with at least one field.
fn names_fields(details: &Value) -> bool {
    details["fields"].as_array().is_some_and(|fields| {
        !fields.is_empty()
            && fields
                .iter()
                .all(|f| f["field"].is_string() && f["message"].is_string())
    })
}

/// Checks an answer is the case's status with the contract's error body: `detail` equal to
/// `error.message`, the status's `error.code`, an object `error.details` (naming the fields of a
/// 422), as JSON.
fn check(case: &Case, status: u16, content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
    let label = &case.label;
    let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
    if status != case.expected {
        return Err(format!(
            "{label}: expected {}, got {status}: {text}",
            case.expected
        ));
    }
    let json: Value =
        serde_json::from_slice(body).map_err(|_| format!("{label}: body is not JSON: {text}"))?;
    let shaped = json["detail"].is_string()
        && json["detail"] == json["error"]["message"]
        && json["error"]["details"].is_object();
    if !shaped {
        return Err(format!("{label}: not the contract's error body: {text}"));
    }
    let code = &json["error"]["code"];
    if *code != code_of(status) {
        return Err(format!(
            "{label}: {status} must be {}, got {code}",
            code_of(status)
        ));
    }
    if status == 422 && !names_fields(&json["error"]["details"]) {
        return Err(format!("{label}: details name no field: {text}"));
    }
    if !content_type.is_some_and(|ct| ct.starts_with("application/json")) {
        return Err(format!("{label}: content type {content_type:?}"));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The table
// ------------------------------------------------------------------------------------------------

/// What a body field holds, which decides the hostile values it gets.
#[derive(Clone, Copy)]
enum Kind {
    /// An id (`[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}`).
    Id,
    /// Text of `min..=max` characters.
    Text { min: usize, max: usize },
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A JSON object (`metadata`, `result`).
    Object,
    /// A value from a fixed set of words (`scope`, `grant_type`).
    Word,
}

struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn field(name: &'static str, kind: Kind, required: bool) -> Field {
    Field {
        name,
        kind,
        required,
    }
}

const REASON: Kind = Kind::Text { min: 0, max: 1000 };
const DEPTH: Kind = Kind::Int { min: 0, max: 5 };
const WORKER_COUNT: Kind = Kind::Int { min: 1, max: 10 };

/// What a query parameter holds.
#[derive(Clone, Copy)]
enum Param {
    Limit,
    /// `offset`, `after_seq`: ≥ 0.
    NonNegative,
    Depth,
    State,
    Id,
}

/// One endpoint of the OpenAPI document, with what its body and query string take.
struct Endpoint {
    method: &'static str,
    /// As in the OpenAPI document.
    template: &'static str,
    /// The request path of the setup's object (`{id}` filled in).
    path: String,
    /// `None`: the endpoint takes no body; otherwise a valid body (never sent as is) and its fields.
    body: Option<(Value, Vec<Field>)>,
    params: Vec<(&'static str, Param)>,
    /// Whether the endpoint also reads form bodies (`POST /api/auth/token` and `/api/auth/revoke`).
    form: bool,
}

fn endpoint(method: &'static str, template: &'static str, id: &str) -> Endpoint {
    Endpoint {
        method,
        template,
        path: template.replace("{id}", id),
        body: None,
        params: Vec::new(),
        form: false,
    }
}

impl Endpoint {
    fn body(mut self, valid: Value, fields: Vec<Field>) -> Self {
        self.body = Some((valid, fields));
        self
    }

    fn params(mut self, params: &[(&'static str, Param)]) -> Self {
        self.params = params.to_vec();
        self
    }

    fn key(&self) -> (String, String) {
        (self.method.to_owned(), self.template.to_owned())
    }
}

const PAGE: [(&str, Param); 2] = [("limit", Param::Limit), ("offset", Param::NonNegative)];

/// Every endpoint, aimed at the setup's worker and job.
fn endpoints(job: &str) -> Vec<Endpoint> {
    let worker_action = |template: &'static str, reason_required: bool| {
        endpoint("POST", template, WORKER).body(
            json!({"reason": "r"}),
            vec![field("reason", REASON, reason_required)],
        )
    };
    let mut list_jobs = PAGE.to_vec();
    list_jobs.extend([
        ("status", Param::State),
        ("depth", Param::Depth),
        ("parent_job_id", Param::Id),
        ("workspace_id", Param::Id),
    ]);
    let mut list_workers = PAGE.to_vec();
    list_workers.extend([("status", Param::State), ("workspace_id", Param::Id)]);
    vec![
        endpoint("GET", "/api/supervisor/workers", "").params(&list_workers),
        endpoint("POST", "/api/supervisor/workers", "").body(
            json!({"id": "w_new"}),
            vec![
                field("id", Kind::Id, false),
                field("workspace_id", Kind::Id, false),
                field("metadata", Kind::Object, false),
            ],
        ),
        endpoint("GET", "/api/supervisor/workers/{id}", WORKER),
        worker_action("/api/supervisor/workers/{id}/start", false),
        worker_action("/api/supervisor/workers/{id}/pause", false),
        worker_action("/api/supervisor/workers/{id}/resume", false),
        worker_action("/api/supervisor/workers/{id}/complete", false),
        worker_action("/api/supervisor/workers/{id}/fail", true),
        worker_action("/api/supervisor/workers/{id}/terminate", false),
        endpoint("POST", "/api/supervisor/workers/{id}/heartbeat", WORKER).body(json!({}), vec![]),
        endpoint("GET", "/api/supervisor/workers/{id}/transitions", WORKER).params(&PAGE),
        endpoint("GET", "/api/supervisor/metrics", "").params(&[("workspace_id", Param::Id)]),
        endpoint("GET", "/api/events", "")
            .params(&[("after_seq", Param::NonNegative), ("limit", Param::Limit)]),
        endpoint("GET", "/api/events/stream", "").params(&[("after_seq", Param::NonNegative)]),
        endpoint("GET", "/", ""),
        endpoint("GET", "/api/resources/quotas", ""),
        endpoint("POST", "/api/resources/allocate", "").body(
            json!({"job_id": job, "depth": 0, "worker_count": 1}),
            vec![
                field("job_id", Kind::Id, true),
                field("depth", DEPTH, true),
                field("worker_count", WORKER_COUNT, true),
            ],
        ),
        endpoint("POST", "/api/resources/release", "").body(
            json!({"job_id": job, "depth": 0}),
            vec![field("job_id", Kind::Id, true), field("depth", DEPTH, true)],
        ),
        endpoint("GET", "/api/resources/usage", ""),
        endpoint("POST", "/api/jobs/submit", "").body(
            json!({"task_description": "t", "worker_count": 1}),
            vec![
                field("task_description", Kind::Text { min: 1, max: 4096 }, true),
                field("worker_count", WORKER_COUNT, true),
                field("depth", DEPTH, false),
                field("parent_job_id", Kind::Id, false),
                field("workspace_id", Kind::Id, false),
            ],
        ),
        endpoint("GET", "/api/jobs", "").params(&list_jobs),
        endpoint("GET", "/api/jobs/{id}", job),
        endpoint("POST", "/api/jobs/{id}/cancel", job)
            .body(json!({"reason": "r"}), vec![field("reason", REASON, false)]),
        endpoint("POST", "/api/jobs/{id}/complete", job).body(
            json!({"result": {"ok": true}}),
            vec![field("result", Kind::Object, false)],
        ),
        endpoint("POST", "/api/jobs/{id}/fail", job).body(
            json!({"error": "e"}),
            vec![field("error", Kind::Text { min: 0, max: 4096 }, true)],
        ),
        endpoint("GET", "/api/jobs/{id}/transitions", job).params(&PAGE),
        endpoint("GET", "/api/jobs/{id}/children", job).params(&PAGE),
        endpoint("GET", "/api/health", ""),
        endpoint("GET", "/api/openapi.json", ""),
        Endpoint {
            form: true,
            ..endpoint("POST", "/api/auth/revoke", "").body(
                json!({"token": "not-a-token"}),
                vec![
                    field(
                        "token",
                        Kind::Text {
                            min: 1,
                            max: 10_000,
                        },
                        true,
                    ),
                    // `token_type_hint` is not checked: RFC 7009 lets a server ignore a hint it
                    // does not know, and this one names one kind of token only.
                ],
            )
        },
        Endpoint {
            form: true,
            ..endpoint("POST", "/api/auth/token", "").body(
                json!({"client_id": "nobody", "client_secret": "s"}),
                vec![
                    field(
                        "client_id",
                        Kind::Text {
                            min: 0,
                            max: 10_000,
                        },
                        true,
                    ),
                    field(
                        "client_secret",
                        Kind::Text {
                            min: 0,
                            max: 10_000,
                        },
                        true,
                    ),
                    field("scope", Kind::Word, false),
                    field("grant_type", Kind::Word, false),
                ],
            )
        },
    ]
}

/// Ids no endpoint may accept: each breaks the shape rule in another way.
fn bad_ids() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("space", "a b".into()),
        ("leading dash", "-abc".into()),
        ("65 characters", "a".repeat(65)),
        ("NUL", "a\u{0}b".into()),
        ("RTL override", "j_\u{202e}1".into()),
        ("emoji", "j_\u{1F600}".into()),
        ("accented", "j_é".into()),
        ("SQL", "1'; DROP TABLE jobs; --".into()),
        ("SQL OR", "x' OR '1'='1".into()),
        ("path traversal", "../../etc/passwd".into()),
    ]
}

/// Percent-encodes everything but unreserved characters.
fn encode(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Builds the cases of one endpoint.
struct Table<'a> {
    endpoint: &'a Endpoint,
    cases: Vec<Case>,
}

impl<'a> Table<'a> {
    fn label(&self, what: &str) -> String {
        format!(
            "{} {}: {what}",
            self.endpoint.method, self.endpoint.template
        )
    }

    fn push(
        &mut self,
        what: &str,
        target: Vec<u8>,
        content_type: Option<&'static str>,
        body: Option<Framing>,
        expected: u16,
    ) {
        self.cases.push(Case {
            label: self.label(what),
            method: self.endpoint.method,
            target,
            content_type,
            headers: Vec::new(),
            body,
            expected,
        });
    }

    fn path(&self) -> Vec<u8> {
        self.endpoint.path.as_bytes().to_vec()
    }

    /// A JSON body, byte for byte.
    fn raw_body(&mut self, what: &str, body: &[u8], expected: u16) {
        let target = self.path();
        self.push(
            what,
            target,
            Some("application/json"),
            Some(Framing::Sized(body.into())),
            expected,
        );
    }

    fn json_body(&mut self, what: &str, body: &Value, expected: u16) {
        self.raw_body(what, body.to_string().as_bytes(), expected);
    }

    /// The valid body with `name` set to the JSON text `value` (spliced in as text, so it may be
    /// what no JSON library would produce: `1e400`, `"\ud800"`).
    fn with_field(&mut self, what: &str, name: &str, value: &str, expected: u16) {
        self.with_field_bytes(what, name, value.as_bytes(), expected);
    }

    /// Like [`Table::with_field`], with raw bytes that need not be UTF-8.
    fn with_field_bytes(&mut self, what: &str, name: &str, value: &[u8], expected: u16) {
        let Some((valid, _)) = &self.endpoint.body else {
            return;
        };
        let mut body = valid.clone();
        body[name] = json!(PLACEHOLDER);
        let text = body.to_string();
        let raw = replace_bytes(
            text.as_bytes(),
            json!(PLACEHOLDER).to_string().as_bytes(),
            value,
        );
        self.raw_body(&format!("{name} = {what}"), &raw, expected);
    }

    /// Every endpoint: an oversized body, framed both ways, is refused before anything is read.
    fn oversized(&mut self) {
        for (what, framing) in [
            ("10 MB chunked body", Framing::Chunked(huge_body())),
            ("10 MB body with its length", Framing::Sized(huge_body())),
        ] {
            let target = self.path();
            self.push(what, target, Some("application/json"), Some(framing), 413);
        }
        let nested = [vec![b'['; 100_000], vec![b']'; 100_000]].concat();
        let target = self.path();
        self.push(
            "100 000 nested arrays",
            target,
            Some("application/json"),
            Some(Framing::Sized(nested.into())),
            413,
        );
    }

    /// Bodies that are not a JSON object of the right fields.
    fn bodies(&mut self) {
        let Some((valid, fields)) = &self.endpoint.body else {
            return;
        };
        let (valid, fields) = (valid.clone(), fields.as_slice());
        for (what, body) in [
            ("unterminated object", &b"{"[..]),
            ("missing value", b"{\"reason\":}"),
            ("trailing comma", b"{\"a\": 1,}"),
            ("single quotes", b"{'a': 1}"),
            ("trailing garbage", b"{} x"),
            ("byte order mark", b"\xEF\xBB\xBF{}"),
            ("NaN", b"{\"a\": NaN}"),
            ("Infinity", b"{\"a\": Infinity}"),
            ("huge exponent", b"{\"a\": 1e400}"),
            ("invalid UTF-8", b"\xFF\xFE\xFD"),
            ("invalid UTF-8 in a string", b"{\"a\": \"\xC3\x28\"}"),
            ("invalid UTF-8 in a key", b"{\"\xF0\x28\x8C\x28\": 1}"),
            ("lone surrogate in a key", b"{\"\\ud800\": 1}"),
            (
                "32 000 nested arrays",
                &[vec![b'['; 32_000], vec![b']'; 32_000]].concat(),
            ),
            ("form encoding sent as JSON", b"a=1&b=2"),
        ] {
            self.raw_body(what, body, 400);
        }
        let nested_field = format!("{{\"wokrer\": {}{}}}", "[".repeat(1_000), "]".repeat(1_000));
        self.raw_body(
            "1 000 nested arrays in a field",
            nested_field.as_bytes(),
            400,
        );
        for (what, body) in [
            ("array", json!([])),
            ("null", json!(null)),
            ("string", json!("x")),
            ("number", json!(0)),
            ("boolean", json!(true)),
            ("array of the valid body", json!([valid.clone()])),
        ] {
            self.json_body(&format!("top-level {what}"), &body, 422);
        }
        let mut unknown = valid.clone();
        unknown["wokrer"] = json!(1);
        self.json_body("unknown field", &unknown, 422);
        let mut shouted = valid.clone();
        shouted["DEPTH"] = json!(0);
        self.json_body("unknown upper-case field", &shouted, 422);
        for field in fields.iter().filter(|field| field.required) {
            let mut missing = valid.clone();
            missing.as_object_mut().unwrap().remove(field.name);
            self.json_body(&format!("missing {}", field.name), &missing, 422);
            self.with_field("null", field.name, "null", 422);
        }
        for field in fields {
            self.field_cases(field);
        }
        self.content_types();
    }

    fn field_cases(&mut self, field: &Field) {
        let name = field.name;
        // Numbers beyond every integer type and beyond f64.
        self.with_field("1e400", name, "1e400", 400);
        self.with_field("-1e400", name, "-1e400", 400);
        self.with_field("2^64", name, "18446744073709551616", 422);
        self.with_field("-2^63-1", name, "-9223372036854775809", 422);
        // Beyond f64 too: the JSON parser gives up on it.
        self.with_field("a 400-digit integer", name, &"9".repeat(400), 400);
        // Lone surrogates are not Unicode scalar values: JSON parsers refuse them.
        self.with_field("lone high surrogate", name, "\"\\ud800\"", 400);
        self.with_field("lone low surrogate", name, "\"x\\udfff\"", 400);
        // An overlong encoding of NUL: not UTF-8 at all.
        self.with_field_bytes("overlong NUL (invalid UTF-8)", name, b"\"\xC0\x80\"", 400);
        match field.kind {
            Kind::Id => {
                for wrong in ["123", "true", "[]", "{}", "1.5"] {
                    self.with_field(&format!("wrong type {wrong}"), name, wrong, 422);
                }
                for (what, id) in bad_ids() {
                    self.with_field(&format!("id {what}"), name, &json!(id).to_string(), 422);
                }
            }
            Kind::Text { min, max } => {
                for wrong in ["123", "true", "[]", "{}"] {
                    self.with_field(&format!("wrong type {wrong}"), name, wrong, 422);
                }
                if min > 0 {
                    self.with_field("empty string", name, "\"\"", 422);
                }
                self.with_field("NUL", name, "\"a\\u0000b\"", 422);
                self.with_field("raw NUL escape only", name, "\"\\u0000\"", 422);
                if max <= 4096 {
                    // Characters, not bytes: one emoji is 4 bytes but one character.
                    let emoji = json!("\u{1F600}".repeat(max + 1)).to_string();
                    self.with_field(&format!("{} emoji", max + 1), name, &emoji, 422);
                }
            }
            Kind::Int { min, max } => {
                // `1.0` and `1e0` are integers, as JSON Schema counts them; a fraction is not.
                for wrong in ["\"1\"", "1.5", "1e-1", "1e300", "true", "[]", "{}", "\"\""] {
                    self.with_field(&format!("wrong type {wrong}"), name, wrong, 422);
                }
                for value in [min - 1, max + 1, i64::MAX, i64::MIN] {
                    self.with_field(&value.to_string(), name, &value.to_string(), 422);
                    let float = format!("{value}.0");
                    self.with_field(&float, name, &float, 422);
                }
            }
            Kind::Object => {
                for wrong in ["[1]", "\"x\"", "1", "true", "\"\""] {
                    self.with_field(&format!("wrong type {wrong}"), name, wrong, 422);
                }
                self.with_field("NUL in a value", name, "{\"k\": \"a\\u0000b\"}", 422);
                self.with_field("NUL in a key", name, "{\"a\\u0000\": 1}", 422);
                self.with_field(
                    "NUL deep inside",
                    name,
                    "{\"a\": [{\"b\": [\"\\u0000\"]}]}",
                    422,
                );
                self.with_field("lone surrogate in a key", name, "{\"\\udc00\": 1}", 400);
                let deep = format!("{{\"a\": {}1{}}}", "[".repeat(200), "]".repeat(200));
                self.with_field("200 nested arrays", name, &deep, 400);
                let big = json!({"k": "x".repeat(17 * 1024)}).to_string();
                self.with_field("over 16 KiB", name, &big, 422);
            }
            Kind::Word => {
                for wrong in ["123", "true", "[]", "{}"] {
                    self.with_field(&format!("wrong type {wrong}"), name, wrong, 422);
                }
                self.with_field("unknown word", name, "\"admin:all\"", 422);
                self.with_field("NUL", name, "\"jobs:read\\u0000\"", 422);
                self.with_field("SQL", name, "\"jobs:read' OR '1'='1\"", 422);
            }
        }
    }

    /// A non-empty body under a content type that is not JSON (an empty one would read as `{}`).
    fn content_types(&mut self) {
        for content_type in [
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            let form = content_type == "application/x-www-form-urlencoded";
            // The token endpoint reads forms: `{}` is then a field of that name, unknown.
            let expected = if form && self.endpoint.form { 422 } else { 415 };
            let target = self.path();
            self.push(
                &format!("content type {content_type}"),
                target,
                Some(content_type),
                Some(Framing::Sized(b"{}"[..].into())),
                expected,
            );
        }
        if self.endpoint.form {
            let target = self.path();
            for (what, body) in [
                (
                    "repeated form field",
                    &b"client_id=a&client_id=b&client_secret=s"[..],
                ),
                (
                    "unknown form field",
                    b"client_id=a&client_secret=s&wokrer=1",
                ),
                ("missing form field", b"client_id=a"),
                (
                    "unknown scope in a form",
                    b"client_id=a&client_secret=s&scope=admin",
                ),
                ("NUL in a form", b"client_id=a%00&client_secret=s"),
            ] {
                self.push(
                    what,
                    target.clone(),
                    Some("application/x-www-form-urlencoded"),
                    Some(Framing::Sized(body.into())),
                    422,
                );
            }
        }
    }

    /// Bad values of each query parameter, and each parameter given twice.
    fn queries(&mut self) {
        let params = self.endpoint.params.clone();
        for (name, param) in params {
            let mut values: Vec<(String, String)> = vec![
                ("empty".into(), String::new()),
                ("NUL".into(), "%00".into()),
                ("invalid UTF-8".into(), "%FF%FE".into()),
                ("overlong UTF-8".into(), "%C0%80".into()),
                ("lone surrogate as UTF-8".into(), "%ED%A0%80".into()),
                ("SQL".into(), encode(b"1' OR '1'='1")),
                ("RTL override".into(), encode("\u{202e}5".as_bytes())),
            ];
            let numbers = |values: &mut Vec<(String, String)>, below: i64, above: Option<i64>| {
                values.extend([
                    (below.to_string(), below.to_string()),
                    ("2^63".into(), "9223372036854775808".into()),
                    ("2^64".into(), "18446744073709551616".into()),
                    ("-2^63-1".into(), "-9223372036854775809".into()),
                    ("1e400".into(), "1e400".into()),
                    ("1e2".into(), "1e2".into()),
                    ("1.5".into(), "1.5".into()),
                    ("hex".into(), "0x10".into()),
                    ("leading space".into(), "%205".into()),
                    ("word".into(), "ten".into()),
                ]);
                if let Some(above) = above {
                    values.push((above.to_string(), above.to_string()));
                }
            };
            let valid_pair = match param {
                Param::Limit => {
                    numbers(&mut values, 0, Some(101));
                    values.push(("-1".into(), "-1".into()));
                    ("10", "20")
                }
                Param::NonNegative => {
                    numbers(&mut values, -1, None);
                    ("0", "1")
                }
                Param::Depth => {
                    numbers(&mut values, -1, Some(6));
                    ("0", "1")
                }
                Param::State => {
                    values.extend([
                        ("lower case".into(), "running".into()),
                        ("unknown".into(), "BOGUS".into()),
                        ("SQL after a state".into(), encode(b"RUNNING' OR '1'='1")),
                    ]);
                    ("RUNNING", "COMPLETED")
                }
                Param::Id => {
                    for (what, id) in bad_ids().into_iter().skip(1) {
                        values.push((format!("id {what}"), encode(id.as_bytes())));
                    }
                    ("ws_a", "ws_b")
                }
            };
            for (what, value) in values {
                let target = format!("{}?{name}={value}", self.endpoint.path);
                self.push(
                    &format!("{name} {what}"),
                    target.into_bytes(),
                    None,
                    None,
                    422,
                );
            }
            let (first, second) = valid_pair;
            let repeated = format!("{}?{name}={first}&{name}={second}", self.endpoint.path);
            self.push(
                &format!("{name} repeated"),
                repeated.into_bytes(),
                None,
                None,
                422,
            );
            let same = format!("{}?{name}={first}&{name}={first}", self.endpoint.path);
            self.push(
                &format!("{name} repeated with one value"),
                same.into_bytes(),
                None,
                None,
                422,
            );
        }
    }

    /// Ids of the wrong shape, of the wrong kind, and unknown ones, in the path: 404.
    fn path_ids(&mut self, job: &str) {
        if !self.endpoint.template.contains("{id}") {
            return;
        }
        let wrong_kind = if self.endpoint.template.starts_with("/api/jobs") {
            WORKER
        } else {
            job
        };
        let mut ids: Vec<(String, Vec<u8>)> = vec![
            ("NUL".into(), b"%00".to_vec()),
            ("space".into(), b"a%20b".to_vec()),
            ("leading dash".into(), b"-abc".to_vec()),
            ("65 characters".into(), vec![b'a'; 65]),
            ("10 000 characters".into(), vec![b'a'; 10_000]),
            ("RTL override".into(), b"j_%E2%80%AE1".to_vec()),
            ("emoji".into(), b"j_%F0%9F%98%80".to_vec()),
            ("invalid UTF-8".into(), b"j_%FF".to_vec()),
            ("raw invalid UTF-8".into(), b"j_\xFF".to_vec()),
            (
                "SQL".into(),
                encode(b"1'; DROP TABLE jobs; --").into_bytes(),
            ),
            ("encoded slash".into(), b"a%2Fb".to_vec()),
            ("dot-dot".into(), b"..".to_vec()),
            ("encoded dot-dot".into(), b"%2E%2E".to_vec()),
            ("wrong kind".into(), wrong_kind.as_bytes().to_vec()),
            ("unknown".into(), b"x_000000000000".to_vec()),
        ];
        // The raw byte is refused by the HTTP parser itself, before any component: see `raw_bytes`.
        ids.retain(|(what, _)| what != "raw invalid UTF-8");
        // With a valid body, so that it is the id alone that is refused.
        let body = self
            .endpoint
            .body
            .as_ref()
            .map(|(valid, _)| Framing::Sized(valid.to_string().into_bytes().into()));
        let content_type = body.as_ref().map(|_| "application/json");
        for (what, id) in ids {
            let path = self.endpoint.template.replace("{id}", "\u{0}");
            let target = replace_bytes(path.as_bytes(), b"\0", &id);
            let what = format!("id {what} in the path");
            self.push(&what, target, content_type, body.clone(), 404);
        }
    }

    /// An `Idempotency-Key` that breaks its rule (1–255 printable ASCII) on a POST with a body that is
    /// otherwise valid: 422 before anything runs.
    fn idempotency_keys(&mut self) {
        if self.endpoint.method != "POST" || self.endpoint.form {
            return;
        }
        let Some((valid, _)) = &self.endpoint.body else {
            return;
        };
        let valid: Arc<[u8]> = valid.to_string().into_bytes().into();
        for (what, key) in [
            ("256 characters", "k".repeat(256)),
            ("empty", String::new()),
        ] {
            self.cases.push(Case {
                label: self.label(&format!("Idempotency-Key {what}")),
                method: "POST",
                target: self.path(),
                content_type: Some("application/json"),
                headers: vec![("idempotency-key", key)],
                body: Some(Framing::Sized(valid.clone())),
                expected: 422,
            });
        }
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn cases_of(endpoint: &Endpoint, job: &str) -> Vec<Case> {
    let mut table = Table {
        endpoint,
        cases: Vec::new(),
    };
    table.oversized();
    table.bodies();
    table.queries();
    table.path_ids(job);
    table.idempotency_keys();
    table.cases
}

// ------------------------------------------------------------------------------------------------
// Setup and bookkeeping
// ------------------------------------------------------------------------------------------------

/// A token for everything in [`WORKSPACE`].
fn member() -> String {
    token(&all_scopes(), Some(WORKSPACE))
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}{path}", app.address))
        .bearer_auth(member())
        .json(&body)
        .send()
        .await
        .expect("request");
    parts(response).await
}

/// The objects the table aims at, made with valid requests that also carry unusual but valid text
/// (4 096 four-byte emoji, SQL, right-to-left marks), which must be stored verbatim. Returns the id of
/// a RUNNING job holding one worker; the worker is RUNNING.
async fn setup(app: &TestApp) -> String {
    let (status, worker) = post(app, "/api/supervisor/workers", json!({"id": WORKER})).await;
    assert_eq!(status, 201, "{worker}");
    let reason = "\u{202e}started \u{1F680} by the \u{200f}test";
    let (status, worker) = post(
        app,
        &format!("/api/supervisor/workers/{WORKER}/start"),
        json!({ "reason": reason }),
    )
    .await;
    assert_eq!((status, worker["status"].as_str()), (200, Some("RUNNING")));

    let emoji = "\u{1F600}".repeat(4096);
    let (status, job) = post(
        app,
        "/api/jobs/submit",
        json!({"task_description": emoji, "worker_count": 2}),
    )
    .await;
    assert_eq!(status, 201, "4 096 emoji are 4 096 characters: {job}");
    assert_eq!(job["task_description"], json!(emoji));
    let sql = "Robert'); DROP TABLE jobs; -- \u{202e}";
    let (status, stored) = post(
        app,
        "/api/jobs/submit",
        json!({"task_description": sql, "worker_count": 1}),
    )
    .await;
    assert_eq!(
        (status, stored["task_description"].as_str()),
        (201, Some(sql))
    );

    let id = job["id"].as_str().unwrap().to_owned();
    let (status, grant) = post(
        app,
        "/api/resources/allocate",
        json!({"job_id": id, "depth": 0, "worker_count": 1}),
    )
    .await;
    assert_eq!(
        (status, grant["granted"].as_i64()),
        (201, Some(1)),
        "{grant}"
    );
    id
}

/// The (method, path) pairs of the OpenAPI document: the table must cover each.
fn documented_endpoints() -> BTreeSet<(String, String)> {
    let document: Value =
        serde_json::from_str(include_str!("../../../components/platform/openapi.json")).unwrap();
    let mut documented = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    documented
}

/// Runs the cases, [`PARALLEL`] at a time, and returns every failed expectation.
async fn run(app: &TestApp, cases: Vec<Case>) -> Vec<String> {
    let bearer: Arc<str> = member().into();
    let address: Arc<str> = app.address.trim_start_matches("http://").into();
    let slots = Arc::new(Semaphore::new(PARALLEL));
    let mut running = JoinSet::new();
    for case in cases {
        let (bearer, address) = (Arc::clone(&bearer), Arc::clone(&address));
        let slot = Arc::clone(&slots).acquire_owned().await.unwrap();
        running.spawn(async move {
            let answer = send_raw(&address, &bearer, &case).await;
            drop(slot);
            let content_type = answer
                .headers
                .iter()
                .find(|(name, _)| name == "content-type")
                .map(|(_, value)| value.as_str());
            check(&case, answer.status, content_type, &answer.body)
        });
    }
    let mut failures = Vec::new();
    while let Some(outcome) = running.join_next().await {
        if let Err(failure) = outcome.unwrap() {
            failures.push(failure);
        }
    }
    failures.sort();
    failures
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_is_refused_with_a_4xx_and_writes_nothing() {
    let app = spawn_app().await;
    let job = setup(&app).await;
    let before = app.row_counts().await;

    let endpoints = endpoints(&job);
    let covered: BTreeSet<(String, String)> = endpoints.iter().map(Endpoint::key).collect();
    assert_eq!(
        covered,
        documented_endpoints(),
        "the table covers the OpenAPI document"
    );
    let cases: Vec<Case> = endpoints
        .iter()
        .flat_map(|endpoint| cases_of(endpoint, &job))
        .collect();
    let count = cases.len();
    let started = std::time::Instant::now();
    let failures = run(&app, cases).await;
    eprintln!(
        "{count} hostile requests over {} endpoints in {:?}",
        endpoints.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    assert_eq!(app.row_counts().await, before, "no hostile request wrote");
    still_serves(&app, &job).await;
}

/// A 10 MB body with a `Content-Length`, as reqwest sends it, on every endpoint: 413 before the body
/// is read, with the contract's error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_megabyte_bodies_with_a_length_are_413_everywhere() {
    let app = spawn_app().await;
    let job = setup(&app).await;
    let before = app.row_counts().await;
    let huge = bytes_of(HUGE_BODY_BYTES);
    for endpoint in endpoints(&job) {
        let method = reqwest::Method::from_bytes(endpoint.method.as_bytes()).unwrap();
        let response = app
            .http
            .request(method, format!("{}{}", app.address, endpoint.path))
            .bearer_auth(member())
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e:?}", endpoint.method, endpoint.path));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.unwrap();
        let case = Case {
            label: format!(
                "{} {}: 10 MB with Content-Length",
                endpoint.method, endpoint.template
            ),
            method: endpoint.method,
            target: Vec::new(),
            content_type: None,
            headers: Vec::new(),
            body: None,
            expected: 413,
        };
        check(&case, status, content_type.as_deref(), &body).unwrap();
    }
    assert_eq!(app.row_counts().await, before);
    still_serves(&app, &job).await;
}

/// A chunked body larger than an instance's whole memory (64 MiB): the component stops reading at
/// the limit and answers 413, where buffering it whole would trap the instance (a plain-text 500).
#[tokio::test]
async fn a_chunked_body_larger_than_an_instance_is_413_not_a_trap() {
    let app = spawn_app().await;
    let job = setup(&app).await;
    let before = app.row_counts().await;
    let case = Case {
        label: "100 MB chunked submit".into(),
        method: "POST",
        target: b"/api/jobs/submit".to_vec(),
        content_type: Some("application/json"),
        headers: Vec::new(),
        body: Some(Framing::Chunked(bytes_of(100 << 20).into())),
        expected: 413,
    };
    let address = app.address.trim_start_matches("http://");
    let answer = send_raw(address, &member(), &case).await;
    let content_type = answer
        .headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.as_str());
    check(&case, answer.status, content_type, &answer.body).unwrap();
    assert_eq!(app.row_counts().await, before);
    still_serves(&app, &job).await;
}

/// Bytes that are not valid UTF-8 straight in the request target (not percent-encoded) are refused
/// by the HTTP parser before any component runs: the answer is a 400 and nothing is written. (The
/// contract's error body cannot be given there, as no component sees the request.)
#[tokio::test]
async fn raw_bytes_in_the_request_target_never_reach_a_component() {
    let app = spawn_app().await;
    let job = setup(&app).await;
    let before = app.row_counts().await;
    let address = app.address.trim_start_matches("http://");
    for target in [
        &b"/api/jobs?status=\xFF"[..],
        b"/api/supervisor/workers/w_\xFF\xFE",
        b"/api/events?after_seq=\xC0\x80",
    ] {
        let case = Case {
            label: String::from_utf8_lossy(target).into_owned(),
            method: "GET",
            target: target.to_vec(),
            content_type: None,
            headers: Vec::new(),
            body: None,
            expected: 400,
        };
        let answer = send_raw(address, &member(), &case).await;
        assert_eq!(answer.status, 400, "{}", case.label);
    }
    assert_eq!(app.row_counts().await, before);
    still_serves(&app, &job).await;
}

/// A body of `len` bytes that is not JSON, so that a server reading it whole could never act on it.
fn bytes_of(len: usize) -> Vec<u8> {
    vec![b'x'; len]
}

/// After all that, the service still reads and writes normally.
async fn still_serves(app: &TestApp, job: &str) {
    let health = app
        .http
        .get(format!("{}/api/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let get = |path: String| async move {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .bearer_auth(member())
            .send()
            .await
            .unwrap();
        parts(response).await
    };
    let (status, worker) = get(format!("/api/supervisor/workers/{WORKER}")).await;
    assert_eq!((status, worker["status"].as_str()), (200, Some("RUNNING")));
    let (status, fetched) = get(format!("/api/jobs/{job}")).await;
    assert_eq!(
        (status, fetched["allocated_workers"].as_i64()),
        (200, Some(1))
    );
    let (status, paused) = post(
        app,
        &format!("/api/supervisor/workers/{WORKER}/pause"),
        json!({"reason": "after the storm"}),
    )
    .await;
    assert_eq!(
        (status, paused["status"].as_str()),
        (200, Some("PAUSED")),
        "{paused}"
    );
}
