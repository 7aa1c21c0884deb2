//! The page served at `/client/`.

use axum::response::Html;

/// `GET /client/`: a page that says what this server is and how to connect.
pub(super) async fn index() -> Html<&'static str> {
    Html(include_str!("client_page.html"))
}
