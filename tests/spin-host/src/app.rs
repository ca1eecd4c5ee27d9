//! A loaded Spin app: its components compiled and pre-linked, its routes,
//! and the handling of one request.

use crate::engine;
use crate::linger::Lingering;
use crate::manifest::Manifest;
use crate::outbound::AllowList;
use crate::routes::{RouteMatch, Router};
use crate::state::{ComponentContext, HostState, Services, Usage};
use crate::variables::Variables;
use anyhow::Context;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{Semaphore, oneshot};
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiHttpView, p3};

/// The body of every response the host sends.
pub type Body = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// How to load an app.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub manifest: PathBuf,
    /// Variable values that win over `SPIN_VARIABLE_*` and defaults (tests use
    /// them to point each app at its own database).
    pub variables: HashMap<String, String>,
    /// Whether `SPIN_VARIABLE_*` from the process environment are read.
    pub use_environment: bool,
    /// Instances that may be alive at once (the pooling allocator's slots).
    pub max_instances: u32,
    /// Pooled Postgres connections per address: Spin's 64 unless a test needs fewer
    /// (every test app has its own pools, and the server allows 100 connections).
    pub postgres_pool_size: usize,
}

impl AppOptions {
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            variables: HashMap::new(),
            use_environment: true,
            max_instances: 256,
            postgres_pool_size: crate::postgres::SPIN_POOL_SIZE,
        }
    }

    pub fn variable(mut self, name: &str, value: impl Into<String>) -> Self {
        self.variables.insert(name.to_owned(), value.into());
        self
    }
}

struct LoadedComponent {
    context: Arc<ComponentContext>,
    pre: ServicePre<HostState>,
}

pub struct App {
    engine: Engine,
    /// One permit per instance slot: requests beyond the pool wait for a
    /// slot instead of failing to instantiate.
    slots: Arc<Semaphore>,
    router: Router,
    components: Vec<LoadedComponent>,
    services: Arc<Services>,
}

impl App {
    pub fn load(options: &AppOptions) -> anyhow::Result<Arc<Self>> {
        let manifest = Manifest::load(&options.manifest)?;
        let variables = Variables::resolve(&manifest.variables, |name| {
            options.variables.get(name).cloned().or_else(|| {
                options
                    .use_environment
                    .then(|| std::env::var(crate::variables::env_name(name)).ok())
                    .flatten()
            })
        })?;
        let engine = engine::engine(options.max_instances)?;
        let linker = engine::linker(&engine)?;

        let mut router = Router::default();
        let mut components = Vec::new();
        let mut index_of = HashMap::new();
        for (id, component) in &manifest.component {
            let context = component_context(id, component, &variables)?;
            let compiled = engine::load_component(&engine, &manifest.source_path(component))?;
            let pre =
                engine::prepare(&linker, &compiled).with_context(|| format!("component {id:?}"))?;
            index_of.insert(id.clone(), components.len());
            components.push(LoadedComponent {
                context: Arc::new(context),
                pre,
            });
        }
        for trigger in &manifest.trigger.http {
            router.add(&trigger.route, index_of[&trigger.component])?;
        }
        Ok(Arc::new(Self {
            engine,
            slots: Arc::new(Semaphore::new(options.max_instances as usize)),
            router,
            components,
            services: Arc::new(Services {
                postgres: crate::postgres::Pools::new(options.postgres_pool_size),
                redis: crate::redis::Clients::default(),
            }),
        }))
    }

    /// Routes a request to its component and runs the component's handler in
    /// a fresh instance.
    pub async fn handle(
        self: &Arc<Self>,
        request: http::Request<hyper::body::Incoming>,
        client: SocketAddr,
    ) -> http::Response<Body> {
        self.handle_counted(request, client, Arc::default()).await
    }

    /// Like [`App::handle`], counting the request's Postgres statements and
    /// Redis commands into `usage`.
    pub async fn handle_counted(
        self: &Arc<Self>,
        mut request: http::Request<hyper::body::Incoming>,
        client: SocketAddr,
        usage: Arc<Usage>,
    ) -> http::Response<Body> {
        let path = request.uri().path();
        if let Some(well_known) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return well_known_response(well_known);
        }
        let Some(route) = self.router.route(path) else {
            return empty(StatusCode::NOT_FOUND);
        };
        let component = &self.components[route.component];
        add_spin_headers(&mut request, &route, client);
        let (response_tx, response_rx) = oneshot::channel();
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return empty(StatusCode::SERVICE_UNAVAILABLE);
        };
        let store = self.store(component, usage);
        let pre = component.pre.clone();
        let id = component.context.id.clone();
        let (request, body_left_unread) = Lingering::wrap(request);
        tokio::spawn(async move {
            if let Err(e) = run_instance(store, pre, request, response_tx).await {
                tracing::error!("component {id:?} failed: {e:#}");
            }
            drop(slot); // after the store: the instance's slot is free again
        });
        let mut response = match response_rx.await {
            Ok(response) => response,
            // The instance trapped or failed before producing a response: Spin's empty 500.
            Err(_) => empty(StatusCode::INTERNAL_SERVER_ERROR),
        };
        // Spin's hyper stops keeping a connection alive whose request body the component let go
        // of unread, and says so in the response; here the rest is still read (see `linger`).
        if body_left_unread.load(Ordering::Acquire) {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Instantiation alone, as each request pays it: a fresh store and an
    /// instance of the pre-linked component, dropped again. Returns each
    /// component's mean over `iterations` runs.
    pub async fn measure_instantiation(
        &self,
        iterations: u32,
    ) -> anyhow::Result<Vec<(String, std::time::Duration)>> {
        let iterations = iterations.max(1);
        let mut means = Vec::new();
        for component in &self.components {
            let started = std::time::Instant::now();
            for _ in 0..iterations {
                let mut store = self.store(component, Arc::default());
                component.pre.instantiate_async(&mut store).await?;
            }
            means.push((component.context.id.clone(), started.elapsed() / iterations));
        }
        Ok(means)
    }

    /// The store one request's instance lives in.
    fn store(&self, component: &LoadedComponent, usage: Arc<Usage>) -> Store<HostState> {
        Store::new(
            &self.engine,
            HostState::new(component.context.clone(), self.services.clone(), usage),
        )
    }
}

fn component_context(
    id: &str,
    component: &crate::manifest::Component,
    variables: &Variables,
) -> anyhow::Result<ComponentContext> {
    let mapped = component
        .variables
        .iter()
        .map(|(name, template)| Ok((name.clone(), variables.render(template)?)))
        .collect::<anyhow::Result<_>>()
        .with_context(|| format!("component {id:?}: variables"))?;
    let hosts = component
        .allowed_outbound_hosts
        .iter()
        .map(|entry| variables.render(entry))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ComponentContext {
        id: id.to_owned(),
        variables: mapped,
        allowed_hosts: AllowList::parse(&hosts).with_context(|| format!("component {id:?}"))?,
    })
}

/// Instantiates the component, calls `wasi:http/handler#handle`, and keeps
/// the instance's event loop running until the response body has been sent:
/// the guest may go on writing the body after it has returned the head.
async fn run_instance(
    mut store: Store<HostState>,
    pre: ServicePre<HostState>,
    request: http::Request<Lingering>,
    response_tx: oneshot::Sender<http::Response<Body>>,
) -> anyhow::Result<()> {
    let service = pre.instantiate_async(&mut store).await?;
    let (request, request_io) = p3::Request::from_http(store.data_mut().http().hooks, request);
    store
        .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
            let response = match service.handle(accessor, request).await? {
                Ok(response) => response,
                Err(code) => {
                    tracing::error!("the component answered with an error code: {code:?}");
                    let _ = response_tx.send(empty(StatusCode::INTERNAL_SERVER_ERROR));
                    return Ok(());
                }
            };
            let response =
                accessor.with(|mut access| response.into_http(&mut access, request_io))?;
            let (sent_tx, sent_rx) = oneshot::channel();
            let response = response.map(|body| {
                UntilSent {
                    body,
                    _sent: sent_tx,
                }
                .boxed_unsync()
            });
            if response_tx.send(response).is_ok() {
                // Resolves when the body is finished or dropped.
                let _ = sent_rx.await;
            }
            Ok(())
        })
        .await??;
    Ok(())
}

/// A body that tells, by being dropped, that the server is done with it.
struct UntilSent<B> {
    body: B,
    _sent: oneshot::Sender<()>,
}

impl<B: http_body::Body + Unpin> http_body::Body for UntilSent<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The headers Spin adds to every request a component receives.
fn add_spin_headers<B>(request: &mut http::Request<B>, route: &RouteMatch<'_>, client: SocketAddr) {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let mut headers: Vec<(String, String)> = vec![
        (
            "spin-full-url".into(),
            format!("http://{host}{path_and_query}"),
        ),
        ("spin-path-info".into(), route.path_info.clone()),
        ("spin-matched-route".into(), route.raw_route.to_owned()),
        ("spin-component-route".into(), route.component_route.clone()),
        (
            "spin-raw-component-route".into(),
            route.raw_route.to_owned(),
        ),
        ("spin-base-path".into(), "/".into()),
        ("spin-client-addr".into(), client.to_string()),
    ];
    headers.extend(
        route
            .params
            .iter()
            .map(|(name, value)| (format!("spin-path-match-{name}"), value.clone())),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            request.headers_mut().insert(name, value);
        }
    }
}

/// Paths under it are Spin's own, answered before routing.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

fn well_known_response(name: &str) -> http::Response<Body> {
    match name {
        "health" => {
            let mut response = empty(StatusCode::OK);
            *response.body_mut() = Full::new(Bytes::from_static(b"OK"))
                .map_err(|e| match e {})
                .boxed_unsync();
            response
        }
        _ => empty(StatusCode::NOT_FOUND),
    }
}

/// A response the host makes itself: as Spin's, with no body (`content-length: 0`).
fn empty(status: StatusCode) -> http::Response<Body> {
    let mut response = http::Response::new(
        Full::new(Bytes::new())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}
