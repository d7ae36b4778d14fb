//! The web board: an adapter like the HTTP API, server-rendered HTML (maud) with a little plain
//! JavaScript, every asset compiled into the binary.
//!
//! - `GET /board`: the Kanban (New | On You | In Progress | On Hold | Closed) with filters and
//!   search; `GET /board/c/{id}`: one conversation (timeline, why each message joined, the model's
//!   labels, the status history, actions); `GET /board/accounts`: accounts and their owners.
//! - `GET /board/events`: server-sent events from the pipeline's event bus, so open pages follow
//!   changes without a reload.
//! - `POST /board/api/...`: the board's actions, each through the same pipeline ticket operation as
//!   the `/v1` API, with the signed-in person as actor (`human:<user>`), so corrections become
//!   training labels.
//!
//! Reads go through the store's read methods; writes only through the pipeline (an account's
//! owner goes where `PATCH /v1/accounts/{id}` goes). Sign-in and CSRF checks: [`session`].

mod actions;
mod assets;
mod conversation;
pub mod demo;
mod live;
mod pages;
pub mod session;
mod view;

use crate::http::AppState;
use axum::routing::{get, post};
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/board", get(pages::board))
        .route("/board/sign-in", post(pages::sign_in))
        .route("/board/sign-out", post(pages::sign_out))
        .route("/board/c/{id}", get(conversation::page))
        .route("/board/accounts", get(pages::accounts))
        .route("/board/events", get(live::events))
        .route("/board/assets/{name}", get(assets::serve))
        .route("/board/api/conversations/{id}", post(actions::update))
        .route("/board/api/conversations/{id}/merge", post(actions::merge))
        .route("/board/api/conversations/{id}/notes", post(actions::add_note))
        .route("/board/api/messages/{id}/move", post(actions::move_message))
        .route("/board/api/accounts/{id}", post(actions::update_account))
}
