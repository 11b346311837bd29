//! The example replica as an async web service: `consume` workers inside the process keep its
//! tables in step with the master, and its HTTP API serves reads of them; stopped gracefully on
//! SIGTERM (the workers finish and ack their batch in flight).
//!
//! ```text
//! DATABASE_URL=postgres://… CQRS_BROKER_URL=amqp://… CQRS_QUEUE=shop example-replica-service \
//!     --listen 127.0.0.1:8081
//! curl localhost:8081/items
//! ```

use std::process::ExitCode;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use diesel::prelude::*;
use example_replica::ReplicaItem;
use example_replica::schema::replica_items;
use example_services::{ApiError, ItemView, Pool, with_conn};

/// How many workers consume, each with its own broker channel and database connection.
const WORKERS: usize = 2;

async fn one(State(pool): State<Pool>, Path(id): Path<i64>) -> Result<Json<ItemView>, ApiError> {
    let item = with_conn(&pool, move |conn| {
        Ok(replica_items::table
            .find(id)
            .select(ReplicaItem::as_select())
            .first(conn)?)
    })
    .await?;
    Ok(Json(item.into()))
}

async fn all(State(pool): State<Pool>) -> Result<Json<Vec<ItemView>>, ApiError> {
    let items = with_conn(&pool, |conn| Ok(example_replica::all_items(conn)?)).await?;
    Ok(Json(items.into_iter().map(ItemView::from).collect()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let svc = match example_services::start() {
        Ok(svc) => svc,
        Err(code) => return code,
    };
    let workers = cqrs::background::consume(
        example_replica::registry(),
        svc.settings,
        WORKERS,
        &svc.shutdown,
    );
    let app = Router::new()
        .route("/items", get(all))
        .route("/items/{id}", get(one))
        .with_state(svc.pool)
        .merge(example_services::operations(workers.readiness().clone()));
    example_services::serve_beside(svc.listen, app, workers, &svc.shutdown).await
}
