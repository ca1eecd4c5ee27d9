//! What one instance's store holds, and what it shares with every other store.

use crate::outbound::AllowList;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// A component as configured by the manifest, resolved once at start-up.
pub struct ComponentContext {
    pub id: String,
    /// Component variables with their templates expanded.
    pub variables: HashMap<String, String>,
    pub allowed_hosts: AllowList,
}

/// Connections shared by all instances of all components, as Spin pools them.
pub struct Services {
    pub postgres: crate::postgres::Pools,
}

/// What one request asked of the outside world, for the request log and
/// for judging an endpoint's round-trip budget.
#[derive(Debug, Default)]
pub struct Usage {
    pub postgres_statements: AtomicU32,
    pub redis_commands: AtomicU32,
}

impl Usage {
    pub(crate) fn count(counter: &AtomicU32) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The data of one instance's store.
pub struct HostState {
    pub(crate) component: Arc<ComponentContext>,
    pub(crate) services: Arc<Services>,
    pub(crate) usage: Arc<Usage>,
    pub(crate) table: ResourceTable,
    pub(crate) memory: crate::reuse::MemoryWatch,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutboundHttp,
}

impl HostState {
    pub fn new(
        component: Arc<ComponentContext>,
        services: Arc<Services>,
        usage: Arc<Usage>,
        memory: crate::reuse::MemoryWatch,
    ) -> Self {
        // Components' stdout and stderr go to the host's, as with `spin up`.
        let wasi = WasiCtx::builder().inherit_stdout().inherit_stderr().build();
        Self {
            component,
            services,
            usage,
            table: ResourceTable::new(),
            memory,
            wasi,
            http: WasiHttpCtx::new(),
            hooks: NoOutboundHttp,
        }
    }
}

impl HostState {
    /// What opening an outbound connection needs, cloned out of the store.
    pub(crate) fn outbound(&self) -> (Arc<ComponentContext>, Arc<Services>, Arc<Usage>) {
        (
            self.component.clone(),
            self.services.clone(),
            self.usage.clone(),
        )
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The app makes no outbound HTTP requests, and its manifest allows none.
struct NoOutboundHttp;

impl wasmtime_wasi_http::WasiHttpHooks for NoOutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let uri = request.uri().clone();
        Box::new(async move {
            tracing::warn!(
                "a component tried an outbound HTTP request to {uri}, which is not permitted"
            );
            Err(wasmtime_wasi_http::Error::HttpRequestDenied)
        })
    }
}

/// Marker through which the Spin interfaces reach a store's [`HostState`].
pub struct Spin;

impl HasData for Spin {
    type Data<'a> = &'a mut HostState;
}
