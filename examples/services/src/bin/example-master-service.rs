//! The example master as an async web service: items created, changed and deleted over HTTP
//! through `cqrs::atomic` on a pooled Diesel connection, published by a relay running in the
//! same process (woken at each commit), stopped gracefully on SIGTERM.
//!
//! ```text
//! DATABASE_URL=postgres://… CQRS_BROKER_URL=amqp://… example-master-service --listen 127.0.0.1:8080
//! curl -X POST localhost:8080/items -H 'content-type: application/json' -d '{"name":"a","value":1}'
//! ```

use std::process::ExitCode;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use diesel::prelude::*;
use example_master::schema::items;
use example_master::{Item, NewItem};
use example_services::{ApiError, ItemView, Pool, with_conn};
use serde::Deserialize;

#[derive(Deserialize)]
struct Create {
    name: String,
    value: i64,
}

/// The fields a PATCH changes (the others stay as they are).
#[derive(Deserialize, AsChangeset)]
#[diesel(table_name = items)]
struct Change {
    name: Option<String>,
    value: Option<i64>,
}

async fn create(
    State(pool): State<Pool>,
    Json(new): Json<Create>,
) -> Result<(StatusCode, Json<ItemView>), ApiError> {
    let item = with_conn(&pool, move |conn| {
        Ok(cqrs::atomic(conn, |tx| {
            tx.insert_into(items::table)
                .values(&NewItem {
                    name: &new.name,
                    value: new.value,
                })
                .get_result::<Item>()
        })?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(item.into())))
}

async fn change(
    State(pool): State<Pool>,
    Path(id): Path<i64>,
    Json(change): Json<Change>,
) -> Result<Json<ItemView>, ApiError> {
    if change.name.is_none() && change.value.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to change: give name or value".into(),
        ));
    }
    let changed = with_conn(&pool, move |conn| {
        Ok(cqrs::atomic(conn, |tx| {
            tx.update(items::table.find(id))
                .set(&change)
                .get_results::<Item>()
        })?)
    })
    .await?;
    changed
        .into_iter()
        .next()
        .map(|i| Json(i.into()))
        .ok_or(ApiError::NotFound)
}

async fn delete(State(pool): State<Pool>, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    let deleted = with_conn(&pool, move |conn| {
        Ok(cqrs::atomic(conn, |tx| {
            tx.delete(items::table.find(id)).execute()
        })?)
    })
    .await?;
    match deleted {
        0 => Err(ApiError::NotFound),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

async fn one(State(pool): State<Pool>, Path(id): Path<i64>) -> Result<Json<ItemView>, ApiError> {
    let item = with_conn(&pool, move |conn| {
        Ok(items::table
            .find(id)
            .select(Item::as_select())
            .first(conn)?)
    })
    .await?;
    Ok(Json(item.into()))
}

async fn all(State(pool): State<Pool>) -> Result<Json<Vec<ItemView>>, ApiError> {
    let items = with_conn(&pool, |conn| Ok(example_master::all_items(conn)?)).await?;
    Ok(Json(items.into_iter().map(ItemView::from).collect()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let svc = match example_services::start() {
        Ok(svc) => svc,
        Err(code) => return code,
    };
    // A shutdown of its own, not the signal's: the relay must outlive the server's last requests
    // (`serve_beside` stops it once the server has finished them), so it publishes what they commit.
    let relay = cqrs::background::relay(svc.settings, &cqrs::Shutdown::new());
    let app = Router::new()
        .route("/items", get(all).post(create))
        .route("/items/{id}", get(one).patch(change).delete(delete))
        .with_state(svc.pool)
        .merge(example_services::operations(relay.readiness().clone()));
    example_services::serve_beside(svc.listen, app, relay, &svc.shutdown).await
}
