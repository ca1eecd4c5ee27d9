//! A loaded Spin app: its components compiled and pre-linked, its routes,
//! and the handling of one request by one of a component's instances.

use crate::engine;
use crate::linger::Lingering;
use crate::manifest::Manifest;
use crate::outbound::AllowList;
use crate::reuse::{ComponentInstances, InstanceReuse, InstanceStats, RequestRecord};
use crate::routes::{RouteMatch, Router};
use crate::state::{ComponentContext, Services};
use crate::variables::Variables;
use anyhow::Context;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;
use wasmtime_wasi_http::handler::ProxyHandler;

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
    /// How instances are reused (Spin's defaults unless set).
    pub reuse: InstanceReuse,
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
            reuse: InstanceReuse::default(),
            postgres_pool_size: crate::postgres::SPIN_POOL_SIZE,
        }
    }

    pub fn variable(mut self, name: &str, value: impl Into<String>) -> Self {
        self.variables.insert(name.to_owned(), value.into());
        self
    }
}

/// A component, served by a [`ProxyHandler`] over its reused instances (see [`crate::reuse`]).
struct LoadedComponent {
    handler: ProxyHandler<ComponentInstances>,
}

pub struct App {
    router: Router,
    components: Vec<LoadedComponent>,
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
        let services = Arc::new(Services {
            postgres: crate::postgres::Pools::new(options.postgres_pool_size),
        });
        // One permit per instance slot: an instance beyond the pool waits for
        // a slot instead of failing to instantiate.
        let slots = Arc::new(Semaphore::new(options.max_instances as usize));
        let next_id = Arc::new(AtomicU64::new(0));

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
                handler: ProxyHandler::new(ComponentInstances {
                    engine: engine.clone(),
                    pre,
                    context: Arc::new(context),
                    services: services.clone(),
                    slots: slots.clone(),
                    reuse: options.reuse.clone(),
                    next_id: next_id.clone(),
                    stats: InstanceStats::default(),
                }),
            });
        }
        for trigger in &manifest.trigger.http {
            router.add(&trigger.route, index_of[&trigger.component])?;
        }
        Ok(Arc::new(Self { router, components }))
    }

    /// Routes a request to its component and has one of the component's
    /// instances handle it.
    pub async fn handle(
        self: &Arc<Self>,
        request: http::Request<hyper::body::Incoming>,
        client: SocketAddr,
    ) -> http::Response<Body> {
        self.handle_recorded(request, client, Arc::default()).await
    }

    /// Like [`App::handle`], noting in `record` which instance took the
    /// request and what it asked of Postgres and Redis.
    pub async fn handle_recorded(
        self: &Arc<Self>,
        mut request: http::Request<hyper::body::Incoming>,
        client: SocketAddr,
        record: Arc<RequestRecord>,
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
        let (request, body_left_unread) = Lingering::wrap(request);
        let request =
            request.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        let mut response = match component.handler.handle(record, request).await {
            Ok(response) => response,
            // The component answered with an error code, or its instance trapped (taking every
            // request inside it along) or could not be made: Spin's empty 500.
            Err(e) => {
                let id = &component.handler.state().context.id;
                tracing::error!("component {id:?} failed: {e:#}");
                empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
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

    /// What the host has seen of component `id`'s instances.
    pub fn instance_stats(&self, id: &str) -> Option<&InstanceStats> {
        self.components
            .iter()
            .map(|component| component.handler.state())
            .find(|instances| instances.context.id == id)
            .map(|instances| &instances.stats)
    }

    /// Instantiation alone: a fresh store and an instance of the pre-linked
    /// component, dropped again. Returns each component's mean over
    /// `iterations` runs.
    pub async fn measure_instantiation(
        &self,
        iterations: u32,
    ) -> anyhow::Result<Vec<(String, std::time::Duration)>> {
        let iterations = iterations.max(1);
        let mut means = Vec::new();
        for component in &self.components {
            let instances = component.handler.state();
            let started = std::time::Instant::now();
            for _ in 0..iterations {
                let mut store = instances.store(Arc::default());
                instances.pre.instantiate_async(&mut store).await?;
            }
            means.push((instances.context.id.clone(), started.elapsed() / iterations));
        }
        Ok(means)
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
