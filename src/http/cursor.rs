//! Page cursors as clients see them: the store's keyset position, `~`, then 16 hex digits of
//! SHA-256 over the list and its query (filters, search words, parent id). A cursor is only good
//! for the query that produced it: on another list or with other filters it is refused with 400
//! instead of silently skipping or repeating rows.

use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::store::Page;

fn tag(query: &str) -> String {
    hex::encode(&Sha256::digest(query.as_bytes())[..8])
}

/// The cursor handed out for `position` in the list `query` describes.
pub fn seal(position: &str, query: &str) -> String {
    format!("{position}~{}", tag(query))
}

/// The store's position inside a cursor, when the cursor was made for `query`.
pub fn open(cursor: &str, query: &str) -> Result<String, ApiError> {
    match cursor.rsplit_once('~') {
        Some((position, t)) if t == tag(query) => Ok(position.to_owned()),
        _ => Err(ApiError::bad_parameter(
            "cursor",
            "this cursor belongs to another list or other filters; start again without it",
        )),
    }
}

/// `page` with its next cursor sealed for `query`.
pub fn seal_page<T>(mut page: Page<T>, query: &str) -> Page<T> {
    page.next_cursor = page.next_cursor.map(|p| seal(&p, query));
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_query() {
        let c = seal("1700000000.000100", "messages\nabc");
        assert_eq!(open(&c, "messages\nabc").unwrap(), "1700000000.000100");
        let e = open(&c, "messages\nabd").unwrap_err();
        assert_eq!((e.status_and_code().0.as_u16(), e.field()), (400, Some("cursor")));
        assert!(open("1700000000.000100", "messages\nabc").is_err());
        assert!(open("", "x").is_err());
    }
}
