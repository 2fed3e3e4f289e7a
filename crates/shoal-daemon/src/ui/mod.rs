//! The coordinator's web page, `GET /ui`: fleet counts by state and by region and fault domain,
//! the current rollout's stages and its waves over time, and each release's distribution. One
//! static page whose script reads the API every second (region and fault-domain counts, a fleet
//! query, every ten). The page itself is open; the API it reads needs an operator's signature, so
//! it is opened through `shoal proxy`, which signs its requests.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

/// The page (`GET`).
pub const UI_PATH: &str = "/ui";

/// The page's text.
const PAGE: &str = include_str!("index.html");

/// The route.
pub fn routes() -> Router {
    Router::new().route(UI_PATH, get(|| async { Html(PAGE) }))
}
