//! Host-side bindings for the Spin interfaces in `wit/host.wit`.

wasmtime::component::bindgen!({
    path: "wit",
    world: "spin-host:host/spin-imports",
    // Every import may do I/O and may trap (e.g. on a stale resource handle).
    imports: { default: async | trappable },
    with: {
        "spin:postgres/postgres.connection": crate::postgres::Connection,
        "spin:postgres/postgres.connection-builder": crate::postgres::ConnectionBuilder,
        "spin:redis/redis.connection": crate::redis::Connection,
    },
});
