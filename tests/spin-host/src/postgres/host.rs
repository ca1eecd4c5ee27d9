//! The generated `spin:postgres` traits, implemented over [`super::Pools`].

use super::{Connection, ConnectionBuilder, Handle, RootCertificate, convert};
use crate::bindings::spin::postgres::postgres::{
    Column, Error, HostConnection, HostConnectionBuilder, HostConnectionBuilderWithStore,
    HostConnectionWithStore, ParameterValue, Row, RowSet,
};
use crate::state::{HostState, Spin};
use futures::StreamExt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{
    Accessor, Destination, FutureReader, Resource, StreamProducer, StreamReader, StreamResult,
    VecBuffer,
};
use wasmtime::{Result, StoreContextMut};

type Guest<'a> = &'a Accessor<HostState, Spin>;

/// Opens a pooled connection for the calling component and adds it to its table.
async fn open(
    accessor: Guest<'_>,
    address: String,
    root: Option<RootCertificate>,
) -> Result<Result<Resource<Connection>, Error>> {
    let (component, services, usage) = accessor.with(|mut access| access.get().outbound());
    match services
        .postgres
        .open(&component.allowed_hosts, &address, root.as_ref(), usage)
        .await
    {
        Ok(connection) => Ok(Ok(
            accessor.with(|mut access| access.get().table.push(connection))?
        )),
        Err(e) => Ok(Err(e)),
    }
}

fn handle(accessor: Guest<'_>, connection: &Resource<Connection>) -> Result<Handle> {
    accessor.with(|mut access| Ok(access.get().table.get(connection)?.handle()))
}

/// Rows are read from Postgres by a task of their own and handed to the
/// guest as it asks for them; a bounded channel keeps a slow reader from
/// making the host buffer the whole result.
const ROWS_IN_FLIGHT: usize = 64;

impl HostConnectionWithStore<HostState> for Spin {
    async fn open_async(
        accessor: Guest<'_>,
        address: String,
    ) -> Result<Result<Resource<Connection>, Error>> {
        open(accessor, address, None).await
    }

    async fn query_async(
        accessor: Guest<'_>,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<
        Result<
            (
                Vec<Column>,
                StreamReader<Row>,
                FutureReader<Result<(), Error>>,
            ),
            Error,
        >,
    > {
        let handle = handle(accessor, &connection)?;
        let (columns, rows) = match handle.query(&statement, params).await {
            Ok(started) => started,
            Err(e) => return Ok(Err(e)),
        };
        let (row_tx, row_rx) = mpsc::channel(ROWS_IN_FLIGHT);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut rows = std::pin::pin!(rows);
            let outcome = async {
                while let Some(row) = rows.next().await {
                    let row = convert::row(&row.map_err(convert::error)?)?;
                    if row_tx.send(row).await.is_err() {
                        break; // the guest stopped reading
                    }
                }
                Ok(())
            }
            .await;
            drop(row_tx);
            let _ = done_tx.send(outcome);
        });
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, RowProducer(row_rx))?;
            let done = FutureReader::new(&mut access, async move {
                Ok::<_, wasmtime::Error>(
                    done_rx
                        .await
                        .unwrap_or(Err(Error::Other("query abandoned".into()))),
                )
            })?;
            Ok(Ok((columns, stream, done)))
        })
    }

    async fn execute_async(
        accessor: Guest<'_>,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<Result<u64, Error>> {
        let handle = handle(accessor, &connection)?;
        Ok(handle.execute(&statement, params).await)
    }
}

/// Delivers rows from the reading task to the guest's stream.
struct RowProducer(mpsc::Receiver<Row>);

impl<D> StreamProducer<D> for RowProducer {
    type Item = Row;
    type Buffer = VecBuffer<Row>;

    fn poll_produce<'a>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, Row, VecBuffer<Row>>,
        finish: bool,
    ) -> Poll<Result<StreamResult>> {
        let capacity = match destination.remaining(&mut store) {
            Some(0) => return Poll::Ready(Ok(StreamResult::Completed)),
            Some(n) => n,
            None => ROWS_IN_FLIGHT,
        };
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                let mut batch = vec![first];
                while batch.len() < capacity {
                    match self.0.try_recv() {
                        Ok(row) => batch.push(row),
                        Err(_) => break,
                    }
                }
                destination.set_buffer(batch.into());
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(None) => Poll::Ready(Ok(StreamResult::Dropped)),
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl HostConnectionBuilderWithStore<HostState> for Spin {
    async fn build_async(
        accessor: Guest<'_>,
        builder: Resource<ConnectionBuilder>,
    ) -> Result<Result<Resource<Connection>, Error>> {
        let (address, root) = accessor.with(|mut access| -> Result<_> {
            let builder = access.get().table.get(&builder)?;
            Ok((builder.address.clone(), builder.root.clone()))
        })?;
        open(accessor, address, root).await
    }
}

/// Blocking (synchronous) variants: the guest waits while the host works.
impl HostConnection for HostState {
    async fn open(&mut self, address: String) -> Result<Result<Resource<Connection>, Error>> {
        self.open_postgres(address, None).await
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<Result<RowSet, Error>> {
        let handle = self.table.get(&connection)?.handle();
        Ok(handle.query_all(&statement, params).await)
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<Result<u64, Error>> {
        let handle = self.table.get(&connection)?.handle();
        Ok(handle.execute(&statement, params).await)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl HostState {
    async fn open_postgres(
        &mut self,
        address: String,
        root: Option<RootCertificate>,
    ) -> Result<Result<Resource<Connection>, Error>> {
        match self
            .services
            .postgres
            .open(
                &self.component.allowed_hosts,
                &address,
                root.as_ref(),
                self.usage.clone(),
            )
            .await
        {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

impl HostConnectionBuilder for HostState {
    async fn new(&mut self, address: String) -> Result<Resource<ConnectionBuilder>> {
        Ok(self.table.push(ConnectionBuilder {
            address,
            root: None,
        })?)
    }

    /// As in Spin, a certificate that does not parse is refused here, not at `build`.
    async fn set_ca_root(
        &mut self,
        builder: Resource<ConnectionBuilder>,
        certificate: String,
    ) -> Result<Result<(), Error>> {
        let root = match RootCertificate::from_pem(&certificate) {
            Ok(root) => root,
            Err(e) => return Ok(Err(e)),
        };
        self.table.get_mut(&builder)?.root = Some(root);
        Ok(Ok(()))
    }

    async fn build(
        &mut self,
        builder: Resource<ConnectionBuilder>,
    ) -> Result<Result<Resource<Connection>, Error>> {
        let builder = self.table.get(&builder)?;
        let (address, root) = (builder.address.clone(), builder.root.clone());
        self.open_postgres(address, root).await
    }

    async fn drop(&mut self, builder: Resource<ConnectionBuilder>) -> Result<()> {
        self.table.delete(builder)?;
        Ok(())
    }
}

impl crate::bindings::spin::postgres::postgres::Host for HostState {}
