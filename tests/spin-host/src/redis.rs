//! `spin:redis/redis@3.0.0` on the `redis` crate.
//!
//! As under Spin, every `connection` a guest opens is a TCP connection of its own (a multiplexed
//! one, so that commands a guest sends on it concurrently are pipelined), opened with the
//! crate's defaults: no timeout on connecting or on a reply, and no reconnecting. It closes when
//! the guest drops the resource, or with its instance. A guest that wants fewer connects keeps
//! its connection; one that wants bounded waits bounds them itself.

use crate::bindings::spin::redis::redis::{
    Error, HostConnection, HostConnectionWithStore, Payload, RedisParameter, RedisResult,
};
use crate::outbound::{default_port, suggestion};
use crate::state::{HostState, Spin, Usage};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use wasmtime::Result;
use wasmtime::component::{Accessor, Resource};

/// The host side of a guest's `connection` resource.
pub struct Connection(MultiplexedConnection, Arc<Usage>);

/// Opens a connection to `address` if the component may reach it.
async fn connect(
    allowed: &crate::outbound::AllowList,
    address: &str,
) -> Result<MultiplexedConnection, Error> {
    let url = url::Url::parse(address).map_err(|_| Error::InvalidAddress)?;
    let host = url.host_str().ok_or(Error::InvalidAddress)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url
        .port()
        .or_else(|| default_port(url.scheme()))
        .ok_or(Error::InvalidAddress)?;
    if !allowed.allows(url.scheme(), host, port) {
        tracing::warn!(
            "A component tried to make an outbound connection to {}://{host}:{port}, which is not permitted; \
             to allow it, add {} to the component in spin.toml",
            url.scheme(),
            suggestion(url.scheme(), host, port)
        );
        return Err(Error::InvalidAddress);
    }
    redis::Client::open(address)
        .map_err(|_| Error::InvalidAddress)?
        .get_multiplexed_async_connection_with_config(&AsyncConnectionConfig::new())
        .await
        .map_err(other)
}

fn other(e: redis::RedisError) -> Error {
    match e.kind() {
        redis::ErrorKind::TypeError => Error::TypeError,
        _ => Error::Other(e.to_string()),
    }
}

type Guest<'a> = &'a Accessor<HostState, Spin>;

/// Runs one command on the guest's connection.
async fn run<T: redis::FromRedisValue>(
    accessor: Guest<'_>,
    connection: &Resource<Connection>,
    command: redis::Cmd,
) -> Result<Result<T, Error>> {
    let mut connection = accessor.with(|mut access| -> Result<MultiplexedConnection> {
        let Connection(connection, usage) = access.get().table.get(connection)?;
        Usage::count(&usage.redis_commands);
        Ok(connection.clone())
    })?;
    Ok(command.query_async(&mut connection).await.map_err(other))
}

impl HostConnectionWithStore<HostState> for Spin {
    async fn open(
        accessor: Guest<'_>,
        address: String,
    ) -> Result<Result<Resource<Connection>, Error>> {
        let (component, _, usage) = accessor.with(|mut access| access.get().outbound());
        match connect(&component.allowed_hosts, &address).await {
            Ok(connection) => Ok(Ok(accessor
                .with(|mut access| access.get().table.push(Connection(connection, usage)))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn publish(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        channel: String,
        payload: Payload,
    ) -> Result<Result<(), Error>> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload);
        Ok(run::<i64>(accessor, &c, command).await?.map(drop))
    }

    async fn get(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Result<Option<Payload>, Error>> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        run(accessor, &c, command).await
    }

    async fn set(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        key: String,
        value: Payload,
    ) -> Result<Result<(), Error>> {
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value);
        run(accessor, &c, command).await
    }

    async fn incr(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Result<i64, Error>> {
        let mut command = redis::cmd("INCR");
        command.arg(key);
        run(accessor, &c, command).await
    }

    async fn del(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        keys: Vec<String>,
    ) -> Result<Result<u32, Error>> {
        let mut command = redis::cmd("DEL");
        command.arg(keys);
        run(accessor, &c, command).await
    }

    async fn sadd(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<Result<u32, Error>> {
        let mut command = redis::cmd("SADD");
        command.arg(key).arg(values);
        run(accessor, &c, command).await
    }

    async fn smembers(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Result<Vec<String>, Error>> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(key);
        run(accessor, &c, command).await
    }

    async fn srem(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<Result<u32, Error>> {
        let mut command = redis::cmd("SREM");
        command.arg(key).arg(values);
        run(accessor, &c, command).await
    }

    async fn execute(
        accessor: Guest<'_>,
        c: Resource<Connection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Result<Result<Vec<RedisResult>, Error>> {
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(n) => cmd.arg(n),
                RedisParameter::Binary(bytes) => cmd.arg(bytes),
            };
        }
        let value: Result<redis::Value, Error> = run(accessor, &c, cmd).await?;
        Ok(value.map(|value| {
            let mut results = Vec::new();
            flatten(value, &mut results);
            results
        }))
    }
}

/// Spin returns a command's reply as a flat list: arrays are spread out.
fn flatten(value: redis::Value, out: &mut Vec<RedisResult>) {
    use redis::Value;
    match value {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(n) => out.push(RedisResult::Int64(n)),
        Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
        Value::SimpleString(s) => out.push(RedisResult::Status(s)),
        Value::Okay => out.push(RedisResult::Status("OK".into())),
        Value::Array(values) | Value::Set(values) => {
            values.into_iter().for_each(|v| flatten(v, out))
        }
        Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
        Value::Boolean(b) => out.push(RedisResult::Int64(b.into())),
        Value::VerbatimString { text, .. } => out.push(RedisResult::Binary(text.into_bytes())),
        Value::BigNumber(n) => out.push(RedisResult::Binary(n.to_string().into_bytes())),
        Value::Map(pairs) => pairs.into_iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        Value::Attribute { data, .. } => flatten(*data, out),
        Value::Push { data, .. } => data.into_iter().for_each(|v| flatten(v, out)),
        Value::ServerError(e) => out.push(RedisResult::Status(format!("{e:?}"))),
    }
}

impl HostConnection for HostState {
    async fn drop(&mut self, connection: Resource<Connection>) -> Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl crate::bindings::spin::redis::redis::Host for HostState {}
