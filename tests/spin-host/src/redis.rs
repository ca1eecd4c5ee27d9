//! `spin:redis/redis@3.0.0` on the `redis` crate.
//!
//! One multiplexed, self-reconnecting connection per address serves every
//! instance: a guest's `connection` is a cheap handle to it, so opening one
//! per request costs no round trip, and a Redis restart heals without
//! restarting the host.

use crate::bindings::spin::redis::redis::{
    Error, HostConnection, HostConnectionWithStore, Payload, RedisParameter, RedisResult,
};
use crate::outbound::{default_port, suggestion};
use crate::state::{HostState, Spin, Usage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use wasmtime::Result;
use wasmtime::component::{Accessor, Resource};

/// Shared connections, one per address.
#[derive(Default)]
pub struct Clients {
    by_address: Mutex<HashMap<String, ConnectionManager>>,
}

/// The host side of a guest's `connection` resource.
pub struct Connection(ConnectionManager, Arc<Usage>);

/// How long a command may wait for Redis before the guest gets an error.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Clients {
    async fn open(
        &self,
        allowed: &crate::outbound::AllowList,
        address: &str,
    ) -> Result<ConnectionManager, Error> {
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
        // Held across the connect so concurrent first requests share one connection.
        let mut clients = self.by_address.lock().await;
        if let Some(connection) = clients.get(address) {
            return Ok(connection.clone());
        }
        let client = redis::Client::open(address).map_err(|_| Error::InvalidAddress)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            // No backoff inside the manager: a command during an outage fails
            // at once (the guest answers 503) instead of waiting out a sleep.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(other)?;
        clients.insert(address.to_owned(), connection.clone());
        Ok(connection)
    }
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
    let mut manager = accessor.with(|mut access| -> Result<ConnectionManager> {
        let Connection(manager, usage) = access.get().table.get(connection)?;
        Usage::count(&usage.redis_commands);
        Ok(manager.clone())
    })?;
    let result = match command.query_async(&mut manager).await {
        // Refused: the command was never sent, and the manager has just begun
        // a fresh connection, so one more try reaches a server that is back.
        Err(e) if e.is_connection_refusal() => command.query_async(&mut manager).await,
        result => result,
    };
    Ok(result.map_err(other))
}

impl HostConnectionWithStore<HostState> for Spin {
    async fn open(
        accessor: Guest<'_>,
        address: String,
    ) -> Result<Result<Resource<Connection>, Error>> {
        let (component, services, usage) = accessor.with(|mut access| access.get().outbound());
        match services
            .redis
            .open(&component.allowed_hosts, &address)
            .await
        {
            Ok(manager) => {
                Ok(Ok(accessor.with(|mut access| {
                    access.get().table.push(Connection(manager, usage))
                })?))
            }
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
